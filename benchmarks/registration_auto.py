"""The node's automatic registration on a moving rig: how close the matrix it keeps gets to the truth.

A "drive": every pair of a dataset (RoadScene: 50 different road scenes; LLVIP: 44 night street
pairs from a few places) in order, each as one frame of a camera pair whose thermal camera is
misaligned by the same seeded random rig warp (as ``benchmarks/registration.py``, 640x512 RGB,
320x256 thermal). The pairs go through :class:`~fusion_ros.registration.auto.AutoRegistrar` as its
thread takes them, ``frames`` at a time (what a ``spacing_s`` apart ring collects on a moving vehicle),
each batch one :meth:`~AutoRegistrar.step`. Reported per setting: the corner error of the matrix the
registrar holds after each step, its value after the last step, the wait it would take before the
next step (its back-off; the drive itself is not timed), and the CPU seconds per step.

    PYTHONPATH=$PWD python benchmarks/registration_auto.py --shared ../shared --warps 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fusion_ros.evaluate import find_pairs
from fusion_ros.registration import corner_error
from fusion_ros.registration.auto import AutoRegistrar, AutoSettings, estimate_against
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from registration import RGB_WH, THERMAL_WH, registered_pair


def run(pairs: list[tuple[np.ndarray, np.ndarray]], truth: np.ndarray, settings: AutoSettings
        ) -> tuple[list[float], list[float], float]:
    """Corner error of the held matrix after each step (inf while it has none), the wait after each step, CPU seconds
    per step."""
    registrar = AutoRegistrar(settings=settings, estimator=estimate_against)  # in this process: its CPU time is measured
    errors, waits, cpu = [], [], []
    for start in range(0, len(pairs) - settings.frames + 1, settings.frames):
        batch = [(thermal_view(th, truth, THERMAL_WH), rgb) for th, rgb in pairs[start:start + settings.frames]]
        t0 = time.process_time()
        registrar.step(batch)
        cpu.append(time.process_time() - t0)
        held = registrar.homography
        errors.append(float("inf") if held is None else corner_error(np.reshape(held, (3, 3)), truth, THERMAL_WH))
        waits.append(registrar.interval_s)
    return errors, waits, float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--warps", type=int, default=2)
    ap.add_argument("--drives", default="roadscene,llvip")
    ap.add_argument("--settings", default="5:0.5,5:0.8,10:0.5,10:0.8", help="frames:smoothing,...")
    args = ap.parse_args()
    choices = [AutoSettings(frames=int(f), smoothing=float(s)) for f, s in (c.split(":") for c in args.settings.split(","))]
    rng = np.random.default_rng(7)
    finals: dict[tuple[int, float], list[float]] = {(c.frames, c.smoothing): [] for c in choices}
    for name in args.drives.split(","):
        pairs = [registered_pair(p) for p in find_pairs(args.shared / "data" / name)]
        for _ in range(args.warps):
            truth = random_rig_homography(rng, RGB_WH, THERMAL_WH)
            for settings in choices:
                errors, waits, cpu = run(pairs, truth, settings)
                finals[(settings.frames, settings.smoothing)].append(errors[-1])
                print(f"{name:9s} frames {settings.frames:2d} smoothing {settings.smoothing:.1f}: corner error after each step "
                      f"{' '.join(f'{e:.1f}' for e in errors)} px; wait after each step {' '.join(f'{w:g}' for w in waits)} s; "
                      f"{cpu:.1f} s CPU/step", flush=True)
    print("\n== corner error of the held matrix after the whole drive (RGB px)")
    for (frames, smoothing), errs in finals.items():
        print(f"frames {frames:2d} smoothing {smoothing:.1f}: median {np.median(errs):6.2f}  max {np.max(errs):6.2f}  "
              f"<=2px {sum(e <= 2 for e in errs)}/{len(errs)}")


if __name__ == "__main__":
    main()
