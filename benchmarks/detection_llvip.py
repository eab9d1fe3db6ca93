"""Person AP50 of two unchanged COCO detectors on RGB, CLAHE-RGB, thermal and each weight-free method's fused frame.

Measures the default-method goal of issue 14 on ``../shared/data/llvip`` (30 labelled night pairs)
with ``../shared/detectors`` (YOLOX-Nano, NanoDet-m), pre- and post-processing as that folder's
README gives them. Reports VOC all-point AP50 per input and detector (``rgb-exposed``: the RGB frame
through the default method with no thermal information, i.e. its tone alone), paired image-bootstrap 95 %
intervals of the default's difference to RGB, CLAHE-RGB and ``average``, AP50 on two disjoint
halves of the pairs (first/last 15), and how often the default wins on 500 random halves. Until ``fusion-ros evaluate --detector`` exists this is
the command behind the detection table of ``docs/RESULTS.md``; it needs ../shared and is not a test.

    python benchmarks/detection_llvip.py [--shared ../shared] [--boot 2000] [--downscale 2]
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from fusion_ros.color import luma
from fusion_ros.fuser import Fuser, fused_arrays, visible_planes
from fusion_ros.imageio import read_thermal, read_visible
from fusion_ros.registry import DEFAULT_METHOD

METHODS = ("average", "max", "pyramid", "balanced")
BASELINES = ("rgb", "clahe", "average")


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    order, keep = scores.argsort()[::-1], []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter + 1e-9) <= thr]
    return np.array(keep, dtype=int)


class Detector:
    """One of the two shared ONNX detectors, person boxes only (x1,y1,x2,y2 in image pixels, score)."""

    def __init__(self, path: Path) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.yolox = "yolox" in path.name
        self.input = self.session.get_inputs()[0].name

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = bgr.shape[:2]
        r = min(416 / h, 416 / w)
        nh, nw = int(h * r), int(w * r)
        resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if self.yolox:  # BGR 0..255 into a 114-grey canvas at the top-left
            img, top, left = np.full((416, 416, 3), 114.0, np.float32), 0, 0
        else:  # mean/std normalised, centred keep-ratio canvas
            resized = (resized - (103.53, 116.28, 123.675)) / (57.375, 57.12, 58.395)
            img, top, left = np.zeros((416, 416, 3), np.float32), (416 - nh) // 2, (416 - nw) // 2
        img[top : top + nh, left : left + nw] = resized
        outs = self.session.run(None, {self.input: np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)})
        boxes, scores = [], []
        for i, stride in enumerate((8, 16, 32)):
            n = 416 // stride
            gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            gx, gy = gx.reshape(-1), gy.reshape(-1)
            if self.yolox:
                o = outs[0][0][sum((416 // s) ** 2 for s in (8, 16, 32)[:i]) :][: n * n]
                cx, cy = (o[:, 0] + gx) * stride, (o[:, 1] + gy) * stride
                bw, bh = np.exp(o[:, 2]) * stride, np.exp(o[:, 3]) * stride
                b = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
                cls, score, thr = o[:, 5:], o[:, 4] * o[:, 5:].max(1), 0.01
            else:  # GFL: softmax over 8 bins per side, distance = expectation × stride
                cls, reg = outs[i][0], outs[i + 3][0].reshape(-1, 4, 8)
                p = np.exp(reg - reg.max(-1, keepdims=True))
                d = (p / p.sum(-1, keepdims=True) * np.arange(8)).sum(-1) * stride
                cx, cy = (gx + 0.5) * stride, (gy + 0.5) * stride
                b = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1)
                score, thr = cls.max(1), 0.05
            keep = (cls.argmax(1) == 0) & (score >= thr)
            boxes.append(b[keep])
            scores.append(score[keep])
        b, s = np.concatenate(boxes), np.concatenate(scores)
        b = (b - (left, top, left, top)) / r
        keep = _nms(b, s, 0.65 if self.yolox else 0.6)[: None if self.yolox else 100]
        return b[keep], s[keep]


def read_boxes(xml: Path) -> np.ndarray:
    """Person boxes of a PASCAL VOC file."""
    rows = [
        [float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        for o in ET.parse(xml).getroot().iter("object")
        if o.find("name").text.strip() == "person"
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def match(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """VOC greedy matching at IoU 0.5: (scores, true-positive flags, number of ground-truth boxes)."""
    order = scores.argsort()[::-1]
    used, tp = np.zeros(len(gt), bool), np.zeros(len(order), bool)
    for j, i in enumerate(order):
        if not len(gt):
            break
        b = boxes[i]
        iw = np.clip(np.minimum(gt[:, 2], b[2]) - np.maximum(gt[:, 0], b[0]), 0, None)
        ih = np.clip(np.minimum(gt[:, 3], b[3]) - np.maximum(gt[:, 1], b[1]), 0, None)
        inter = iw * ih
        iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inter)
        k = int(iou.argmax())
        if iou[k] >= 0.5 and not used[k]:
            used[k] = tp[j] = True
    return scores[order], tp, len(gt)


def average_precision(per_image: list, idx: np.ndarray | None = None) -> float:
    """VOC all-point AP over the images ``idx`` (repeats allowed: bootstrap)."""
    idx = np.arange(len(per_image)) if idx is None else idx
    s = np.concatenate([per_image[i][0] for i in idx])
    t = np.concatenate([per_image[i][1] for i in idx])[np.argsort(-s, kind="stable")]
    tp, fp = np.cumsum(t), np.cumsum(~t)
    rec = np.concatenate([[0.0], tp / max(sum(per_image[i][2] for i in idx), 1), [1.0]])
    prec = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    step = np.nonzero(rec[1:] != rec[:-1])[0]
    return float(((rec[step + 1] - rec[step]) * prec[step + 1]).sum())


def bootstrap(a: list, b: list, n: int, seed: int = 0) -> tuple[float, float]:
    """Paired image-bootstrap 95 % interval of AP(a) − AP(b)."""
    rng = np.random.default_rng(seed)
    d = [average_precision(a, i) - average_precision(b, i) for i in rng.integers(0, len(a), (n, len(a)))]
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def clahe(rgb: np.ndarray) -> np.ndarray:
    """CLAHE (clip 3, 8×8 tiles) on the luminance of an RGB frame, chroma kept."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.createCLAHE(3.0, (8, 8)).apply(ycc[..., 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def exposed_rgb(fuser: Fuser, rgb: np.ndarray) -> np.ndarray:
    """The RGB frame through ``fuser``'s method with its own luminance as the "thermal" frame: what the
    method's tone does without any thermal information (the pyramid of Y with itself is Y)."""
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
    detectors = {name: Detector(args.shared / "detectors" / f) for name, f in (("YOLOX-Nano", "yolox_nano.onnx"), ("NanoDet-m", "nanodet_m_416.onnx"))}
    fusers = {m: Fuser(m, device="cpu") for m in METHODS}
    names = sorted(p.stem for p in (data / "labels").glob("*.xml"))
    inputs = ("rgb", "clahe", "rgb-exposed", "thermal", *METHODS)
    per = {(i, d): [] for i in inputs for d in detectors}
    for name in names:
        ir, rgb = read_thermal(data / "ir" / f"{name}.jpg"), read_visible(data / "vi" / f"{name}.jpg")
        gt = read_boxes(data / "labels" / f"{name}.xml") / args.downscale
        if args.downscale > 1:
            size = (ir.shape[1] // args.downscale, ir.shape[0] // args.downscale)
            ir, rgb = (cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in (ir, rgb))
        frames = {"rgb": rgb, "clahe": clahe(rgb), "rgb-exposed": exposed_rgb(fusers[DEFAULT_METHOD], rgb)}
        frames["thermal"] = np.repeat(ir[..., None], 3, 2)
        frames.update({m: f(ir, rgb) for m, f in fusers.items()})
        for i, frame in frames.items():
            bgr = np.ascontiguousarray(frame[..., ::-1])
            for d, det in detectors.items():
                per[(i, d)].append(match(*det(bgr), gt))
    default = DEFAULT_METHOD
    print(f"{len(names)} pairs, {sum(p[2] for p in per[('rgb', 'YOLOX-Nano')])} person boxes; default = {default}\n")
    print("| input | " + " | ".join(detectors) + " |\n|---|" + "---:|" * len(detectors))
    for i in inputs:
        print(f"| {i} | " + " | ".join(f"{average_precision(per[(i, d)]):.3f}" for d in detectors) + " |")
    print(f"\n{default} − baseline, AP50 difference [paired bootstrap 95 %, {args.boot} resamples]:")
    for base in BASELINES:
        cells = []
        for d in detectors:
            diff = average_precision(per[(default, d)]) - average_precision(per[(base, d)])
            lo, hi = bootstrap(per[(default, d)], per[(base, d)], args.boot)
            cells.append(f"{d} {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"- vs {base}: " + "; ".join(cells))
    half = len(names) // 2
    rng = np.random.default_rng(0)
    splits = [rng.permutation(len(names))[:half] for _ in range(500)]
    print(f"\n500 random halves ({half} pairs): share of halves where {default} has the higher AP50")
    for base in BASELINES:
        cells = []
        for d in detectors:
            wins = np.mean([average_precision(per[(default, d)], i) > average_precision(per[(base, d)], i) for i in splits])
            cells.append(f"{d} {wins:.0%}")
        print(f"- vs {base}: " + ", ".join(cells))
    for label, idx in (("first half", np.arange(half)), ("second half", np.arange(half, len(names)))):
        print(f"\n{label} ({names[idx[0]]}–{names[idx[-1]]}):")
        for i in inputs:
            print(f"- {i}: " + ", ".join(f"{d} {average_precision(per[(i, d)], idx):.3f}" for d in detectors))


if __name__ == "__main__":
    main()
