"""Detections drawn on an image and counted, for the comparison page and the README picture."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fusion_ros.detection.boxes import Detections
from fusion_ros.detection.labels import COCO_CLASSES

__all__ = ["class_counts", "counts_text", "draw_detections"]

_COLOURS = ((255, 64, 32), (32, 200, 255), (255, 210, 0), (120, 255, 80), (255, 80, 220))


def _name(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else str(c)


def class_counts(detections: Detections, threshold: float, names: Sequence[str] = COCO_CLASSES) -> dict[str, int]:
    """{class name: detections with score ≥ threshold}, most frequent first."""
    kept = detections.above(threshold)
    return dict(Counter(_name(names, int(c)) for c in kept.classes).most_common())


def counts_text(counts: dict[str, int]) -> str:
    """``"3 person, 1 car"`` or ``"nothing"``."""
    return ", ".join(f"{n} {name}" for name, n in counts.items()) or "nothing"


def draw_detections(image: np.ndarray, detections: Detections, threshold: float, names: Sequence[str] = COCO_CLASSES) -> np.ndarray:
    """A uint8 RGB copy of ``image`` (RGB or grey) with boxes and ``name score`` labels for scores ≥ threshold."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    canvas = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    h, w = rgb.shape[:2]
    line = max(1, round(min(h, w) / 200))
    font = ImageFont.load_default(size=max(10, min(h, w) // 32))
    kept = detections.above(threshold)
    for box, score, c in zip(kept.boxes, kept.scores, kept.classes):
        colour = _COLOURS[int(c) % len(_COLOURS)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = f"{_name(names, int(c))} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        y_text = y1 - (bottom - top) - 2 * line if y1 - (bottom - top) - 2 * line >= 0 else y1
        draw.rectangle((x1, y_text, x1 + (right - left) + 2 * line, y_text + (bottom - top) + 2 * line), fill=colour)
        draw.text((x1 + line, y_text + line - (top - y1)), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
