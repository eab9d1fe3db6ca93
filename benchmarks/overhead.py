"""Measure what the node itself costs per thermal/RGB pair, and whether large frames cross processes.

The node's budget is ≤3 ms per 640×512 pair for its own work: decode + sync + hand-over in the
two subscription callbacks, then encode + publish after the model. :func:`measure_overhead`
drives exactly those methods of a real :class:`~fusion_ros.ros.node.FusionNode` (its worker
stopped and replaced by an inbox that keeps the offered pair, a fixed "fused" frame instead of a
model, published through the node's own publish step) with a subscriber of the fused topic in a
second DDS participant, and times each pair by wall clock and by the thread's CPU time — CPU
time is what the node costs, wall time also counts preemption by whatever else runs. rclpy's
deserialisation of the two incoming messages happens before a callback runs; it is timed too
and reported separately.

:func:`measure_transport` publishes frames from one process to a subscriber in another, with or
without the shipped Fast DDS profile, and counts how many arrive.

A research benchmark, not installed with the package; from a checkout (or with the package installed):

    PYTHONPATH=. python benchmarks/overhead.py --width 640 --height 512 --pairs 300
    PYTHONPATH=. python benchmarks/overhead.py --transport --width 1280 --height 1024 [--no-profile]
"""

from __future__ import annotations

import argparse
import array
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["OverheadResult", "TransportResult", "default_profile", "measure_overhead", "measure_transport"]


def default_profile() -> Path | None:
    """The shipped ``fastdds_shm.xml`` (see :func:`~fusion_ros.ros.processes.find_fastdds_profile`), or None."""
    from fusion_ros.errors import FusionError
    from fusion_ros.ros.processes import find_fastdds_profile

    try:
        return find_fastdds_profile()
    except FusionError:
        return None


@dataclass(frozen=True)
class OverheadResult:
    """Per-pair cost of the node's own code in milliseconds (p50 / p95 over the pairs)."""

    width: int
    height: int
    thermal_encoding: str
    rgb_encoding: str
    pairs: int
    callbacks_cpu_ms_p50: float  # decode + sync + hand-over, both callbacks
    callbacks_cpu_ms_p95: float
    publish_cpu_ms_p50: float  # encode + message build + publish (+ camera_info)
    publish_cpu_ms_p95: float
    node_cpu_ms_p50: float  # the two together: the node's overhead per pair
    node_cpu_ms_p95: float
    node_wall_ms_p50: float
    node_wall_ms_p95: float
    deserialize_cpu_ms_p50: float  # rclpy: the two CDR messages to Python, before the callbacks
    fused_received: int  # frames the subscriber in the other participant got (reliable)


def _image(encoding: str, pixels: np.ndarray):
    from sensor_msgs.msg import Image

    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=pixels.nbytes // pixels.shape[0])
    msg.header.frame_id = "camera"
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).tobytes())
    msg.data = data
    return msg


def _synthetic(width: int, height: int, thermal_encoding: str, rgb_encoding: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    thermal = rng.integers(27000, 31000, (height, width), dtype=np.uint16)
    if thermal_encoding in ("mono8", "8UC1"):
        thermal = (thermal >> 8).astype(np.uint8)
    elif thermal_encoding == "32FC1":
        thermal = (thermal / 100.0 - 273.15).astype(np.float32)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[rgb_encoding]
    rgb = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return thermal, rgb[..., 0] if channels == 1 else rgb


class _Inbox:
    """Stands in for the node's stopped worker: keeps the pair the callbacks offer, runs nothing."""

    def __init__(self) -> None:
        self.job = None

    def offer(self, job) -> bool:
        self.job = job
        return False

    def stop(self, timeout: float | None = None) -> None:
        self.job = None


def _p(values: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), (50, 95))
    return round(float(p50), 3), round(float(p95), 3)


def _ros_env() -> None:
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = default_profile()
    if profile is not None:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))


def measure_overhead(
    width: int = 640,
    height: int = 512,
    pairs: int = 300,
    thermal_encoding: str = "mono16",
    rgb_encoding: str = "rgb8",
    domain_id: int | None = None,
) -> OverheadResult:
    """Time the node's per-pair code path on ``pairs`` synthetic pairs (after 20 warm-up pairs)."""
    _ros_env()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from fusion_ros.ros.node import FusionNode

    thermal, rgb = _synthetic(width, height, thermal_encoding, rgb_encoding)
    raw_thermal = serialize_message(_image(thermal_encoding, thermal))
    raw_rgb = serialize_message(_image(rgb_encoding, rgb))
    domain = domain_id if domain_id is not None else 30 + os.getpid() % 60
    node_ctx, sub_ctx = Context(), Context()
    rclpy.init(context=node_ctx, domain_id=domain)
    rclpy.init(context=sub_ctx, domain_id=domain)
    node = FusionNode("fusion_node", context=node_ctx, parameter_overrides=[Parameter("method", value="average")])
    node.worker.stop()  # no model: this measures the node around it
    inbox = node.worker = _Inbox()
    listener = rclpy.create_node("overhead_listener", context=sub_ctx)
    received = [0]
    listener.create_subscription(Image, "fused/image_raw", lambda m: received.__setitem__(0, received[0] + 1),
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=sub_ctx)
    executor.add_node(listener)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, name="overhead-listener")
    spinner.start()
    callbacks_cpu, publish_cpu, total_cpu, total_wall, deser_cpu = [], [], [], [], []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and node._fused_pub.get_subscription_count() == 0:
            time.sleep(0.01)
        fused = None
        for i in range(pairs + 20):
            c0 = time.thread_time_ns()
            thermal_msg = deserialize_message(raw_thermal, Image)
            rgb_msg = deserialize_message(raw_rgb, Image)
            c1 = time.thread_time_ns()
            for msg in (thermal_msg, rgb_msg):
                msg.header.stamp.sec = 1000 + i
            w0, c2 = time.perf_counter_ns(), time.thread_time_ns()
            node._on_thermal(thermal_msg)
            node._on_rgb(rgb_msg)
            job, inbox.job = inbox.job, None
            c3 = time.thread_time_ns()
            if job is None:
                raise RuntimeError(f"pair {i} did not pair; the synchronizer is misconfigured")
            if fused is None:
                fused = np.ascontiguousarray(job.visible.rgb)  # stands in for the model's output
            node._publish(job, job.visible, fused)
            c4, w1 = time.thread_time_ns(), time.perf_counter_ns()
            if i >= 20:
                deser_cpu.append((c1 - c0) / 1e6)
                callbacks_cpu.append((c3 - c2) / 1e6)
                publish_cpu.append((c4 - c3) / 1e6)
                total_cpu.append((c4 - c2) / 1e6)
                total_wall.append((w1 - w0) / 1e6)
            time.sleep(0.002)  # let the listener take the frame, as a real subscriber would
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and received[0] < pairs + 20:
            time.sleep(0.01)
    finally:
        stop.set()
        spinner.join(10)
        executor.shutdown(timeout_sec=1)
        listener.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=sub_ctx)
        rclpy.shutdown(context=node_ctx)
    return OverheadResult(
        width, height, thermal_encoding, rgb_encoding, pairs,
        *_p(callbacks_cpu), *_p(publish_cpu), *_p(total_cpu), *_p(total_wall), _p(deser_cpu)[0], received[0],
    )


@dataclass(frozen=True)
class TransportResult:
    """Frames sent best-effort from one process and received in another."""

    width: int
    height: int
    encoding: str
    profile: str
    sent: int
    received: int


_TRANSPORT_SUB = textwrap.dedent(
    """
    import json, sys, time, rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("transport_sub")
    frames, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
    got, last = set(), [None]
    def on_image(m):
        got.add(m.header.stamp.sec)
        last[0] = time.monotonic()
    node.create_subscription(Image, "transport_probe", on_image, qos_profile_sensor_data)
    while len(got) < frames and time.monotonic() < end:
        if last[0] is not None and time.monotonic() > last[0] + 3.0:
            break
        rclpy.spin_once(node, timeout_sec=0.05)
    sys.stdout.write(json.dumps(sorted(got)) + "\\n")
    """
)

_TRANSPORT_PUB = textwrap.dedent(
    """
    import array, sys, time, numpy as np, rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    width, height, encoding, frames, rate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    channels, itemsize = {"mono8": (1, 1), "mono16": (1, 2), "rgb8": (3, 1), "bgr8": (3, 1)}[encoding]
    rclpy.init()
    node = rclpy.create_node("transport_pub")
    pub = node.create_publisher(Image, "transport_probe", qos_profile_sensor_data)
    msg = Image(width=width, height=height, encoding=encoding, step=width * channels * itemsize)
    data = array.array("B"); data.frombytes(np.random.default_rng(0).integers(0, 256, height * msg.step, dtype=np.uint8).tobytes())
    msg.data = data
    end = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.5)
    for i in range(frames):
        msg.header.stamp.sec = i
        pub.publish(msg)
        time.sleep(1.0 / rate)
    time.sleep(0.5)
    """
)


def measure_transport(
    width: int = 1280,
    height: int = 1024,
    encoding: str = "rgb8",
    frames: int = 40,
    rate_hz: float = 10.0,
    profile: Path | None = None,
    domain_id: int | None = None,
) -> TransportResult:
    """Send ``frames`` best-effort images between two fresh processes; ``profile=None``: Fast DDS defaults."""
    env = dict(os.environ, RMW_IMPLEMENTATION="rmw_fastrtps_cpp", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(domain_id if domain_id is not None else 30 + (os.getpid() + 1) % 60))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    listen_s = 30 + frames / rate_hz + 5
    sub = subprocess.Popen([sys.executable, "-c", _TRANSPORT_SUB, str(frames), str(listen_s)], env=env,
                           stdout=subprocess.PIPE, text=True)
    try:
        subprocess.run([sys.executable, "-c", _TRANSPORT_PUB, str(width), str(height), encoding, str(frames), str(rate_hz)],
                       env=env, check=True, timeout=listen_s)
        out, _ = sub.communicate(timeout=listen_s)
    finally:
        if sub.poll() is None:
            sub.kill()
    lines = [line for line in out.splitlines() if line.startswith("[")]
    received = len(json.loads(lines[-1])) if lines else 0
    return TransportResult(width, height, encoding, str(profile) if profile else "Fast DDS defaults", frames, received)


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/overhead.py``: print the node's per-pair overhead or a transport check."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--thermal-encoding", default="mono16")
    parser.add_argument("--rgb-encoding", default="rgb8")
    parser.add_argument("--transport", action="store_true", help="count frames crossing between two processes instead")
    parser.add_argument("--encoding", default="rgb8", help="image encoding for --transport")
    parser.add_argument("--no-profile", action="store_true", help="--transport with Fast DDS defaults, not the shipped profile")
    args = parser.parse_args(argv)
    if args.transport:
        result = measure_transport(args.width, args.height, args.encoding, profile=None if args.no_profile else default_profile())
    else:
        result = measure_overhead(args.width, args.height, args.pairs, args.thermal_encoding, args.rgb_encoding)
    for key, value in asdict(result).items():
        sys.stdout.write(f"{key:24s} {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
