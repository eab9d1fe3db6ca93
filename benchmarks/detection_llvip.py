"""The default-method check of issue 14: person AP50 of unchanged COCO detectors on RGB, CLAHE-RGB,
RGB with the default's tone alone, thermal, and each weight-free method's fused frame, with the
default's difference to **each baseline** (``fusion-ros evaluate --detector`` reports differences to
RGB only), AP50 on two disjoint halves and how often the default wins on random halves.

Uses the package's detection code (``fusion_ros.detection``: each detector's own preparation, VOC
all-point AP50, paired image bootstrap) on ``../shared/data/llvip`` (30 labelled night pairs) with
``../shared/detectors`` (YOLOX-Nano, NanoDet-m). ``rgb-exposed`` is the RGB frame through the default
method with its own luminance as the "thermal" frame: what its tone does without thermal information.
Needs ../shared; not a test.

    python benchmarks/detection_llvip.py [--shared ../shared] [--boot 2000] [--downscale 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from fusion_ros.color import luma
from fusion_ros.detection import GroundTruth, clahe_rgb, load_detector, match_image, paired_bootstrap, read_labels
from fusion_ros.detection.ap import ap_from_matches
from fusion_ros.fuser import Fuser, fused_arrays, visible_planes
from fusion_ros.imageio import read_thermal, read_visible
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.thermal import INDEPENDENT_FRAMES

METHODS = ("average", "max", "pyramid", "balanced")
BASELINES = ("rgb", "clahe", "average")
PERSON = 0


def exposed_rgb(fuser: Fuser, rgb: np.ndarray) -> np.ndarray:
    """The RGB frame through ``fuser``'s method with its own luminance as the "thermal" frame (the
    pyramid of Y with itself is Y, so only the method's tone acts)."""
    vis = visible_planes([rgb], fuser.device, fuser.dtype)
    with torch.inference_mode():
        return fused_arrays(fuser.fuse_tensor(luma(vis), vis))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--downscale", type=int, default=1, help="shrink both frames by this factor first (2: 640x512, a common thermal size)")
    args = ap.parse_args()
    data = args.shared / "data" / "llvip"
    detectors = {name: load_detector(args.shared / "detectors" / f) for name, f in (("YOLOX-Nano", "yolox_nano.onnx"), ("NanoDet-m", "nanodet_m_416.onnx"))}
    fusers = {m: Fuser(m, device="cpu", thermal=INDEPENDENT_FRAMES) for m in METHODS}
    names = sorted(p.stem for p in (data / "labels").glob("*.xml"))
    inputs = ("rgb", "clahe", "rgb-exposed", "thermal", *METHODS)
    matches = {(i, d): [] for i in inputs for d in detectors}
    for name in names:
        ir, rgb = read_thermal(data / "ir" / f"{name}.jpg"), read_visible(data / "vi" / f"{name}.jpg")
        gt, _ = read_labels(data / "labels" / f"{name}.xml", rgb.shape[:2])
        if args.downscale > 1:
            size = (ir.shape[1] // args.downscale, ir.shape[0] // args.downscale)
            ir, rgb = (cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in (ir, rgb))
            gt = GroundTruth(gt.boxes / args.downscale, gt.classes, gt.difficult)
        frames = {"rgb": rgb, "clahe": clahe_rgb(rgb), "rgb-exposed": exposed_rgb(fusers[DEFAULT_METHOD], rgb), "thermal": ir}
        frames.update({m: f(ir, rgb) for m, f in fusers.items()})
        for i, frame in frames.items():
            for d, det in detectors.items():
                matches[(i, d)].append(match_image(det.detect(frame), gt, PERSON))

    def ap50(i: str, d: str, weights: np.ndarray | None = None) -> float:
        return ap_from_matches(matches[(i, d)], 0, "all", weights)

    default = DEFAULT_METHOD
    size = f"{rgb.shape[1]}x{rgb.shape[0]}"
    print(f"{len(names)} pairs at {size}, {sum(m.npos for m in matches[('rgb', 'YOLOX-Nano')])} person boxes; default = {default}\n")
    print("| input | " + " | ".join(detectors) + " |\n|---|" + "---:|" * len(detectors))
    for i in inputs:
        print(f"| {i} | " + " | ".join(f"{ap50(i, d):.3f}" for d in detectors) + " |")
    print(f"\n{default} − baseline, AP50 difference [paired bootstrap 95 %, {args.boot} resamples]:")
    for base in BASELINES:
        diffs = (paired_bootstrap(matches[(base, d)], matches[(default, d)], rounds=args.boot) for d in detectors)
        print(f"- vs {base}: " + "; ".join(f"{d} {diff.describe()}" for d, diff in zip(detectors, diffs)))
    n, half = len(names), len(names) // 2
    rng = np.random.default_rng(0)
    splits = [np.bincount(rng.permutation(n)[:half], minlength=n).astype(float) for _ in range(500)]
    print(f"\n500 random halves ({half} pairs): share of halves where {default} has a higher AP50")
    for base in BASELINES:
        wins = (np.mean([ap50(default, d, w) > ap50(base, d, w) for w in splits]) for d in detectors)
        print(f"- vs {base}: " + ", ".join(f"{d} {w:.0%}" for d, w in zip(detectors, wins)))
    for label, lo, hi in (("first half", 0, half), ("second half", half, n)):
        w = np.zeros(n)
        w[lo:hi] = 1.0
        print(f"\n{label} ({names[lo]}–{names[hi - 1]}):")
        for i in inputs:
            print(f"- {i}: " + ", ".join(f"{d} {ap50(i, d, w):.3f}" for d in detectors))


if __name__ == "__main__":
    main()
