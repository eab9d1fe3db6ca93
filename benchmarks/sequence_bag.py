"""Record a folder of registered video frames (``ir/`` + ``vi/``, matching sorted names) as a rosbag2 at a fixed rate.

Makes a real sequence such as ``../shared/data/m3svd_seq/0114_1609`` replayable by ``fusion-ros bag``
(thermal mono8/mono16 on /thermal/image_raw, RGB rgb8 on /rgb/image_raw, both stamped at the same
instant), e.g. for the flicker ratio of ``docs/RESULTS.md``:

    python benchmarks/sequence_bag.py ../shared/data/m3svd_seq/0114_1609 /tmp/m3svd_bag
    fusion-ros bag /tmp/m3svd_bag /tmp/m3svd_fused --method balanced --flicker --overwrite --quiet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusion_ros.bag import write_scene_bag
from fusion_ros.evaluate import find_pairs
from fusion_ros.imageio import read_thermal, read_visible


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="folder with ir/ and vi/ frames")
    ap.add_argument("bag", type=Path, help="bag folder to create")
    ap.add_argument("--hz", type=float, default=30.0, help="frame rate (default 30)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    start, period = 1_700_000_000_000_000_000, int(round(1e9 / args.hz))

    def frames():
        for k, pair in enumerate(find_pairs(args.folder)):
            yield start + k * period, "thermal", read_thermal(pair.ir)
            yield start + k * period, "rgb", read_visible(pair.vi)

    counts = write_scene_bag(args.bag, frames(), overwrite=args.overwrite)
    print(f"{args.bag}: {counts}")


if __name__ == "__main__":
    main()
