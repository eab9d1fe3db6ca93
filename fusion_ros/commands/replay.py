"""``fusion-ros replay``: publish a bag's topics with their recorded timing (``ros2 bag play`` for pip installs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fusion_ros.errors import ConfigError

NAME = "replay"
HELP = "publish a rosbag2's topics with their recorded timing (for installs without ros2 bag)"


def _remap(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition(":=")
    if not sep or not src or not dst:
        raise argparse.ArgumentTypeError(f"--remap expects FROM:=TO, got {text!r}")
    return src, dst


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, metavar="BAG", help="bag folder (sqlite3 or MCAP, the one with metadata.yaml)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", type=int, default=1, metavar="N",
                        help="play N times back to back, stamps unchanged (0 = until Ctrl-C; default 1)")
    parser.add_argument("--topic", action="append", dest="topics", metavar="TOPIC", help="play only this topic (repeatable; default all)")
    parser.add_argument("--remap", action="append", type=_remap, default=[], metavar="FROM:=TO", help="publish a bag topic under another name")
    parser.add_argument("--wait-for-subscribers", type=float, default=5.0, metavar="SECONDS",
                        help="before playing, wait up to SECONDS until every played topic has a subscriber (default 5; "
                             "messages published before a subscriber matched are lost; 0: play at once)")
    parser.add_argument("--best-effort", action="store_true",
                        help="best-effort publishers (default reliable, which also reaches best-effort subscribers)")


def run(args: argparse.Namespace) -> int:
    """Play the bag; SIGINT or SIGTERM stops between two messages and still prints the summary (exit 0).

    rclpy gets no process arguments (this command's ``--remap A:=B`` would reach rcl as a
    deprecated ROS remapping and print its warning) and installs no signal handlers (they shut
    the context down under the player, which then failed with a traceback).
    """
    import signal
    import threading

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from fusion_ros.ros.player import BagPlayer

    if args.rate <= 0:
        raise ConfigError(f"--rate must be > 0, got {args.rate}")
    if args.loop < 0:
        raise ConfigError(f"--loop must be >= 0, got {args.loop}")
    fastdds = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") == "rmw_fastrtps_cpp"
    if fastdds and "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        print("note: FASTDDS_DEFAULT_PROFILES_FILE is not set; large images may not reach other processes "
              "(use the package's config/fastdds_shm.xml)", file=sys.stderr)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO) as init:
            node = rclpy.create_node("fusion_ros_replay", context=init.context)
            try:
                player = BagPlayer(node, args.bag, args.topics, dict(args.remap), reliable=not args.best_effort)
                if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers, stop=stop):
                    missing = [t for t, n in player.subscriber_counts().items() if n == 0]
                    print(f"warning: no subscriber on {', '.join(missing)} after {args.wait_for_subscribers:g} s; playing anyway",
                          file=sys.stderr)
                stats = player.play(rate=args.rate, loops=args.loop, stop=stop)
            finally:
                node.destroy_node()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = ", ".join(f"{t} {n}" for t, n in stats.published.items())
    stopped = " (stopped by a signal)" if stop.is_set() else ""
    print(f"published {sum(stats.published.values())} messages in {stats.loops} loop(s){stopped}: {counts}")
    return 0
