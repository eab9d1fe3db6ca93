"""What a misaligned thermal camera costs, and what automatic registration gives back.

The labelled LLVIP night pairs (../shared/data/llvip, resized to 640x512) are misaligned on
purpose: the thermal image is shifted by d ∈ {0, 2, 5, 10, 20} px in a seeded random direction.
For each d the default method fuses (a) the misaligned pair as is (identity homography) and (b)
the pair with the homography estimated by :func:`estimate_homography` from that one pair.
Reported: Qabf and SSIM of the fused image against the *aligned* sources (edges in the wrong
place do not count), and person AP50 of YOLOX-Nano on the fused frames when the detection API
(``fusion_ros.detection``) is importable.

    PYTHONPATH=$PWD python benchmarks/registration_cost.py --shared ../shared
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

from fusion_ros.config import RegistrationConfig
from fusion_ros.fuser import Fuser
from fusion_ros.imageio import read_image, read_thermal
from fusion_ros.metrics import qabf, ssim_index
from fusion_ros.registration import RegistrationError, estimate_homography, EstimatorConfig
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.thermal import INDEPENDENT_FRAMES

SIZE = (640, 512)


def shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--offsets", default="0,2,5,10,20")
    ap.add_argument("--limit", type=int, default=30, help="labelled pairs used")
    ap.add_argument("--detector", default="yolox_nano.onnx")
    args = ap.parse_args()
    root = args.shared / "data" / "llvip"
    names = sorted(p.stem for p in (root / "labels").glob("*.xml"))[: args.limit]
    originals = [read_image(root / "vi" / f"{n}.jpg") for n in names]
    vis = [cv2.resize(v, SIZE, interpolation=cv2.INTER_AREA) for v in originals]
    irs = [cv2.resize(read_thermal(root / "ir" / f"{n}.jpg"), SIZE, interpolation=cv2.INTER_AREA) for n in names]
    try:
        from fusion_ros.detection import average_precision, load_detector, read_labels

        det = load_detector(args.shared / "detectors" / args.detector, threads=1)
        gts = []
        for n, v in zip(names, originals):  # VOC boxes are in the original pixels: scale them to SIZE
            gt = read_labels(root / "labels" / f"{n}.xml", v.shape[:2])[0]
            sx, sy = SIZE[0] / v.shape[1], SIZE[1] / v.shape[0]
            gts.append(dataclasses.replace(gt, boxes=gt.boxes * np.array([sx, sy, sx, sy])))
    except ImportError:
        det = None
        print("fusion_ros.detection is not available here: fusion metrics only")
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * math.pi, len(names))
    fuse = Fuser(DEFAULT_METHOD, thermal=INDEPENDENT_FRAMES)
    print(f"method {DEFAULT_METHOD}, {len(names)} LLVIP pairs at {SIZE[0]}x{SIZE[1]}")
    print("offset px | registration | Qabf  | SSIM(vis) | SSIM(ir) | AP50 | corner err px | refused")
    for d in [float(x) for x in args.offsets.split(",")]:
        moved = [shift(ir, d * math.cos(a), d * math.sin(a)) for ir, a in zip(irs, angles)]
        for mode in ("none", "auto"):
            fused_all, errs, refused = [], [], 0
            for ir, vi, mv, a in zip(irs, vis, moved, angles):
                homography = None
                if mode == "auto":
                    try:
                        res = estimate_homography([(mv, vi)], EstimatorConfig())
                        homography = res.as_list()
                        # shift() moves the content by +d: thermal pixel x shows what RGB pixel x - d shows.
                        truth = np.array([[1, 0, -d * math.cos(a)], [0, 1, -d * math.sin(a)], [0, 0, 1]])
                        corners = np.array([[0, 0, 1], [639, 0, 1], [639, 511, 1], [0, 511, 1]], float).T
                        p, q = res.homography @ corners, truth @ corners
                        errs.append(float(np.linalg.norm(p[:2] / p[2] - q[:2] / q[2], axis=0).mean()))
                    except RegistrationError:
                        refused += 1  # fuse with the identity, as the node keeps its matrix
                fuse.reconfigure(fuse.config.thermal, RegistrationConfig(None if homography is None else tuple(homography)))
                fused_all.append(fuse(mv, vi).copy())  # the Fuser may reuse its output buffer
            grey = lambda x: x.astype(np.float32).mean(axis=2) if x.ndim == 3 else x.astype(np.float32)
            q = np.mean([qabf(grey(vi), grey(ir), grey(f)) for vi, ir, f in zip(vis, irs, fused_all)])
            s_vi = np.mean([ssim_index(grey(vi), grey(f)) for vi, f in zip(vis, fused_all)])
            s_ir = np.mean([ssim_index(grey(ir), grey(f)) for ir, f in zip(irs, fused_all)])
            ap50 = float("nan")
            if det is not None:
                ap50 = average_precision([det.detect(f) for f in fused_all], gts, class_id=0, iou=0.5, interpolation="all")
            err = f"{np.median(errs):.2f}" if errs else "-"
            print(f"{d:9.0f} | {mode:12s} | {q:.3f} | {s_vi:9.3f} | {s_ir:8.3f} | {ap50:.3f} | {err:>13s} | {refused}", flush=True)


if __name__ == "__main__":
    main()
