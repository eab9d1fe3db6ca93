"""``fusion-ros bag``: fuse every synchronized thermal/RGB pair of a rosbag2 into a new bag."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fusion_ros.bag import DEFAULT_FUSED_TOPIC, DEFAULT_RGB_TOPIC, DEFAULT_THERMAL_TOPIC, STORAGES
from fusion_ros.bag_fusion import process_bag
from fusion_ros.commands.fuse import add_fuser_arguments, config_from_args
from fusion_ros.temporal import FlickerMeter

NAME = "bag"
HELP = "fuse every synchronized thermal/RGB pair of a rosbag2 (sqlite3 or MCAP) into a new bag"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN", help="input bag folder (the one with metadata.yaml)")
    parser.add_argument("output", type=Path, metavar="OUT", help="output bag folder to create")
    parser.add_argument("--copy-inputs", action="store_true", help="also copy every input message (all topics) into the output bag")
    parser.add_argument("--storage", choices=STORAGES, help="output storage (default: the input's)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--thermal-topic", default=DEFAULT_THERMAL_TOPIC, help=f"thermal sensor_msgs/Image topic (default {DEFAULT_THERMAL_TOPIC})")
    parser.add_argument("--rgb-topic", default=DEFAULT_RGB_TOPIC, help=f"RGB sensor_msgs/Image or CompressedImage topic (default {DEFAULT_RGB_TOPIC})")
    parser.add_argument("--fused-topic", default=DEFAULT_FUSED_TOPIC, help=f"output topic (default {DEFAULT_FUSED_TOPIC})")
    parser.add_argument("--slop", type=float, default=0.05, help="largest thermal/RGB stamp difference of a pair, seconds (default 0.05)")
    parser.add_argument("--queue-size", type=int, default=100, help="synchronizer queue per input (default 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs fused per model call (default 8)")
    add_fuser_arguments(parser)
    parser.add_argument("--flicker", action="store_true",
                        help="also report the flicker ratio: mean |F_t - F_t-1| over the larger of the inputs' (fusion_ros.temporal)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # validated before the bag is read
    meter = FlickerMeter() if args.flicker else None
    start = time.perf_counter()
    stats = process_bag(
        args.input,
        args.output,
        config,
        thermal_topic=args.thermal_topic,
        rgb_topic=args.rgb_topic,
        fused_topic=args.fused_topic,
        storage=args.storage,
        copy_inputs=args.copy_inputs,
        batch_size=args.batch_size,
        slop_s=args.slop,
        queue_size=args.queue_size,
        overwrite=args.overwrite,
        progress=not args.quiet,
        on_fused=None if meter is None else lambda thermal, rgb, fused, _stamp: meter.update(thermal, rgb, fused),
    )
    seconds = time.perf_counter() - start
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())) or "none"
    print(
        f"{args.output}: {stats.fused} fused frames on {args.fused_topic} from {stats.thermal_messages} thermal + "
        f"{stats.rgb_messages} RGB messages ({stats.pairs} pairs; unpaired messages: {dropped}"
        f"{f'; copied {stats.copied} input messages' if args.copy_inputs else ''}) in {seconds:.1f} s"
    )
    if meter is not None:
        print(
            f"flicker ratio {meter.ratio:.3f}: fused frames change by {meter.fused_change:.2f} grey levels per frame, "
            f"the inputs by up to {meter.input_change:.2f} ({meter.frames} frames)"
        )
    for err in stats.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if stats.bad_messages + stats.bad_pairs > len(stats.errors):
        print(f"warning: {stats.bad_messages} undecodable messages and {stats.bad_pairs} refused pairs skipped in all",
              file=sys.stderr)
    if stats.fused == 0:  # a script must not take an empty output bag for a result
        why = "every pair was refused (see the warnings)" if stats.pairs else "the bag has no thermal/RGB pairs within --slop"
        print(f"error: nothing was fused: {why}", file=sys.stderr)
        return 1
    return 0
