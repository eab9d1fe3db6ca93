"""The node's side of ``registration.auto`` and ``registration.save_path``.

Kept out of :mod:`fusion_ros.ros.node` so the node only holds a few hook calls. The registrar's
thread hands each estimate to its low-priority child process (off the cores and the interpreter that
live fusion uses) and waits; :class:`AutoRegistrationHook` polls it from a timer on the executor thread,
where setting the ``registration.homography`` parameter is safe. Setting the parameter is what applies the
matrix (the node's parameter callback reconfigures the running fuser between two frames) and what lets
the user save it: ``ros2 param dump``, ``registration.save_path`` (written on every accepted estimate), or
the ``~/save_registration`` service of :class:`RegistrationSaver` (``std_srvs/srv/Trigger``: writes the
matrix the node fuses with now to ``registration.save_path``, when the user decides it is good; also
without the auto mode, for a matrix set by hand with ``ros2 param set``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from fusion_ros.errors import FusionError
from fusion_ros.registration.auto import AutoRegistrar, AutoSettings
from fusion_ros.registration.params_file import write_params_yaml

__all__ = ["AutoRegistrationHook", "RegistrationSaver"]

#: Seconds between two polls of the estimator for an accepted matrix.
_POLL_S = 0.5


class RegistrationSaver:
    """``registration.save_path`` and the ``~/save_registration`` service: the matrix in use, as a parameters file."""

    def __init__(self, node: Any, save_path: str) -> None:
        self._node = node
        self._save_path = save_path
        #: One line on where the matrix came from (the auto mode's last estimate), written into the file.
        self.detail = ""
        self._service = node.create_service(Trigger, "~/save_registration", self._on_save_request)

    @classmethod
    def create(cls, node: Any, values: dict[str, Any]) -> RegistrationSaver | None:
        """A saver when ``registration.auto`` is on or ``registration.save_path`` is set, else ``None``."""
        save_path = str(values["registration.save_path"])
        return cls(node, save_path) if values["registration.auto"] or save_path else None

    def save(self, homography: list[float], origin: str) -> tuple[bool, str]:
        """Write ``homography`` to ``registration.save_path`` (if set) with :attr:`detail`; log and return the outcome."""
        if not self._save_path:
            return False, ("registration.save_path is empty: set it to a file path when starting the node "
                           "(or save with `ros2 param dump`)")
        comment = f"{origin}: {self.detail}" if self.detail else origin
        try:
            path = write_params_yaml(self._save_path, homography, comment)
        except FusionError as err:  # an unwritable path or a folder: reported, the node goes on
            message = f"registration.save_path: {err}"
            self._node.get_logger().error(message)
            return False, message
        message = f"registration: saved the homography to {path}"
        self._node.get_logger().info(message)
        return True, message

    def _on_save_request(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """``~/save_registration``: the matrix in use now, written to ``registration.save_path``."""
        current = list(self._node.get_parameter("registration.homography").value)
        response.success, response.message = self.save(current, "Saved by fusion_node's ~/save_registration service")
        return response

    def destroy(self) -> None:
        self._node.destroy_service(self._service)


class AutoRegistrationHook:
    """Creates the estimator from the node's parameters and wires it to the node."""

    def __init__(self, node: Any, values: dict[str, Any], saver: RegistrationSaver) -> None:
        self._node = node
        self._saver = saver
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
        self.registrar = AutoRegistrar(initial, settings, log=lambda line: logger.info(line))
        self._timer = node.create_timer(_POLL_S, self._poll)
        self.registrar.start()
        checks = f", checking the matrix in use every {settings.interval_s:g} s between" if settings.check_ratio else ""
        logger.info(f"registration.auto: estimating from {settings.frames} pairs every {settings.interval_s:g} s "
                    f"(up to {settings.max_interval_s:g} s once settled{checks}), in a low-priority process")

    @classmethod
    def create(cls, node: Any, values: dict[str, Any], saver: RegistrationSaver | None) -> AutoRegistrationHook | None:
        """The hook when ``registration.auto`` is true (then ``saver`` is one), else ``None``."""
        return cls(node, values, saver) if values["registration.auto"] and saver is not None else None

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
        last = self.registrar.last
        self._saver.detail = last.summary() if last is not None else ""
        self._saver.save(list(update), "Estimated live by fusion_node (registration.auto)")

    def destroy(self) -> None:
        self._timer.cancel()
        self.registrar.stop()
