"""Registration on rigs of several resolutions and aspect ratios, generated scenes with known warps.

Generated scenes (no ../shared needed) rendered at the RGB size, thermal view through seeded full rig
warps (as ``benchmarks/registration.py``). Per rig: corner error in RGB pixels and in pixels of the
coarser camera, the confidence, and the time per estimate; then all rigs together, in coarser-camera
pixels. ``--compare`` also runs the estimator without its final patch-consensus stage.

    PYTHONPATH=$PWD python benchmarks/registration_rigs.py --seeds 8 --compare
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from fusion_ros.registration import EstimatorConfig, RegistrationError, corner_error, estimate_homography
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair

#: (RGB (W, H), thermal (w, h)): the benchmarks' rig, a FLIR Lepton beside an HD camera, a thermal image sharper
#: than the RGB one, a 640x512 core beside a full-HD camera, a 384x288 core beside a VGA camera.
RIGS = (((640, 512), (320, 256)), ((1280, 720), (160, 120)), ((320, 240), (640, 512)), ((1920, 1080), (640, 512)),
        ((640, 480), (384, 288)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--compare", action="store_true", help="also without the patch-consensus stage")
    args = ap.parse_args()
    variants = {"estimator": EstimatorConfig(min_confidence=0.0)}
    if args.compare:
        variants["without patch consensus"] = EstimatorConfig(min_confidence=0.0, patch_consensus=False)
    overall: dict[str, list[float]] = {name: [] for name in variants}
    for rgb_wh, thermal_wh in RIGS:
        # RGB px per pixel of the coarser camera at the resolution ratio (the field-of-view ratio moves it by up to 40 %)
        coarse = max(rgb_wh[0] / thermal_wh[0], 1.0)
        for name, config in variants.items():
            errors, confidences, seconds = [], [], []
            for seed in range(args.seeds):
                thermal, rgb = render_pair(1.0 + seed, rgb_wh[1], rgb_wh[0], seed=seed)
                truth = random_rig_homography(np.random.default_rng(300 + seed), rgb_wh, thermal_wh)
                start = time.perf_counter()
                try:
                    result = estimate_homography([(thermal_view(thermal, truth, thermal_wh), rgb)], config)
                    errors.append(corner_error(result.homography, truth, thermal_wh))
                    confidences.append(result.confidence)
                except RegistrationError:
                    errors.append(math.inf)
                    confidences.append(math.nan)
                seconds.append(time.perf_counter() - start)
            e = np.array(errors)
            overall[name].extend(e / coarse)
            print(f"RGB {rgb_wh[0]}x{rgb_wh[1]}, thermal {thermal_wh[0]}x{thermal_wh[1]} ({name}): corner error "
                  f"{np.round(e, 2)} RGB px, {np.round(e / coarse, 2)} coarser-camera px; confidence {np.round(confidences, 2)}; "
                  f"{np.median(seconds):.2f} s/estimate", flush=True)
    print("\n== all rigs, corner error in pixels of the coarser camera")
    for name, errs in overall.items():
        e = np.array(errs)
        print(f"{name:24s} median {np.median(e):5.2f}  p90 {np.percentile(e, 90, method='higher'):6.2f}  "
              f"<= 0.5 px {100 * np.mean(e <= 0.5):5.1f} %  <= 1 px {100 * np.mean(e <= 1):5.1f} %  (n={len(e)})")


if __name__ == "__main__":
    main()
