"""The node's side of ``registration.auto``: feeds the core :class:`AutoRegistrar`, applies and saves its updates.

Kept out of :mod:`fusion_ros.ros.node` so the node only holds a few hook calls. The registrar's
thread hands each estimate to its low-priority child process (off the cores and the interpreter that
live fusion uses) and waits; this class polls it from a timer on the executor thread, where setting the
``registration.homography`` parameter is safe. Setting the parameter is what applies the matrix
(the node's parameter callback reconfigures the running fuser between two frames) and what lets
the user save it: ``ros2 param dump``, ``registration.save_path`` (written on every accepted
estimate), or the ``~/save_registration`` service (``std_srvs/srv/Trigger``: writes the matrix the
node fuses with now to ``registration.save_path``, when the user decides it is good).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from fusion_ros.errors import FusionError
from fusion_ros.registration.auto import AutoRegistrar, AutoSettings
from fusion_ros.registration.params_file import write_params_yaml

__all__ = ["AutoRegistrationHook"]

#: Seconds between two polls of the estimator for an accepted matrix.
_POLL_S = 0.5


class AutoRegistrationHook:
    """Creates the estimator from the node's parameters and wires it to the node."""

    def __init__(self, node: Any, values: dict[str, Any]) -> None:
        self._node = node
        settings = AutoSettings(
            frames=int(values["registration.auto_frames"]),
            interval_s=float(values["registration.auto_interval"]),
            max_interval_s=max(float(values["registration.auto_max_interval"]), float(values["registration.auto_interval"])),
            min_confidence=float(values["registration.auto_min_confidence"]),
            check_ratio=float(values["registration.auto_check_ratio"]),
        )
        homography = values["registration.homography"]
        initial = None if list(map(float, homography)) == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0] else homography
        logger = node.get_logger()
        self._save_path = str(values["registration.save_path"])
        self.registrar = AutoRegistrar(initial, settings, log=lambda line: logger.info(line))
        self._timer = node.create_timer(_POLL_S, self._poll)
        self._service = node.create_service(Trigger, "~/save_registration", self._on_save_request)
        self.registrar.start()
        checks = f", checking the matrix in use every {settings.interval_s:g} s between" if settings.check_ratio else ""
        logger.info(f"registration.auto: estimating from {settings.frames} pairs every {settings.interval_s:g} s "
                    f"(up to {settings.max_interval_s:g} s once settled{checks}), in a low-priority process")

    @classmethod
    def create(cls, node: Any, values: dict[str, Any]) -> AutoRegistrationHook | None:
        """The hook when ``registration.auto`` is true, else ``None``."""
        return cls(node, values) if values["registration.auto"] else None

    def offer(self, thermal: np.ndarray, rgb: np.ndarray) -> None:
        """Worker thread, per fused pair: O(1), never waits on the estimator."""
        self.registrar.offer(thermal, rgb)

    def user_set(self, homography: Any) -> None:
        """The parameter changed (by the user or by :meth:`_poll`): future estimates compare against it."""
        self.registrar.set_current(homography)

    def diagnostics(self) -> list[tuple[str, str]]:
        return self.registrar.diagnostics()

    def _poll(self) -> None:
        update = self.registrar.take_update()
        if update is None:
            return
        self._node.set_parameters([Parameter("registration.homography", value=list(update))])
        if self._save_path:
            self._save(update, "Estimated live by fusion_node (registration.auto)")

    def _on_save_request(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """``~/save_registration``: the matrix in use now, written to ``registration.save_path``."""
        if not self._save_path:
            response.success = False
            response.message = ("registration.save_path is empty: set it to a file path when starting the node "
                                "(or save with `ros2 param dump`)")
            return response
        current = list(self._node.get_parameter("registration.homography").value)
        response.success, response.message = self._save(current, "Saved by fusion_node's ~/save_registration service")
        return response

    def _save(self, homography: list[float], origin: str) -> tuple[bool, str]:
        """Write ``homography`` to ``registration.save_path`` with the last estimate's summary; log and return the outcome."""
        last = self.registrar.last
        comment = f"{origin}: {last.summary()}" if last else origin
        try:
            path = write_params_yaml(self._save_path, homography, comment)
        except FusionError as err:
            message = f"registration.save_path: {err}"
            self._node.get_logger().error(message)
            return False, message
        message = f"registration: saved the homography to {path}"
        self._node.get_logger().info(message)
        return True, message

    def destroy(self) -> None:
        self._timer.cancel()
        self._node.destroy_service(self._service)
        self.registrar.stop()
