"""Detections as plain arrays, box overlap and non-maximum suppression.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates of the image given to the detector
(the COCO convention: a box's area is ``(x2 - x1) * (y2 - y1)``, no "+1" pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detections", "iou_matrix", "nms"]


@dataclass(frozen=True)
class Detections:
    """What a detector found in one image, sorted by descending score.

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in the pixels of the image passed to ``detect``.
        scores: (N,) float32 confidence in [0, 1].
        classes: (N,) int64 class ids of the detector's own label set (COCO: 0 = person).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __iter__(self):
        """``boxes, scores, classes = detector.detect(image)`` unpacks like a tuple."""
        return iter((self.boxes, self.scores, self.classes))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, keep: np.ndarray) -> "Detections":
        """The detections at indices / mask ``keep`` (order kept)."""
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def above(self, threshold: float) -> "Detections":
        """Only the detections with ``score >= threshold``."""
        return self.select(self.scores >= threshold)

    def of_class(self, class_id: int) -> "Detections":
        return self.select(self.classes == class_id)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of xyxy boxes ``a`` (N,4) and ``b`` (M,4); 0 where both are empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int | None = None) -> np.ndarray:
    """Indices kept by greedy per-class NMS, in descending score order (at most ``max_det``).

    Boxes of different classes never suppress each other (the offset trick of torchvision's
    ``batched_nms``: each class is shifted to its own far-away region before one greedy pass).
    """
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float64)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (np.asarray(classes, np.float64) * span)[:, None]
    order = np.argsort(-np.asarray(scores), kind="stable")
    x1, y1, x2, y2 = shifted.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size and (max_det is None or len(keep) < max_det):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)
