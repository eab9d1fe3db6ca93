"""What the automatic registration costs live fusion: per-frame fusion time while the estimator runs.

A camera pair at ``--fps`` (640x512 RGB, 320x256 thermal under a rig warp, generated street scene)
is fused with the default method on this process's thread with ``--torch-threads`` (the node's
``torch_threads``, default 1), as the node's worker does; when a fusion
takes longer than a frame period the frames that arrived meanwhile are dropped (the node keeps only
the newest pair). Meanwhile the auto mode's estimator runs back to back on 5-frame batches (the
worst case: the node estimates every ``registration.auto_interval`` seconds, each estimate taking
seconds), either

- ``off``: no estimator;
- ``thread``: :class:`~fusion_ros.registration.auto.AutoRegistrar`'s estimate in a thread of this
  process (how the node ran it before);
- ``process``: the same in :class:`~fusion_ros.registration.isolated.EstimatorProcess` (the node now).

    PYTHONPATH=$PWD python benchmarks/registration_frame_path.py --seconds 30 [--torch-threads 2]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fusion_ros import Fuser
from fusion_ros.registration.auto import estimate_against
from fusion_ros.registration.estimate import EstimatorConfig
from fusion_ros.registration.isolated import EstimatorProcess
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair

RGB_WH = (640, 512)
THERMAL_WH = (320, 256)


def run(mode: str, pairs: list[tuple[np.ndarray, np.ndarray]], fuser: Fuser, seconds: float, fps: float) -> str:
    stop = threading.Event()
    estimates = [0]
    estimator = EstimatorProcess() if mode == "process" else estimate_against
    config = EstimatorConfig(min_confidence=0.0)

    def estimate_forever() -> None:
        while not stop.is_set():
            estimator(pairs, config, None)
            estimates[0] += 1

    worker = threading.Thread(target=estimate_forever, daemon=True) if mode != "off" else None
    if worker is not None:
        worker.start()
        if mode == "process":
            while estimator.pid is None:  # measure from the child's first estimate on, not its start-up
                time.sleep(0.05)
    period = 1.0 / fps
    times, dropped, tick = [], 0, 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        thermal, rgb = pairs[tick % len(pairs)]
        t0 = time.perf_counter()
        fuser(thermal, rgb)
        times.append(1000.0 * (time.perf_counter() - t0))
        late = int((time.monotonic() - start) / period)  # the newest frame that has arrived by now
        dropped += max(0, late - tick - 1)
        tick = max(tick + 1, late)
        time.sleep(max(0.0, start + tick * period - time.monotonic()))
    stop.set()
    if worker is not None:
        worker.join()
    memory = ""
    if isinstance(estimator, EstimatorProcess):
        memory = f" | child's peak resident memory {_peak_rss_mb(estimator.pid):.0f} MB"
        estimator.close()
    ms = np.array(times)
    return (f"{mode:8s} fused {len(ms):4d}, dropped {dropped:4d} | fusion ms p50 {np.percentile(ms, 50):6.1f}  "
            f"p90 {np.percentile(ms, 90):6.1f}  p99 {np.percentile(ms, 99):6.1f}  max {ms.max():6.1f} | "
            f"estimates finished {estimates[0]}{memory}")


def _peak_rss_mb(pid: int | None) -> float:
    """Peak resident set of a running process (Linux /proc), MB; NaN where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return float("nan")
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return float("nan") if kb is None else kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--modes", default="off,thread,process")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads of the fusion (the node's torch_threads)")
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    truth = random_rig_homography(np.random.default_rng(3), RGB_WH, THERMAL_WH)
    pairs = []
    for t in range(5):
        thermal, rgb = render_pair(0.5 + t, RGB_WH[1], RGB_WH[0], seed=t)
        pairs.append((np.ascontiguousarray(thermal_view(thermal, truth, THERMAL_WH)), rgb))
    fuser = Fuser(homography=truth.reshape(-1))
    for _ in range(10):
        fuser(*pairs[0])  # warm up
    for mode in args.modes.split(","):
        print(run(mode, pairs, fuser, args.seconds, args.fps), flush=True)


if __name__ == "__main__":
    main()
