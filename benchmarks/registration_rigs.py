"""Registration on other rigs than the benchmarks' 640x512 RGB / 320x256 thermal: resolutions and aspect ratios.

Generated scenes (no ../shared needed) rendered at the RGB size, thermal view through seeded full rig
warps (as ``benchmarks/registration.py``). Per rig: corner error in RGB pixels and in pixels of the
coarser camera, the confidence, and the time per estimate.

    PYTHONPATH=$PWD python benchmarks/registration_rigs.py --seeds 3
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from fusion_ros.registration import EstimatorConfig, RegistrationError, corner_error, estimate_homography
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair

#: (RGB (W, H), thermal (w, h)): a FLIR Lepton beside an HD camera, a thermal image sharper than the RGB one,
#: a 640x512 core beside a full-HD camera, a 384x288 core beside a VGA camera.
RIGS = (((1280, 720), (160, 120)), ((320, 240), (640, 512)), ((1920, 1080), (640, 512)), ((640, 480), (384, 288)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    for rgb_wh, thermal_wh in RIGS:
        # RGB px per pixel of the coarser camera at the resolution ratio (the field-of-view ratio moves it by up to 40 %)
        coarse = max(rgb_wh[0] / thermal_wh[0], 1.0)
        errors, confidences, seconds = [], [], []
        for seed in range(args.seeds):
            thermal, rgb = render_pair(1.0 + seed, rgb_wh[1], rgb_wh[0], seed=seed)
            truth = random_rig_homography(np.random.default_rng(300 + seed), rgb_wh, thermal_wh)
            start = time.perf_counter()
            try:
                result = estimate_homography([(thermal_view(thermal, truth, thermal_wh), rgb)], EstimatorConfig(min_confidence=0.0))
                errors.append(corner_error(result.homography, truth, thermal_wh))
                confidences.append(result.confidence)
            except RegistrationError:
                errors.append(math.inf)
                confidences.append(math.nan)
            seconds.append(time.perf_counter() - start)
        e = np.array(errors)
        print(f"RGB {rgb_wh[0]}x{rgb_wh[1]}, thermal {thermal_wh[0]}x{thermal_wh[1]}: corner error {np.round(e, 2)} RGB px, "
              f"{np.round(e / coarse, 2)} coarser-camera px; confidence {np.round(confidences, 2)}; "
              f"{np.median(seconds):.2f} s/estimate", flush=True)


if __name__ == "__main__":
    main()
