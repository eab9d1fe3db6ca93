"""Several frames of a sequence against one: the same rig warp, estimated from 1 and from 10 frames.

Sequences: the generated street scene (10 instants 0.3 s apart, people and cars moving) and,
with ../shared, the real M3SVD ``0114_1609`` clip (20 frames of a fixed camera; every other one
used), and two "drives": 10 different RoadScene pairs and 10 different LLVIP pairs under the same
rig warp, what a camera pair on a moving vehicle sees over a few seconds (each dataset's pairs
are registered by its authors, so one warp gives them one truth). Each is resized to 640x512 RGB
and warped to a 320x256 thermal camera by seeded random rig homographies (as
``benchmarks/registration.py``). Reported per sequence: the corner error of the 1-frame estimates
(``--single`` frames spread over the sequence, per warp) and of the 10-frame joint estimate, and
for how many warps the joint estimate beats the median of that warp's single-frame estimates.

    PYTHONPATH=$PWD python benchmarks/registration_sequence.py --shared ../shared --warps 4
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np

from fusion_ros.evaluate import find_pairs
from fusion_ros.imageio import read_image, read_thermal
from fusion_ros.registration import EstimatorConfig, RegistrationError, corner_error, estimate_homography
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair
from registration import RGB_WH, THERMAL_WH, registered_pair


def sequences(shared: Path | None) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    seqs = {"scene": [render_pair(0.3 * i, RGB_WH[1], RGB_WH[0], seed=11) for i in range(10)]}
    if shared is not None:
        root = shared / "data" / "m3svd_seq" / "0114_1609"
        frames = []
        for ir_path in sorted((root / "ir").glob("*.png"))[::2]:
            vi_path = next((root / "vi").glob(ir_path.stem + ".*"))
            frames.append((cv2.resize(read_thermal(ir_path), RGB_WH, interpolation=cv2.INTER_AREA),
                           cv2.resize(read_image(vi_path), RGB_WH, interpolation=cv2.INTER_AREA)))
        seqs["m3svd"] = frames
        for name in ("roadscene", "llvip"):
            pairs = find_pairs(shared / "data" / name)
            chosen = [pairs[i] for i in np.linspace(0, len(pairs) - 1, 10).round().astype(int)]
            seqs[f"{name} drive"] = [registered_pair(p) for p in chosen]
    return seqs



def _estimate(pairs: list[tuple[np.ndarray, np.ndarray]], truth: np.ndarray) -> tuple[float, float]:
    start = time.perf_counter()
    try:
        est = estimate_homography(pairs, EstimatorConfig(min_confidence=0.0)).homography
        return corner_error(est, truth, THERMAL_WH), time.perf_counter() - start
    except RegistrationError:
        return math.inf, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--single", type=int, default=3, help="single frames estimated per warp (spread over the clip)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    for name, frames in sequences(args.shared).items():
        single, joint, t_single, t_joint, wins = [], [], [], [], 0
        for _ in range(args.warps):
            truth = random_rig_homography(rng, RGB_WH, THERMAL_WH)
            pairs = [(thermal_view(th, truth, THERMAL_WH), rgb) for th, rgb in frames]
            for i in np.linspace(0, len(pairs) - 1, args.single).round().astype(int):
                err, sec = _estimate([pairs[i]], truth)
                single.append(err)
                t_single.append(sec)
            err, sec = _estimate(pairs, truth)
            joint.append(err)
            t_joint.append(sec)
            wins += err < np.median(single[-args.single:])
            print(f"{name}: warp {len(joint)}: 1 frame {np.round(single[-args.single:], 2)} px, {len(pairs)} frames {err:.2f} px", flush=True)
        for label, errs, secs in (("1 frame", single, t_single), (f"{len(frames)} frames", joint, t_joint)):
            e = np.array(errs)
            print(f"{name:6s} {label:9s} median {np.median(e):6.2f} px  p90 {np.percentile(e, 90):7.2f}  "
                  f"success<=2px {100 * np.mean(e <= 2):5.1f} %  (n={len(e)}, {np.median(secs):.2f} s/estimate)")
        print(f"{name:6s} joint estimate better than the median of its warp's single frames in {wins} of {len(joint)} warps")


if __name__ == "__main__":
    main()
