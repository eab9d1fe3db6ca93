"""Average precision of detections against ground truth (PASCAL VOC / COCO definitions).

Matching follows the VOC devkit: within one image, detections of a class are taken by descending
score; each goes to the ground-truth box it overlaps most; it is a true positive when that IoU is
≥ the threshold and the box is not taken yet, ignored when the box is "difficult", else a false
positive. Boxes are continuous pixel coordinates (no VOC "+1").

Matching never crosses images, so each image's matches are computed once (:func:`match_image`) and
any multiset of images — the whole set, or a bootstrap resample — is scored by weighting them
(:func:`ap_from_matches`): ``k`` copies of an image give the same AP as its detections repeated
``k`` times, because a run of equal-score copies moves along the PR curve monotonically.

Interpolations: ``"all"`` (VOC 2010+ all-point area under the precision envelope), ``"11"``
(VOC 2007 11-point), ``"coco"`` (COCO's 101 recall points, for checking against pycocotools).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from fusion_ros.detection.boxes import Detections, iou_matrix
from fusion_ros.detection.labels import GroundTruth
from fusion_ros.errors import InputError

__all__ = [
    "COCO_IOUS",
    "ClassScores",
    "ImageMatches",
    "ap_from_matches",
    "average_precision",
    "evaluate_images",
    "match_image",
    "pr_curve",
]

#: IoU thresholds of AP50:95 (COCO).
COCO_IOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

Interpolation = Literal["all", "11", "coco"]


@dataclass(frozen=True)
class ImageMatches:
    """One image's detections of one class, matched at several IoU thresholds.

    Attributes:
        scores: (n,) detection scores, descending.
        tp: (T, n) true positive at threshold t.
        ignored: (T, n) matched a difficult box at threshold t (neither TP nor FP).
        npos: non-difficult ground-truth boxes of the class.
    """

    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    npos: int


def match_image(det: Detections, gt: GroundTruth, class_id: int, ious: Sequence[float] = COCO_IOUS) -> ImageMatches:
    """Match ``det``'s boxes of ``class_id`` to ``gt``'s at every threshold in ``ious`` (VOC rule)."""
    d = det.of_class(class_id)
    order = np.argsort(-d.scores, kind="stable")
    boxes, scores = d.boxes[order], d.scores[order]
    sel = gt.classes == class_id
    g_boxes, g_diff = gt.boxes[sel], gt.difficult[sel]
    t, n = len(ious), len(scores)
    tp = np.zeros((t, n), bool)
    ignored = np.zeros((t, n), bool)
    if n and len(g_boxes):
        overlap = iou_matrix(boxes, g_boxes)
        best = overlap.argmax(axis=1)
        best_iou = overlap[np.arange(n), best]
        for k, thr in enumerate(ious):
            taken = np.zeros(len(g_boxes), bool)
            for i in range(n):
                if best_iou[i] < thr:
                    continue
                j = best[i]
                if g_diff[j]:
                    ignored[k, i] = True
                elif not taken[j]:
                    taken[j] = True
                    tp[k, i] = True
    return ImageMatches(scores.astype(np.float64), tp, ignored, int((~g_diff).sum()))


def _cumulative(matches: Sequence[ImageMatches], weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Weighted cumulative TP and FP along descending score over all images, the scores, and npos."""
    npos = float(sum(w * m.npos for w, m in zip(weights, matches)))
    parts = [(m.scores, m.tp[k], m.ignored[k], np.full(len(m.scores), w)) for m, w in zip(matches, weights) if w > 0]
    if not parts:
        empty = np.zeros(0)
        return empty, empty, empty, npos
    scores, tp, ign, w = (np.concatenate(x) for x in zip(*parts))
    keep = ~ign
    scores, tp, w = scores[keep], tp[keep], w[keep]
    order = np.argsort(-scores, kind="stable")
    tp, w = tp[order], w[order]
    return np.cumsum(w * tp), np.cumsum(w * ~tp), scores[order], npos


def pr_curve(matches: Sequence[ImageMatches], k: int = 0, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, score) after each detection, in descending score order, at threshold index ``k``."""
    w = np.ones(len(matches)) if weights is None else np.asarray(weights, float)
    ctp, cfp, scores, npos = _cumulative(matches, w, k)
    recall = ctp / npos if npos > 0 else np.full(len(ctp), np.nan)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).tiny)
    return recall, precision, scores


def _area(recall: np.ndarray, precision: np.ndarray, interpolation: Interpolation) -> float:
    if interpolation == "11":
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    if interpolation == "all":
        step = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))
    if interpolation == "coco":
        env = mpre[1:-1]
        idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        return float(np.mean([env[i] if i < len(env) else 0.0 for i in idx]))
    raise InputError(f"unknown AP interpolation {interpolation!r}; valid: all, 11, coco")


def ap_from_matches(
    matches: Sequence[ImageMatches], k: int = 0, interpolation: Interpolation = "all", weights: np.ndarray | None = None
) -> float:
    """AP at threshold index ``k`` over images weighted by ``weights`` (copies); NaN without ground truth."""
    recall, precision, _ = pr_curve(matches, k, weights)
    if len(recall) == 0:
        w = np.ones(len(matches)) if weights is None else np.asarray(weights, float)
        return 0.0 if sum(wi * m.npos for wi, m in zip(w, matches)) > 0 else float("nan")
    if np.isnan(recall[0]):
        return float("nan")
    return _area(recall, precision, interpolation)


def _check(detections: Sequence[Detections], truths: Sequence[GroundTruth]) -> None:
    if len(detections) != len(truths):
        raise InputError(f"{len(detections)} detection lists for {len(truths)} labelled images")


def average_precision(
    detections: Sequence[Detections],
    truths: Sequence[GroundTruth],
    class_id: int = 0,
    iou: float = 0.5,
    interpolation: Interpolation = "all",
) -> float:
    """AP of ``class_id`` over a list of images (``detections[i]`` against ``truths[i]``)."""
    _check(detections, truths)
    matches = [match_image(d, g, class_id, (iou,)) for d, g in zip(detections, truths)]
    return ap_from_matches(matches, 0, interpolation)


@dataclass(frozen=True)
class ClassScores:
    """Detection quality of one class over an image set.

    Attributes:
        ap50, ap50_11pt: AP at IoU 0.5, all-point and 11-point.
        ap50_95: mean all-point AP over IoU 0.50:0.05:0.95.
        recall, precision: at IoU 0.5 for detections with score ≥ the threshold.
        n_gt: non-difficult ground-truth boxes; n_det: detections with score ≥ the threshold.
        matches: per-image matches (for curves and the bootstrap).
    """

    ap50: float
    ap50_11pt: float
    ap50_95: float
    recall: float
    precision: float
    n_gt: int
    n_det: int
    matches: tuple[ImageMatches, ...]


def evaluate_images(
    detections: Sequence[Detections], truths: Sequence[GroundTruth], class_ids: Sequence[int] | None = None, score_threshold: float = 0.3
) -> dict[int, ClassScores]:
    """Per-class scores of detections over labelled images; classes default to those in the labels."""
    _check(detections, truths)
    if class_ids is None:
        class_ids = sorted({int(c) for g in truths for c in g.classes})
    out: dict[int, ClassScores] = {}
    for c in class_ids:
        matches = tuple(match_image(d, g, c) for d, g in zip(detections, truths))
        recall, precision, scores = pr_curve(matches, 0)
        above = int((scores >= score_threshold).sum())
        out[c] = ClassScores(
            ap50=ap_from_matches(matches, 0, "all"),
            ap50_11pt=ap_from_matches(matches, 0, "11"),
            ap50_95=float(np.mean([ap_from_matches(matches, k, "all") for k in range(len(COCO_IOUS))])),
            recall=float(recall[above - 1]) if above else 0.0,
            precision=float(precision[above - 1]) if above else float("nan"),
            n_gt=sum(m.npos for m in matches),
            n_det=int(sum((m.scores >= score_threshold).sum() for m in matches)),
            matches=matches,
        )
    return out
