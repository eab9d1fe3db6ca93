"""``fusion_node``: synchronized thermal + RGB in, a visible-style fused image out.

Topics (relative, remap them): subscribes ``thermal/image_raw`` and ``rgb/image_raw`` (or
``rgb/image_raw/compressed`` with ``rgb.transport: compressed``) and ``rgb/camera_info``;
publishes ``fused/image_raw`` with the RGB message's header, size and encoding — so an RGB
detector subscribes to it unchanged — and ``fused/camera_info`` (the RGB camera_info, restamped)
when the RGB camera publishes one; plus ``/diagnostics``.

Threads: the executor runs the subscription callbacks, which only decode (zero-copy), pair
(:class:`~fusion_ros.sync.ApproximateTimeSynchronizer`) and offer the newest pair to the
:class:`~fusion_ros.ros.worker.FusionWorker`; the worker fuses, encodes and publishes; a loader
thread builds a newly requested method. Parameter callbacks only validate, so ``ros2 param set``
(which waits without a timeout) returns at once.
"""

from __future__ import annotations

import array
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from fusion_ros.config import FusionConfig, ParamSpec, build_config, parameter_table
from fusion_ros.device import precision_name
from fusion_ros.errors import ConfigError, FusionError, InputError
from fusion_ros.fuser import Fuser
from fusion_ros.image_msgs import VisibleImage, compressed_from_msg, encode_visible, thermal_from_msg, visible_from_msg
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.runtime import trim_heap
from fusion_ros.ros.auto_registration import AutoRegistrationHook, RegistrationSaver
from fusion_ros.ros.diagnostics import DiagnosticsPublisher, Limits, MethodState, NodeStats, summarize
from fusion_ros.ros.params import as_declared, descriptor
from fusion_ros.ros.qos import qos_profile
from fusion_ros.ros.worker import FusionWorker
from fusion_ros.sync import RGB, THERMAL, ApproximateTimeSynchronizer, header_stamp_ns

__all__ = ["FusionNode", "Job", "main"]

#: A frame this many times larger than the running size makes the worker give freed heap back to the OS.
_TRIM_FACTOR = 4.0


@dataclass(frozen=True)
class Job:
    """One synchronized pair on its way to the worker."""

    thermal: np.ndarray
    visible: VisibleImage | CompressedImage  # compressed RGB is decoded by the worker, only if used
    header: Any  # the RGB message's std_msgs/Header, copied to the output
    thermal_stamp_ns: int
    rgb_stamp_ns: int
    paired_at: float  # time.monotonic() when the pair completed
    sequence: int  # bumped by every time jump: a new sequence starts a new thermal window


class FusionNode(Node):
    """The fusion node. ``kwargs`` go to :class:`rclpy.node.Node` (``context``, ``parameter_overrides``, …)."""

    def __init__(self, node_name: str = "fusion_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._specs = {spec.name: spec for spec in parameter_table()}
        for spec in self._specs.values():
            self._declare(spec)
        self._warn_unknown_parameters()
        values = self._values()
        if str(values["device"]).startswith("cuda") and not torch.cuda.is_available():
            self.get_logger().warning(f"CUDA not available, running on CPU (device {values['device']!r} requested; "
                                      "parameter device set to cpu)")
            self.set_parameters([Parameter("device", value="cpu")])
            values["device"] = "cpu"
        if values["torch_threads"] > 0:
            torch.set_num_threads(values["torch_threads"])
        self.stats = NodeStats()
        self._limits = Limits(values["diagnostics.silent_warn"], values["diagnostics.silent_error"])
        self._max_pixels = values["input.max_pixels"]
        self._running_pixels = 0.0  # running size of the fused frames, for giving memory back after a huge one
        self._trim_pending = False  # a huge input was rejected: its freed message memory goes back after the next frame
        self._sequence = 0  # incremented on each time jump (executor thread), stamped on the jobs
        self._fused_sequence = 0  # the sequence of the last fused job (worker thread)
        self.sync: ApproximateTimeSynchronizer[tuple[Any, Any]] = ApproximateTimeSynchronizer(
            queue_size=values["sync.queue_size"], slop_s=values["sync.slop"], jump_threshold_s=values["sync.jump_threshold"],
            on_jump=self._on_stamp_jump,
        )
        fuser, config, startup_error = self._build_first(values)
        self._target = config  # what the parameters ask for (being loaded, or running)
        self._running = config  # what the model in use was built from
        self._validated: FusionConfig | None = None  # built by the on-set callback, applied by the post-set one
        self._state = MethodState(config.method, "error" if startup_error else "ready", str(fuser.device),
                                  precision_name(fuser.dtype), error=startup_error)
        self._camera_info: CameraInfo | None = None
        self._swap_results: deque[tuple[FusionConfig, str, str, BaseException | None]] = deque()
        self._swap_gc = self.create_guard_condition(self._finish_swaps)
        self.worker: FusionWorker[Fuser, Job] = FusionWorker(
            fuser,
            self._process,
            on_error=self._on_worker_error,
            on_superseded=self.sync.count_superseded,
            on_swap=self._on_swap,
            name=node_name,
        )
        del fuser
        self._saver = RegistrationSaver.create(self, values)  # ~/save_registration, with auto or save_path, else None
        self._auto = AutoRegistrationHook.create(self, values, self._saver)  # registration.auto: background estimator

        in_qos = qos_profile(values["qos.reliability"] == "reliable", values["qos.depth"])
        out_qos = qos_profile(values["output.reliability"] == "reliable", values["output.depth"])
        out_events = PublisherEventCallbacks(incompatible_qos=lambda e: self._incompatible_qos("output", e))
        self._fused_pub = self.create_publisher(Image, "fused/image_raw", out_qos, event_callbacks=out_events)
        self._info_pub = self.create_publisher(CameraInfo, "fused/camera_info", out_qos)
        thermal_sub = self.create_subscription(Image, "thermal/image_raw", self._on_thermal, in_qos,
                                               event_callbacks=self._input_events(THERMAL))
        if values["rgb.transport"] == "compressed":
            rgb_sub = self.create_subscription(CompressedImage, "rgb/image_raw/compressed", self._on_rgb_compressed, in_qos,
                                               event_callbacks=self._input_events(RGB))
        else:
            rgb_sub = self.create_subscription(Image, "rgb/image_raw", self._on_rgb, in_qos, event_callbacks=self._input_events(RGB))
        self.stats.topics = {THERMAL: thermal_sub.topic_name, RGB: rgb_sub.topic_name}  # resolved: what /diagnostics names
        self.create_subscription(CameraInfo, "rgb/camera_info", self._on_camera_info, in_qos)

        self.add_pre_set_parameters_callback(self._as_declared)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_clock_jump,
        )
        self._diagnostics = DiagnosticsPublisher(
            self, self._diagnostic_status, values["diagnostics.period"], hardware_id=lambda: self._state.device
        )
        self.worker.start()
        self.get_logger().info(
            f"fusing with {self._state.method!r} on {self._state.device} {self._state.precision}; "
            f"sync slop {self.sync.slop_s:g} s, queue {self.sync.queue_size}"
        )

    # -- parameters ----------------------------------------------------------------------------

    def _declare(self, spec: ParamSpec) -> None:
        """Declare ``spec`` with the value given at start (``--params-file``, ``-p``), if any.

        A whole number given for a double parameter (``auto_interval: 10`` in a YAML file, ``-p slop:=1``) is
        taken as that double: rcl types it as an integer, which rclpy refuses for a double parameter with a
        traceback. A value of another type, or out of range, is a :class:`ConfigError` naming the parameter
        (``main`` logs it on one line and exits 1).
        """
        given = self._parameter_overrides.get(spec.name)  # rclpy's record of the values given at start
        declared = given if given is None else as_declared(spec, given)
        try:
            if declared is not given:  # whole numbers made doubles: declared with them, past rclpy's type check
                self.declare_parameter(spec.name, declared.value, descriptor(spec), ignore_override=True)
            else:  # rclpy takes the given value, checking its type and range
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            raise ConfigError(f"parameter {spec.name}: {err}") from None

    def _warn_unknown_parameters(self) -> None:
        """A name given at start that the node does not have (``sync.slope``, ``pyramid.level``) would be ignored
        without a word by rclpy: say which, once."""
        unknown = sorted(n for n in self._parameter_overrides if not self.has_parameter(n) and not n.startswith("qos_overrides."))
        if unknown:
            self.get_logger().warning(f"ignoring parameters fusion_node does not have: {', '.join(unknown)} "
                                      "(`fusion-ros params` lists them all)")

    def _as_declared(self, parameters: list[Parameter]) -> list[Parameter]:
        """Pre-set callback: ``ros2 param set /fusion_node sync.slop 1`` is taken as 1.0 (:func:`as_declared`)."""
        return [as_declared(self._specs[p.name], p) if p.name in self._specs else p for p in parameters]

    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self._specs}

    def _build_first(self, values: dict[str, Any]) -> tuple[Fuser, FusionConfig, str]:
        """Build the configured method; if it cannot run (weights missing, a failed load), the default method
        (same settings, then all defaults), and report why: a robot keeps fusing. A wrong value (an unknown method,
        a bad homography) raises :class:`ConfigError` instead (``main``: "cannot start"), as does a failure of the
        defaults."""
        try:
            build_config(values, check_available=False)  # a wrong value is the user's to fix, not a reason to fall back
        except ConfigError as err:
            raise ConfigError(f"invalid parameters: {err}") from None
        defaults = {name: spec.default for name, spec in self._specs.items()}
        fallback = dict(values, method=DEFAULT_METHOD, **{k: v for k, v in defaults.items() if k.startswith(f"{DEFAULT_METHOD}.")})
        attempts = [values, fallback, defaults]
        first_error: Exception | None = None
        for attempt in attempts:
            try:
                config = build_config(attempt)
                fuser = Fuser.from_config(config)
            except Exception as err:  # noqa: BLE001 - any failure of the configured method falls back
                first_error = first_error or err
                continue
            if first_error is None:
                return fuser, config, ""
            message = f"configured method {values['method']!r} cannot run: {first_error}; running {config.method!r} instead"
            self.get_logger().error(message)
            changed = [Parameter(k, value=v) for k, v in attempt.items() if v != values[k] and not self._specs[k].read_only]
            self.set_parameters(changed)
            return fuser, config, message
        assert first_error is not None
        raise first_error

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validation only, nothing applied (a later callback may still reject): returns at once.

        The config is built here once — method class resolved, options typed, availability checked
        only when the model changes — and kept for :meth:`_apply_parameters`, which applies this same
        object.
        """
        values = self._values()
        values.update({p.name: p.value for p in params if p.name in self._specs})  # not rclpy's own (use_sim_time)
        self._validated = None
        try:
            config = build_config(values, check_available=False)
            if config.build_key != self._target.build_key:
                config.check_available()
        except Exception as err:  # noqa: BLE001 - never let a bad value crash the parameter service
            reason = str(err) if isinstance(err, FusionError) else f"{type(err).__name__}: {err}"
            # the caller sees the reason; the node's log keeps it for whoever reads it later
            self.get_logger().warning(f"refused {', '.join(p.name for p in params)}: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        self._validated = config
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """After a successful set: apply sync settings now, reload or reconfigure the model."""
        names = {p.name for p in params}
        values = self._values()
        if "sync.queue_size" in names:
            self.sync.queue_size = values["sync.queue_size"]
        if "sync.slop" in names:
            self.sync.slop_s = values["sync.slop"]
        if "sync.jump_threshold" in names:
            self.sync.jump_threshold_s = values["sync.jump_threshold"]
        self._max_pixels = values["input.max_pixels"]
        config, self._validated = self._validated, None
        assert config is not None, "post-set callback without a validated config"
        previous, self._target = self._target, config
        if config.build_key != previous.build_key:
            self._state = replace(self._state, loading=config.method)
            self.get_logger().info(f"loading {config.method!r} on {config.device} in the background "
                                   f"({self._running.method!r} fuses meanwhile; a newer request replaces this one)")
            self.worker.request_swap(lambda: Fuser.from_config(config), config)
        elif (config.thermal, config.registration) != (previous.thermal, previous.registration):
            self._reconfigure_running(config)
        if self._auto is not None and "registration.homography" in names:
            self._auto.user_set(config.registration.homography)

    def _reconfigure_running(self, config: FusionConfig) -> None:
        """Apply thermal/registration settings to the model in use, between two frames."""
        self.worker.call(lambda fuser: fuser.reconfigure(config.thermal, config.registration))
        self._running = replace(self._running, thermal=config.thermal, registration=config.registration)

    def _on_swap(self, config: FusionConfig, fuser: Fuser | None, err: BaseException | None) -> None:
        """Worker/loader thread: queue the outcome for the executor thread (parameters are not thread-safe)."""
        device = str(fuser.device) if fuser is not None else ""
        precision = precision_name(fuser.dtype) if fuser is not None else ""
        self._swap_results.append((config, device, precision, err))
        self._swap_gc.trigger()

    def _finish_swaps(self) -> None:
        while self._swap_results:
            config, device, precision, err = self._swap_results.popleft()
            newer = self._target.build_key != config.build_key  # another switch was requested meanwhile
            if err is None:
                self._running = config
                self._state = MethodState(config.method, "ready", device, precision, loading=self._target.method if newer else "")
                self.get_logger().info(f"switched to {config.method!r} on {device} {precision}")
                if (self._target.thermal, self._target.registration) != (config.thermal, config.registration):
                    self._reconfigure_running(self._target)
                continue
            running = self._running
            self.get_logger().error(f"loading {config.method!r} failed: {err}; keeping {running.method!r}")
            self.stats.fusion_error(f"loading {config.method!r} failed: {err}")
            if newer:
                continue  # the parameters already ask for something else, which is loading
            self._state = replace(self._state, loading="")
            self._target = replace(running, thermal=self._target.thermal, registration=self._target.registration)
            model = ("method", "device", "precision", "weights_dir")
            revert = {k: v for k, v in running.parameters().items() if k in model or k.startswith(f"{running.method}.")}
            self.set_parameters([Parameter(k, value=v) for k, v in revert.items()])

    # -- inputs --------------------------------------------------------------------------------

    def _bad_input(self, where: str, err: BaseException) -> None:
        self.stats.bad_input(where, str(err))
        self.get_logger().warning(f"dropped {where} input: {err}", throttle_duration_sec=5.0)

    def _add(self, stream: str, header: Any, payload: Any) -> None:
        for pair in self.sync.add(stream, header_stamp_ns(header), (header, payload)):  # type: ignore[arg-type]
            self.stats.pairs.tick()
            rgb_header, visible = pair.rgb
            job = Job(pair.thermal[1], visible, rgb_header, pair.thermal_stamp_ns, pair.rgb_stamp_ns, time.monotonic(),
                      self._sequence)
            self.worker.offer(job)

    def _on_thermal(self, msg: Image) -> None:
        self._on_image(THERMAL, msg, thermal_from_msg)

    def _on_rgb(self, msg: Image) -> None:
        self._on_image(RGB, msg, visible_from_msg)

    def _input_events(self, stream: str) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(
            incompatible_qos=lambda e: self._incompatible_qos(stream, e),
            message_lost=lambda e: self.stats.messages_lost(stream, e.total_count_change),
        )

    def _incompatible_qos(self, where: str, event: Any) -> None:
        policy = getattr(event.last_policy_kind, "name", str(event.last_policy_kind)).lower()
        self.stats.incompatible_qos(where, policy, event.total_count)
        self.get_logger().warning(f"{where}: a peer with incompatible QoS ({policy}) cannot connect; see qos.reliability "
                                  "and output.reliability", throttle_duration_sec=10.0)

    def _on_stamp_jump(self, jump_ns: int) -> None:
        self._sequence += 1
        self.get_logger().warning(f"header stamps jumped {jump_ns / 1e9:+.3f} s (bag loop, clock reset, driver restart or "
                                  "pause): synchronizer restarted")

    def _on_image(self, stream: str, msg: Any, decode: Callable[[Any], Any]) -> None:
        """Decode one raw image of ``stream`` and hand it to the synchronizer; a bad one is counted and logged."""
        start = time.perf_counter()
        self.stats.inputs[stream].tick()
        pixels = int(getattr(msg, "width", 0)) * int(getattr(msg, "height", 0))
        if pixels > self._max_pixels:
            self._bad_input(stream, InputError(f"{msg.width}x{msg.height} = {pixels / 1e6:.1f} Mpx exceeds input.max_pixels "
                                               f"{self._max_pixels / 1e6:.1f} Mpx"))
            self._trim_pending = True
            return
        try:
            image = decode(msg)
        except InputError as err:
            self._bad_input(stream, err)
            return
        self._add(stream, msg.header, image)
        self.stats.callback_ms.add((time.perf_counter() - start) * 1e3)

    def _on_rgb_compressed(self, msg: CompressedImage) -> None:
        self._on_image(RGB, msg, lambda m: m)  # decoded on the worker thread (see _process)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_clock_jump(self, jump: Any) -> None:
        """ROS time went back or was (de)activated (``/clock`` of a looped bag): restart pairing."""
        self._sequence += 1
        self.sync.reset()
        self.get_logger().warning("ROS clock jumped: synchronizer restarted")

    # -- worker side ---------------------------------------------------------------------------

    def _process(self, fuser: Fuser, job: Job) -> None:
        """Worker thread: fuse one pair and publish it."""
        visible = job.visible
        if isinstance(visible, CompressedImage):
            try:
                visible = compressed_from_msg(visible)
                if visible.width * visible.height > self._max_pixels:  # raw images are checked in the callback
                    raise InputError(f"compressed {visible.width}x{visible.height} exceeds input.max_pixels "
                                     f"{self._max_pixels / 1e6:.1f} Mpx")
            except InputError as err:
                self._bad_input("rgb", err)
                self._trim_pending = True
                return
        if self._auto is not None:
            self._auto.offer(job.thermal, visible.rgb)  # O(1): the estimator has its own thread
        if job.sequence != self._fused_sequence:  # after a time jump (bag loop): the old scene's thermal window is stale
            fuser.thermal.reset()
            self._fused_sequence = job.sequence
        start = time.perf_counter()
        fused = fuser(job.thermal, visible.rgb)
        ms = (time.perf_counter() - start) * 1e3
        self.stats.inference_ms.add(ms)
        if ms >= 1000.0:  # slow methods (dmfuse, fusioninv): one line per frame, fast ones only in /diagnostics
            self.get_logger().info(f"fused a pair with {fuser.method_name} in {ms / 1e3:.1f} s")
        self._publish(job, visible, fused)
        self._trim_after_huge_frame(fused.shape[0] * fused.shape[1])

    def _trim_after_huge_frame(self, pixels: int) -> None:
        """After a frame much larger than the running size, or a rejected huge input, give the freed
        heap back to the OS (the tuned allocator keeps it otherwise, for the lifetime of the node)."""
        if self._trim_pending or (self._running_pixels and pixels > _TRIM_FACTOR * self._running_pixels):
            self._trim_pending = False
            trim_heap()
        self._running_pixels = pixels if not self._running_pixels else 0.9 * self._running_pixels + 0.1 * pixels

    def _publish(self, job: Job, visible: VisibleImage, fused: np.ndarray) -> None:
        """Encode ``fused`` like the RGB input and publish it (and the camera_info) with the RGB header."""
        start = time.perf_counter()
        encoded = encode_visible(fused, visible)
        msg = Image()
        msg.header = job.header
        msg.height = encoded.height
        msg.width = encoded.width
        msg.encoding = encoded.encoding
        msg.is_bigendian = 0
        msg.step = encoded.step
        data = array.array("B")
        data.frombytes(encoded.data)
        msg.data = data
        self._fused_pub.publish(msg)
        info = self._camera_info
        if info is not None:
            out = CameraInfo()
            for name in CameraInfo.get_fields_and_field_types():
                setattr(out, name, getattr(info, name))
            out.header = job.header
            self._info_pub.publish(out)
        self.stats.publish_ms.add((time.perf_counter() - start) * 1e3)
        self.stats.outputs.tick()
        self.stats.pipeline_ms.add((time.monotonic() - job.paired_at) * 1e3)
        self.stats.latency((self.get_clock().now().nanoseconds - job.rgb_stamp_ns) / 1e9)

    def _on_worker_error(self, job: Job | None, err: BaseException) -> None:
        if isinstance(err, InputError):
            self._bad_input("pair", err)
        elif isinstance(err, FusionError):
            self.stats.fusion_error(str(err))
            self.get_logger().error(f"fusion failed: {err}", throttle_duration_sec=5.0)
        else:
            self.stats.fusion_error(f"{type(err).__name__}: {err}")
            self.get_logger().error(f"unexpected {type(err).__name__} in fusion: {err}", throttle_duration_sec=5.0)

    # -- diagnostics and shutdown --------------------------------------------------------------

    @property
    def method_state(self) -> MethodState:
        """Method, state (ready/error), what is loading, device and precision now."""
        return self._state

    def _diagnostic_status(self) -> tuple[int, str, list[tuple[str, str]]]:
        level, message, values = summarize(self.method_state, self.stats, self.sync.counts(), self.sync.queued(), limits=self._limits)
        values += [("sync slop (s)", f"{self.sync.slop_s:g}"), ("sync queue_size", str(self.sync.queue_size)),
                   ("held: far stamps awaiting the next messages", str(self.sync.held()))]
        if self._auto is not None:
            values += self._auto.diagnostics()
        return level, message, values

    def destroy_node(self) -> None:
        """Stop the worker (after its current frame, however long it takes) and free the model,
        then destroy the node: the worker never publishes through a destroyed node or context.

        Also called by rclpy on a node whose construction failed (a bad parameter at start): only what
        was built is stopped."""
        if hasattr(self, "worker"):
            self.worker.stop(timeout=None)
        if getattr(self, "_auto", None) is not None:
            self._auto.destroy()
        if getattr(self, "_saver", None) is not None:
            self._saver.destroy()
        if hasattr(self, "_diagnostics"):
            self._diagnostics.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``fusion_node`` executable (``ros2 run fusion_ros fusion_node``).

    Shutdown order matters: SIGINT/SIGTERM only ask the spin loop to end; then the worker
    finishes its frame and stops, then the node goes, then the ROS context. rclpy's own signal
    handlers are not used: they shut the context down at once (the worker would publish into a
    dead context), and a second Ctrl-C raised KeyboardInterrupt into the shutdown itself, so the
    interpreter finalised while the worker was still inside torch; the worker thread was then
    killed by ``pthread_exit`` while unwinding C++ frames: ``terminate called without an active
    exception``, SIGABRT. Here later signals are logged and ignored until the worker has stopped.
    """
    import os
    import signal
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from fusion_ros.runtime import tune_malloc

    tune_malloc()
    stop = threading.Event()
    logger = rclpy.logging.get_logger("fusion_node")

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():  # os.write, not the logger: a handler may run while the main thread is inside it
            os.write(2, f"[fusion_node] {signal.Signals(signum).name} again: already stopping (waiting for the frame "
                        "being fused)\n".encode())
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO) as init:
            context = init.context
            try:
                node = FusionNode(context=context)
            except FusionError as err:
                logger.fatal(f"cannot start: {err}")
                return 1
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            try:
                while not stop.is_set() and context.ok():
                    executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                pass
            finally:
                node.destroy_node()  # waits for the worker's current frame, then removes the node
                executor.shutdown(timeout_sec=1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
