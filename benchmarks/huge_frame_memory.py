"""RSS of fusion_node around one huge thermal/RGB pair: does the node give the memory back?

A real :class:`~fusion_ros.ros.node.FusionNode` (pyramid, allocator tuned as ``fusion_node``
tunes it) gets 20 640x512 pairs, then one pair of ``--huge`` size, then 20 640x512 pairs again,
through its subscription callbacks and worker. Prints RSS after each phase; ``--no-trim``
disables the node's heap trim after a frame much larger than the running size, to compare.

    PYTHONPATH=. python benchmarks/huge_frame_memory.py [--huge 4096x3072] [--no-trim]
"""

from __future__ import annotations

import argparse
import array
import os
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _image(encoding: str, pixels: np.ndarray, sec: int):
    from sensor_msgs.msg import Image

    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=pixels.nbytes // pixels.shape[0])
    msg.header.stamp.sec = sec
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).tobytes())
    msg.data = data
    return msg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--huge", default="4096x3072", help="WIDTHxHEIGHT of the one huge pair")
    parser.add_argument("--no-trim", action="store_true", help="disable the node's heap trim (to compare)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.huge.split("x"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    import fusion_ros.ros.node as node_module
    from fusion_ros.runtime import tune_malloc

    tune_malloc()
    if args.no_trim:
        node_module.trim_heap = lambda: False
    rng = np.random.default_rng(0)
    small = (rng.integers(27000, 31000, (512, 640), dtype=np.uint16), rng.integers(0, 256, (512, 640, 3), dtype=np.uint8))
    huge = (rng.integers(27000, 31000, (height, width), dtype=np.uint16), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    context = Context()
    rclpy.init(context=context, domain_id=90 + os.getpid() % 10)
    node = node_module.FusionNode(context=context, parameter_overrides=[
        Parameter("input.max_pixels", value=width * height), Parameter("torch_threads", value=1)])
    sec = [1000]

    def feed(pair: tuple[np.ndarray, np.ndarray], n: int) -> None:
        for _ in range(n):
            sec[0] += 1  # one pair a second of stamps: each pairs at once
            node._on_thermal(_image("mono16", pair[0], sec[0]))
            node._on_rgb(_image("rgb8", pair[1], sec[0]))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (node.stats.outputs.total < node.sync.counts().pairs or node.worker.busy):
                time.sleep(0.005)

    try:
        feed(small, 20)
        print(f"after 20 640x512 pairs:        RSS {_rss_mb():7.0f} MB")
        feed(huge, 1)
        print(f"after one {width}x{height} pair: RSS {_rss_mb():7.0f} MB")
        feed(small, 20)
        print(f"after 20 more 640x512 pairs:   RSS {_rss_mb():7.0f} MB  (trim {'off' if args.no_trim else 'on'})")
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
