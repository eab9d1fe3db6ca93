"""How well are the datasets themselves registered? Local offsets at the dataset's own alignment.

Ground truth "by construction" (``benchmarks/registration.py``) is the dataset's registration
composed with a known warp, so any misregistration of the dataset counts as estimator error. This
measures it without any warp: both images of a pair at 640x512, edge-orientation fields
(unsmoothed) on a grid of 64 px patches, each thermal patch matched in the RGB field within
±12 px (normalised cross-correlation); a patch counts when its peak is ≥ 0.3 and not on the search
border. A dataset registered exactly gives offsets scattered around (0, 0); a consistent offset
over many patches is a misregistration of the pair.

    PYTHONPATH=$PWD python benchmarks/registration_dataset_offsets.py --shared ../shared --per-dataset 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fusion_ros.registration.features import structure_features, to_gray
from registration import DATASETS, load_pairs

PATCH, RADIUS, MIN_PEAK = 64, 12, 0.3


def patch_offsets(thermal: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(N, 2) offsets (RGB px, x then y) of the confident patches: where each thermal patch's edges lie in the RGB frame."""
    ft = structure_features(to_gray(thermal, "thermal"), smooth=0.0)
    fr = structure_features(to_gray(rgb, "rgb"), smooth=0.0)
    h, w = ft.shape[:2]
    out = []
    for y in range(RADIUS, h - PATCH - RADIUS, PATCH):
        for x in range(RADIUS, w - PATCH - RADIUS, PATCH):
            template = ft[y:y + PATCH, x:x + PATCH]
            if np.abs(template).sum() < 0.05 * PATCH * PATCH:  # too little thermal structure to match
                continue
            score = cv2.matchTemplate(fr[y - RADIUS:y + PATCH + RADIUS, x - RADIUS:x + PATCH + RADIUS], template, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px, py) = cv2.minMaxLoc(score)
            if peak >= MIN_PEAK and 0 < px < score.shape[1] - 1 and 0 < py < score.shape[0] - 1:
                out.append((px - RADIUS, py - RADIUS))
    return np.array(out, np.float64).reshape(-1, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--per-dataset", type=int, default=10)
    args = ap.parse_args()
    magnitudes: dict[str, list[float]] = {name: [] for name in DATASETS}
    print(f"{'pair':28s} patches  median offset (dx, dy) px  spread (MAD) px")
    for name, thermal, rgb in load_pairs(args.shared, args.per_dataset, scenes=0):
        offsets = patch_offsets(thermal, rgb)
        if len(offsets) < 5:
            print(f"{name:28s} {len(offsets):7d}  too few confident patches")
            continue
        med = np.median(offsets, axis=0)
        mad = np.median(np.abs(offsets - med), axis=0)
        magnitudes[name.split("/")[0]].append(float(np.hypot(*med)))
        print(f"{name:28s} {len(offsets):7d}  ({med[0]:+5.1f}, {med[1]:+5.1f})             ({mad[0]:.1f}, {mad[1]:.1f})")
    print("\n== |median offset| per dataset (pairs with >= 5 confident patches)")
    for name, mags in magnitudes.items():
        if mags:
            m = np.array(mags)
            print(f"{name:10s} n={len(m):2d}  median {np.median(m):4.1f} px  max {m.max():4.1f} px  pairs >= 2 px: {int((m >= 2).sum())}")


if __name__ == "__main__":
    main()
