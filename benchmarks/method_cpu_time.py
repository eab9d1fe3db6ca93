"""CPU time per fused pair of several methods, interleaved in one process: a speed comparison that
survives a loaded machine (wall-clock ``fusion-ros bench`` does not when other jobs share the cores).

Each round calls every method once on the same generated 640×512 night-street pair (16-bit thermal +
RGB, ``fusion_ros.scenes``) through ``Fuser.__call__``, timing ``time.thread_time`` with one torch thread;
prints p10 and median per method. With one thread, CPU time ≈ the wall time of an idle core.

    python benchmarks/method_cpu_time.py [--methods balanced,pyramid,average,max] [--rounds 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fusion_ros.fuser import Fuser
from fusion_ros.runtime import tune_malloc
from fusion_ros.scenes import render_pair
from fusion_ros.thermal import INDEPENDENT_FRAMES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="balanced,pyramid,average,max")
    ap.add_argument("--size", default="640x512", help="WIDTHxHEIGHT")
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tune_malloc()
    width, height = (int(v) for v in args.size.split("x"))
    thermal, rgb = render_pair(3.0, height, width)
    fusers = {m: Fuser(m, device="cpu", thermal=INDEPENDENT_FRAMES) for m in args.methods.split(",")}
    times: dict[str, list[float]] = {m: [] for m in fusers}
    for _ in range(3):
        for f in fusers.values():
            f(thermal, rgb)
    for _ in range(args.rounds):
        for m, f in fusers.items():
            t0 = time.thread_time()
            f(thermal, rgb)
            times[m].append((time.thread_time() - t0) * 1e3)
    for m, t in times.items():
        q = statistics.quantiles(t, n=10)
        print(f"{m:>10} {args.size}: CPU p10 {q[0]:.2f} ms, median {statistics.median(t):.2f} ms (1 thread, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
