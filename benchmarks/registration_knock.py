"""A knocked camera while the auto mode waits: how the held matrix's score tells it, and how soon it is re-estimated.

Drives as ``benchmarks/registration_auto.py`` (every RoadScene or LLVIP pair in order, or the M3SVD
``0114_1609`` clip of a fixed camera; 640x512 RGB, 320x256 thermal under a seeded random rig warp),
in batches of 5 pairs, what the auto mode's ring holds at each look.

1. Scores: the true matrix's structure correlation on each batch, divided by its score on the
   batch before (an unmoved camera: this should stay above ``check_ratio``), and the same for the
   thermal camera knocked by 2, 5, 10 or 20 px (the last also rolled by 1°) after the batch before
   (this should fall below it). Printed: how often each falls below 0.6, 0.7 and 0.8.
2. The registrar: the drive cycled for ``--looks`` looks 10 s apart on a simulated clock (what the
   node does with ``auto_interval`` 10 s), the camera knocked by 15 px and 1° at look ``--knock-at``
   (by then backed off to a 160 s wait). Printed per ``check_ratio`` (0: no checks): seconds from the
   knock to the next estimate and to the first update, the held matrix's corner error against the
   knocked truth at the end, and the estimates, checks and CPU seconds of the whole run (in this
   process: ``estimate_against``, ``score_against``).

    PYTHONPATH=$PWD python benchmarks/registration_knock.py --shared ../shared
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np

from fusion_ros.evaluate import find_pairs
from fusion_ros.registration import corner_error
from fusion_ros.registration.auto import AutoRegistrar, AutoSettings, estimate_against, score_against
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from registration import RGB_WH, THERMAL_WH, registered_pair

BATCH = 5
LOOK_S = 10.0
KNOCKS = ((2.0, 0.0), (5.0, 0.0), (10.0, 0.0), (20.0, 1.0))  # (px, degrees)


def knocked(truth: np.ndarray, px: float, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """``truth`` with the thermal view moved by ``px`` RGB pixels in a random direction and rolled about the centre."""
    direction = rng.normal(size=2)
    dx, dy = direction / np.linalg.norm(direction) * px
    roll = np.vstack([cv2.getRotationMatrix2D((RGB_WH[0] / 2, RGB_WH[1] / 2), degrees, 1.0), [0, 0, 1]])
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]) @ roll @ truth


def batches(pairs: list[tuple[np.ndarray, np.ndarray]], truth: np.ndarray, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """``count`` batches of the drive (cycled), the thermal frames seen through ``truth``."""
    out = []
    for k in range(count):
        chosen = [pairs[(k * BATCH + i) % len(pairs)] for i in range(BATCH)]
        out.append([(thermal_view(th, truth, THERMAL_WH), rgb) for th, rgb in chosen])
    return out


def score_ratios(pairs: list[tuple[np.ndarray, np.ndarray]], truth: np.ndarray, rng: np.random.Generator
                 ) -> dict[str, list[float]]:
    """Per consecutive batches: score now / score before, unmoved and under each knock."""
    ratios: dict[str, list[float]] = {"unmoved": [], **{f"{px:g} px {deg:g} deg": [] for px, deg in KNOCKS}}
    before = None
    for start in range(0, len(pairs) - BATCH + 1, BATCH):
        chosen = pairs[start:start + BATCH]
        now = score_against([(thermal_view(th, truth, THERMAL_WH), rgb) for th, rgb in chosen], truth)
        if before is not None and now is not None:
            ratios["unmoved"].append(now / before)
            for px, deg in KNOCKS:
                moved = knocked(truth, px, deg, rng)
                score = score_against([(thermal_view(th, moved, THERMAL_WH), rgb) for th, rgb in chosen], truth)
                ratios[f"{px:g} px {deg:g} deg"].append(score / before)
        before = now
    return ratios


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(pairs: list[tuple[np.ndarray, np.ndarray]], truth: np.ndarray, moved: np.ndarray, looks: int, knock_at: int,
          check_ratio: float) -> dict[str, float]:
    """The registrar over a cycled drive with the camera knocked at look ``knock_at``."""
    clock = _Clock()
    registrar = AutoRegistrar(settings=AutoSettings(check_ratio=check_ratio), clock=clock, estimator=estimate_against)
    before, after = batches(pairs, truth, knock_at), batches(pairs, moved, looks - knock_at)
    first_estimate = first_update = math.inf
    cpu = time.process_time()
    for k, batch in enumerate(before + after):
        clock.now = k * LOOK_S
        estimates = registrar.estimates
        changed = registrar.look(batch)
        if k >= knock_at:
            if registrar.estimates > estimates:
                first_estimate = min(first_estimate, clock.now - knock_at * LOOK_S)
            if changed:
                first_update = min(first_update, clock.now - knock_at * LOOK_S)
    held = registrar.homography
    error = math.inf if held is None else corner_error(np.reshape(held, (3, 3)), moved, THERMAL_WH)
    return {"estimate_s": first_estimate, "update_s": first_update, "error_px": error, "estimates": registrar.estimates,
            "checks": registrar.checks, "cpu_s": time.process_time() - cpu}


def drives(shared: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    return {name: [registered_pair(p) for p in find_pairs(shared / "data" / folder)]
            for name, folder in (("roadscene", "roadscene"), ("llvip", "llvip"), ("m3svd", "m3svd_seq/0114_1609"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--warps", type=int, default=2, help="rig warps per drive for the score ratios")
    ap.add_argument("--looks", type=int, default=40)
    ap.add_argument("--knock-at", type=int, default=24)
    ap.add_argument("--ratios", default="0.7,0", help="check_ratio values for the registrar runs")
    args = ap.parse_args()
    rng = np.random.default_rng(13)
    all_ratios: dict[str, list[float]] = {}
    runs = []
    for name, pairs in drives(args.shared).items():
        truths = [random_rig_homography(rng, RGB_WH, THERMAL_WH) for _ in range(args.warps)]
        for truth in truths:
            for key, values in score_ratios(pairs, truth, rng).items():
                all_ratios.setdefault(key, []).extend(values)
        moved = knocked(truths[0], 15.0, 1.0, rng)
        for ratio in map(float, args.ratios.split(",")):
            result = drive(pairs, truths[0], moved, args.looks, args.knock_at, ratio)
            runs.append((name, ratio, result))
            print(f"{name:9s} check_ratio {ratio:.2f}: knock -> estimate {result['estimate_s']:g} s, update "
                  f"{result['update_s']:g} s; error at the end {result['error_px']:.1f} px; {result['estimates']} estimates, "
                  f"{result['checks']} checks, {result['cpu_s']:.1f} s CPU over {args.looks * LOOK_S:g} s", flush=True)
    print(f"\n== score on a batch / score on the batch before (true matrix; {args.warps} warps per drive)")
    for key, values in all_ratios.items():
        v = np.asarray(values)
        below = "  ".join(f"< {t:.1f}: {100 * np.mean(v < t):5.1f} %" for t in (0.6, 0.7, 0.8))
        print(f"{key:16s} n={len(v):3d}  median {np.median(v):.2f}  p10 {np.percentile(v, 10):.2f}  "
              f"p90 {np.percentile(v, 90):.2f}  {below}")


if __name__ == "__main__":
    main()
