"""Each detector's own input preparation: keep-ratio resize, padding, channel order, scaling.

A detector trained on one preparation and fed another loses accuracy silently, so every adapter
states its preparation as a :class:`Preprocess` and the report records it. :meth:`Preprocess.apply`
also returns the :class:`Placement` that maps boxes from the network's input back to the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from fusion_ros.errors import InputError

__all__ = ["Placement", "Preprocess"]

_INTERPOLATION = {"linear": 1, "area": 3}  # cv2.INTER_LINEAR, cv2.INTER_AREA


@dataclass(frozen=True)
class Placement:
    """Where the resized image sits in the network input: ``input = image * scale + offset`` per axis."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    width: int
    height: int

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in network-input pixels → boxes in image pixels, clipped to the image."""
        out = np.asarray(boxes, np.float32).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.offset_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.offset_y) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


@dataclass(frozen=True)
class Preprocess:
    """How one detector family prepares an image.

    Attributes:
        size: network input ``(height, width)``.
        channels: channel order the network expects, ``"bgr"`` or ``"rgb"``.
        scale: factor applied to 0..255 pixel values first (``1/255`` for Ultralytics).
        mean, std: per-channel normalisation after scaling, in the network's channel order.
        pad_value: value of the padding, in 0..255 pixel units (before scaling and normalisation).
        placement: ``"top-left"`` (YOLOX) or ``"center"`` (NanoDet, Ultralytics) for the resized image.
        interpolation: ``"linear"`` or ``"area"`` (OpenCV's resize mode of the reference code).
    """

    size: tuple[int, int]
    channels: Literal["bgr", "rgb"] = "bgr"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: float = 114.0
    placement: Literal["top-left", "center"] = "top-left"
    interpolation: Literal["linear", "area"] = "linear"

    def with_size(self, size: tuple[int, int]) -> "Preprocess":
        return replace(self, size=(int(size[0]), int(size[1])))

    def describe(self) -> str:
        """One line for reports, e.g. ``416x416 BGR 0..255, letterbox top-left pad 114, linear``."""
        norm = "" if self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0) else f", mean {self.mean} std {self.std}"
        rng = "0..1" if self.scale != 1.0 else "0..255"
        return (
            f"{self.size[1]}x{self.size[0]} {self.channels.upper()} {rng}{norm}, keep-ratio resize "
            f"({self.interpolation}) placed {self.placement}, pad {self.pad_value:g}"
        )

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """RGB uint8 (H,W,3) or grey (H,W) → float32 (1,3,h,w) network input and its placement."""
        import cv2

        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise InputError(f"detectors take uint8 RGB (H,W,3) or grey (H,W) images, got {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        h, w = image.shape[:2]
        net_h, net_w = self.size
        ratio = min(net_h / h, net_w / w)
        # The limiting side fills the input exactly (w * (net_w / w) can round to net_w - 1).
        new_w = net_w if ratio == net_w / w else max(int(w * ratio), 1)
        new_h = net_h if ratio == net_h / h else max(int(h * ratio), 1)
        resized = cv2.resize(image, (new_w, new_h), interpolation=_INTERPOLATION[self.interpolation])
        if self.placement == "center":
            left, top = int((net_w - new_w) * 0.5), int((net_h - new_h) * 0.5)
        else:
            left, top = 0, 0
        canvas = np.full((net_h, net_w, 3), self.pad_value, np.float32)
        canvas[top : top + new_h, left : left + new_w] = resized
        if self.channels == "bgr":
            canvas = canvas[..., ::-1]
        canvas = canvas * np.float32(self.scale)
        canvas = (canvas - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
        return tensor, Placement(new_w / w, new_h / h, float(left), float(top), w, h)
