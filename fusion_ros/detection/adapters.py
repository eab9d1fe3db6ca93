"""Decoders for the ONNX output layouts detectors are commonly exported with.

Each adapter turns the raw outputs of one layout into candidate boxes in network-input pixels
and owns the preparation (:class:`~fusion_ros.detection.preprocess.Preprocess`) and the
score / NMS settings of the reference code it reproduces:

- ``yolox``: YOLOX raw head ``[1, N, 5+C]`` on the stride-8/16/32 grid (``N`` = grid cells),
  decoded as YOLOX's demo does; score = objectness × class; YOLOX test settings.
- ``nanodet``: NanoDet (legacy, e.g. NanoDet-m) per-stride outputs, class scores ``[1, Ni, C]``
  (already sigmoid) and GFL distributions ``[1, Ni, 4·(reg_max+1)]``; NanoDet test settings. Centre
  priors are NanoDet's own ``(i + 0.5)·stride``; the resize is INTER_AREA, as in the code the shared
  ONNX file comes from (NanoDet's own pipeline warps with linear interpolation; on the LLVIP pairs the
  choice moves AP50 by up to 0.03, see docs/RESULTS.md).
- ``ultralytics``: Ultralytics YOLOv8/v11 ``[1, 4+C, N]`` decoded boxes without objectness, or
  YOLOv5 ``[1, N, 5+C]`` with objectness, 3 anchors per cell (``N`` = 3 × cells).
- ``boxes``: models exported with NMS: ``boxes [1,K,4]`` + ``scores [1,K]`` + ``classes [1,K]``
  (xyxy in input pixels), or one ``[1,K,6]`` output (x1, y1, x2, y2, score, class).

Layouts are told apart by output count and shape against the grid of the input size
(:func:`detect_layout`): YOLOX's raw head and YOLOv5 share ``[1, N, 85]`` but not ``N``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from fusion_ros.detection.boxes import Detections, nms
from fusion_ros.detection.preprocess import Preprocess
from fusion_ros.errors import ConfigError

__all__ = ["ADAPTERS", "FORMATS", "Adapter", "Output", "Postprocess", "detect_layout", "get_adapter"]


@dataclass(frozen=True)
class Output:
    """One model output as the adapters see it: its name and concrete shape."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Postprocess:
    """Candidate selection of the reference code.

    Attributes:
        conf: minimum score kept before NMS.
        iou: NMS IoU threshold (per class).
        max_det: detections kept per image after NMS (``None``: all).
        multi_label: one candidate per (box, class) above ``conf`` (NanoDet / mmdet) instead of the
            best class per box (YOLOX, Ultralytics predict).
        pre_nms: per-level cap on candidates before NMS (NanoDet's ``nms_pre``), ``None``: none.
        in_model: the model already ran NMS (only ``conf`` applies here).
    """

    conf: float
    iou: float
    max_det: int | None = None
    multi_label: bool = False
    pre_nms: int | None = None
    in_model: bool = False

    def describe(self) -> str:
        if self.in_model:
            return f"score > {self.conf:g}, NMS inside the model"
        parts = [f"score ≥ {self.conf:g}", f"NMS IoU {self.iou:g}"]
        if self.max_det:
            parts.append(f"max {self.max_det}")
        parts.append("multi-label" if self.multi_label else "best class per box")
        return ", ".join(parts)


def _grid_cells(size: tuple[int, int], strides: Sequence[int]) -> list[int]:
    return [math.ceil(size[0] / s) * math.ceil(size[1] / s) for s in strides]


def _select(boxes: np.ndarray, class_scores: np.ndarray, post: Postprocess) -> Detections:
    """Threshold + per-class NMS of dense candidates ``boxes`` (N,4) with ``class_scores`` (N,C)."""
    if post.multi_label:
        idx, cls = np.nonzero(class_scores > post.conf)
        scores = class_scores[idx, cls]
        boxes = boxes[idx]
    else:
        cls = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(cls)), cls]
        keep = scores >= post.conf
        boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
    keep = nms(boxes, scores, cls, post.iou, post.max_det)
    return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), cls[keep].astype(np.int64))


class Adapter(ABC):
    """Decode one output layout. Subclasses set ``name``, ``preprocess`` and ``postprocess``."""

    name: ClassVar[str]
    #: Default preparation; its size is replaced by the model's input size when that is fixed.
    preprocess: ClassVar[Preprocess]
    postprocess: ClassVar[Postprocess]

    def __init__(self, outputs: Sequence[Output], size: tuple[int, int]) -> None:
        """Layouts whose outputs can come in any order find their roles here (the base needs none)."""

    @classmethod
    @abstractmethod
    def matches(cls, outputs: Sequence[Output], size: tuple[int, int]) -> bool:
        """Whether ``outputs`` (for an input of ``size`` = (h, w)) have this layout."""

    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray], size: tuple[int, int], post: Postprocess) -> Detections:
        """Raw outputs (in session order) → detections in network-input pixels."""


class YoloxAdapter(Adapter):
    name = "yolox"
    preprocess = Preprocess((416, 416), channels="bgr", pad_value=114.0, placement="top-left", interpolation="linear")
    postprocess = Postprocess(conf=0.01, iou=0.65)
    strides = (8, 16, 32)

    @classmethod
    def matches(cls, outputs: Sequence[Output], size: tuple[int, int]) -> bool:
        return (
            len(outputs) == 1
            and len(outputs[0].shape) == 3
            and outputs[0].shape[2] > 5
            and outputs[0].shape[1] == sum(_grid_cells(size, cls.strides))
        )

    def decode(self, outputs: Sequence[np.ndarray], size: tuple[int, int], post: Postprocess) -> Detections:
        pred = np.asarray(outputs[0][0], np.float32)
        grids, strides = [], []
        for s in self.strides:
            hs, ws = math.ceil(size[0] / s), math.ceil(size[1] / s)
            yv, xv = np.meshgrid(np.arange(hs), np.arange(ws), indexing="ij")
            grids.append(np.stack((xv, yv), axis=-1).reshape(-1, 2))
            strides.append(np.full((hs * ws, 1), s))
        grid = np.concatenate(grids).astype(np.float32)
        stride = np.concatenate(strides).astype(np.float32)
        centre = (pred[:, :2] + grid) * stride
        wh = np.exp(pred[:, 2:4]) * stride
        boxes = np.concatenate((centre - wh / 2, centre + wh / 2), axis=1)
        return _select(boxes, pred[:, 4:5] * pred[:, 5:], post)


class NanodetAdapter(Adapter):
    name = "nanodet"
    preprocess = Preprocess(
        (416, 416),
        channels="bgr",
        mean=(103.53, 116.28, 123.675),
        std=(57.375, 57.12, 58.395),
        pad_value=0.0,
        placement="center",
        interpolation="area",
    )
    postprocess = Postprocess(conf=0.05, iou=0.6, max_det=100, multi_label=True, pre_nms=1000)
    strides = (8, 16, 32)
    reg_max = 7

    @classmethod
    def _pairs(cls, outputs: Sequence[Output], size: tuple[int, int]) -> list[tuple[int, int]] | None:
        """(class output index, distribution output index) per stride, or None when not this layout."""
        if len(outputs) != 2 * len(cls.strides) or any(len(o.shape) != 3 for o in outputs):
            return None
        bins = 4 * (cls.reg_max + 1)
        pairs = []
        for cells in _grid_cells(size, cls.strides):
            level = [i for i, o in enumerate(outputs) if o.shape[1] == cells]
            if len(level) != 2:
                return None
            dist = [i for i in level if outputs[i].shape[2] == bins]
            if not dist:
                return None
            reg = dist[-1]  # a 32-class model: both match; NanoDet exports class scores first
            pairs.append((next(i for i in level if i != reg), reg))
        return pairs

    @classmethod
    def matches(cls, outputs: Sequence[Output], size: tuple[int, int]) -> bool:
        return cls._pairs(outputs, size) is not None

    def __init__(self, outputs: Sequence[Output], size: tuple[int, int]) -> None:
        pairs = self._pairs(outputs, size)
        if pairs is None:
            raise ConfigError("outputs are not NanoDet's per-stride class + distribution layout")
        self.pairs = pairs

    def decode(self, outputs: Sequence[np.ndarray], size: tuple[int, int], post: Postprocess) -> Detections:
        project = np.arange(self.reg_max + 1, dtype=np.float32)
        all_boxes, all_scores = [], []
        for s, (ci, ri) in zip(self.strides, self.pairs):
            scores = np.asarray(outputs[ci][0], np.float32)
            logits = np.asarray(outputs[ri][0], np.float32).reshape(-1, self.reg_max + 1)
            logits = logits - logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            dist = (prob @ project).reshape(-1, 4) * s
            hs, ws = math.ceil(size[0] / s), math.ceil(size[1] / s)
            yv, xv = np.meshgrid((np.arange(hs) + 0.5) * s, (np.arange(ws) + 0.5) * s, indexing="ij")
            cx, cy = xv.reshape(-1), yv.reshape(-1)
            if post.pre_nms and scores.shape[0] > post.pre_nms:
                top = np.argsort(-scores.max(axis=1), kind="stable")[: post.pre_nms]
                scores, dist, cx, cy = scores[top], dist[top], cx[top], cy[top]
            boxes = np.stack((cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]), axis=1)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, size[1])
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, size[0])
            all_boxes.append(boxes)
            all_scores.append(scores)
        return _select(np.concatenate(all_boxes), np.concatenate(all_scores), post)


_ULTRALYTICS_PREP = Preprocess((640, 640), channels="rgb", scale=1 / 255, pad_value=114.0, placement="center")


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate((xywh[:, :2] - xywh[:, 2:4] / 2, xywh[:, :2] + xywh[:, 2:4] / 2), axis=1)


class UltralyticsAdapter(Adapter):
    """Ultralytics exports: YOLOv8/v11 ``[1, 4+C, N]`` (no objectness) or YOLOv5 ``[1, 3N, 5+C]``.

    Both carry decoded ``cx, cy, w, h`` in input pixels; the selection is the ``ultralytics``
    package's (which also runs YOLOv5 "u" models): best class per box, NMS IoU 0.7, max 300.
    """

    name = "ultralytics"
    preprocess = _ULTRALYTICS_PREP
    postprocess = Postprocess(conf=0.001, iou=0.7, max_det=300)
    strides = (8, 16, 32)

    @classmethod
    def _variant(cls, outputs: Sequence[Output], size: tuple[int, int]) -> str | None:
        if len(outputs) != 1 or len(outputs[0].shape) != 3:
            return None
        cells = sum(_grid_cells(size, cls.strides))
        _, a, b = outputs[0].shape
        if b == cells and a > 4:
            return "v8"
        if a == 3 * cells and b > 5:
            return "v5"
        return None

    @classmethod
    def matches(cls, outputs: Sequence[Output], size: tuple[int, int]) -> bool:
        return cls._variant(outputs, size) is not None

    def __init__(self, outputs: Sequence[Output], size: tuple[int, int]) -> None:
        self.variant = self._variant(outputs, size)

    def decode(self, outputs: Sequence[np.ndarray], size: tuple[int, int], post: Postprocess) -> Detections:
        if self.variant == "v8":
            pred = np.asarray(outputs[0][0], np.float32).T
            return _select(_xywh_to_xyxy(pred[:, :4]), pred[:, 4:], post)
        pred = np.asarray(outputs[0][0], np.float32)
        return _select(_xywh_to_xyxy(pred[:, :4]), pred[:, 4:5] * pred[:, 5:], post)


class BoxesAdapter(Adapter):
    """Final detections from a model with NMS inside; only the score threshold is applied here."""

    name = "boxes"
    preprocess = _ULTRALYTICS_PREP
    postprocess = Postprocess(conf=0.0, iou=1.0, in_model=True)

    @staticmethod
    def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[1:] if len(shape) >= 2 and shape[0] == 1 else shape

    @classmethod
    def _roles(cls, outputs: Sequence[Output]) -> tuple[int, int | None, int | None] | None:
        """Indices of (boxes, scores, classes) outputs; (i, None, None) for one (K,6) output."""
        shapes = [cls._squeeze(o.shape) for o in outputs]
        if len(outputs) == 1:
            return (0, None, None) if len(shapes[0]) == 2 and shapes[0][1] == 6 else None
        box = [i for i, s in enumerate(shapes) if len(s) == 2 and s[1] == 4]
        if len(box) != 1:
            return None
        k = shapes[box[0]][0]
        flat = [i for i, s in enumerate(shapes) if s == (k,) and i != box[0]]
        if len(flat) != 2:
            return None
        named = {outputs[i].name.lower(): i for i in flat}
        score = next((i for n, i in named.items() if "score" in n or "conf" in n), flat[0])
        label = next(i for i in flat if i != score)
        return box[0], score, label

    @classmethod
    def matches(cls, outputs: Sequence[Output], size: tuple[int, int]) -> bool:
        return cls._roles(outputs) is not None

    def __init__(self, outputs: Sequence[Output], size: tuple[int, int]) -> None:
        roles = self._roles(outputs)
        if roles is None:
            raise ConfigError("outputs are not a boxes/scores/classes layout")
        self.roles = roles

    def decode(self, outputs: Sequence[np.ndarray], size: tuple[int, int], post: Postprocess) -> Detections:
        bi, si, ci = self.roles
        if si is None:
            table = np.asarray(outputs[bi], np.float32).reshape(-1, 6)
            boxes, scores, classes = table[:, :4], table[:, 4], table[:, 5]
        else:
            boxes = np.asarray(outputs[bi], np.float32).reshape(-1, 4)
            scores = np.asarray(outputs[si], np.float32).reshape(-1)
            classes = np.asarray(outputs[ci]).reshape(-1)
        keep = scores > post.conf  # exporters pad the fixed K rows with zero scores
        order = np.argsort(-scores[keep], kind="stable")
        return Detections(
            boxes[keep][order].astype(np.float32),
            scores[keep][order].astype(np.float32),
            np.rint(classes[keep][order]).astype(np.int64),
        )


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a for a in (YoloxAdapter, NanodetAdapter, UltralyticsAdapter, BoxesAdapter)
}
#: Values of ``--detector-format``.
FORMATS: tuple[str, ...] = ("auto", *ADAPTERS)


def _describe(outputs: Sequence[Output]) -> str:
    return ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)


def detect_layout(outputs: Sequence[Output], size: tuple[int, int]) -> str:
    """The adapter name whose layout ``outputs`` have; a clear error when none or several match."""
    found = [name for name, a in ADAPTERS.items() if a.matches(outputs, size)]
    if len(found) == 1:
        return found[0]
    what = "no known layout" if not found else f"several layouts ({', '.join(found)})"
    raise ConfigError(
        f"detector outputs ({_describe(outputs)}) for a {size[1]}x{size[0]} input match {what}; "
        f"give --detector-format one of {', '.join(ADAPTERS)}"
    )


def get_adapter(name: str, outputs: Sequence[Output], size: tuple[int, int]) -> Adapter:
    """An adapter instance for ``name`` (checked against ``outputs``), or the detected layout for ``auto``."""
    if name == "auto":
        name = detect_layout(outputs, size)
    if name not in ADAPTERS:
        raise ConfigError(f"unknown detector format {name!r}; valid: {', '.join(FORMATS)}")
    cls = ADAPTERS[name]
    if not cls.matches(outputs, size):
        raise ConfigError(
            f"detector outputs ({_describe(outputs)}) for a {size[1]}x{size[0]} input are not the {name} layout"
        )
    return cls(outputs, size)
