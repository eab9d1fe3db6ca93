"""Where the registration error comes from: the objective's optimum, or the path to it.

Same warped pairs as ``benchmarks/registration.py``. Each row refines one pyramid level of the
estimator *starting from the true homography* (or from it with every thermal corner moved by up to
±2 RGB px) and reports how far it drifts: if the optimum of that level's objective were the truth,
the drift would be ~0. The last row is the whole estimator (global search, candidates, levels).

    PYTHONPATH=$PWD python benchmarks/registration_drift.py --shared ../shared --per-dataset 4 --scenes 2 --warps 2
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import cv2
import numpy as np

from fusion_ros.registration import EstimatorConfig, corner_error, estimate_homography
from fusion_ros.registration import estimate as est
from fusion_ros.registration.features import structure_features
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from registration import RGB_WH, THERMAL_WH, load_pairs, summarize

Case = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # name, thermal view, RGB, true homography


@contextlib.contextmanager
def feature_smoothing(sigma: float) -> Iterator[None]:
    """The estimator's structure fields with a different post-smoothing (default 1 px)."""
    with mock.patch.object(est, "structure_features", functools.partial(structure_features, smooth=sigma)):
        yield


def perturbed(truth: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
    """The truth with each thermal corner's image moved by up to ±px RGB pixels in x and y."""
    w, h = THERMAL_WH
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    dst = cv2.perspectiveTransform(src[None], truth)[0] + rng.uniform(-px, px, (4, 2)).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def refine_from(start: np.ndarray, view: np.ndarray, rgb: np.ndarray, density: float) -> np.ndarray:
    """Refine all 8 parameters on the finest level of a pyramid whose finest RGB level has ``density``
    RGB pixels per thermal pixel (the estimator uses the thermal camera's native density; 1.0 = full RGB)."""
    levels = est._prepare(est._as_pairs([(view, rgb)]), density)[2]
    return np.linalg.inv(est._refine_level(levels[-1], np.linalg.inv(start), 30, dof=8)[0])


def row(label: str, cases: list[Case], fn: Callable[[Case], np.ndarray]) -> None:
    errors = [corner_error(fn(case), case[3], THERMAL_WH) for case in cases]
    real = [e for e, case in zip(errors, cases) if not case[0].startswith("scene/")]
    print(f"{label:58s} {summarize(errors)}  real pairs median {np.median(real):6.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--per-dataset", type=int, default=4)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--warps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    cases: list[Case] = []
    for name, thermal, rgb in load_pairs(args.shared, args.per_dataset, args.scenes):
        for _ in range(args.warps):
            truth = random_rig_homography(rng, RGB_WH, THERMAL_WH)
            cases.append((name, thermal_view(thermal, truth, THERMAL_WH), rgb, truth))
    native = lambda case: est._density(case[3], THERMAL_WH)  # noqa: E731 - RGB px per thermal px under the truth
    row("from truth: native density, fields smoothed 1 px (shipped)", cases, lambda c: refine_from(c[3], c[1], c[2], native(c)))
    with feature_smoothing(0.0):
        row("from truth: native density, fields unsmoothed", cases, lambda c: refine_from(c[3], c[1], c[2], native(c)))
        row("from truth: full RGB resolution, fields unsmoothed", cases, lambda c: refine_from(c[3], c[1], c[2], 1.0))
        start_rng = np.random.default_rng(args.seed + 1)
        row("from truth ±2 px: full RGB resolution, fields unsmoothed", cases,
            lambda c: refine_from(perturbed(c[3], 2.0, start_rng), c[1], c[2], 1.0))
    row("whole estimator (search, candidates, levels)", cases,
        lambda c: estimate_homography([(c[1], c[2])], EstimatorConfig(min_confidence=0.0)).homography)


if __name__ == "__main__":
    main()
