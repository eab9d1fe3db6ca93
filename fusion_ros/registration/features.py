"""Modality-independent structure images for thermal↔RGB matching.

Thermal and visible intensities are unrelated (a sky is bright in RGB and dark in thermal; a
warm person may be darker or brighter than the wall behind), but both see the same *edges*
with the same orientation. So both images become a two-channel doubled-angle gradient field,
``(cos 2θ, sin 2θ) · m² / (m² + ε²)``: the orientation of the local edge, blind to its polarity
(θ and θ+180° are the same vector), with a magnitude that saturates so a strong thermal edge does
not outweigh a faint visible one. Two images agree where their edges are parallel, whatever
their contrast. ε is set per image from its own gradient distribution, so 8-bit RGB and a 16-bit
thermal window with very different contrasts end up on the same scale.
"""

from __future__ import annotations

import cv2
import numpy as np

from fusion_ros.errors import InputError

__all__ = ["structure_features", "to_gray", "edge_fraction"]

#: Sobel 3x3 responds 8x the per-pixel slope; dividing gives slopes in grey levels per pixel.
_SOBEL_GAIN = 8.0
#: A pixel counts as structure when the grey level (in [0, 1]) changes by this much per pixel.
_EDGE_SLOPE = 0.01
#: ε is this many times the image's median gradient: noise and fine texture saturate only part-way, edges fully.
_EPS_PER_MEDIAN = 2.0
#: Largest fraction of NaN/inf pixels registered around; beyond, too little of the picture is left.
_MAX_NONFINITE = 0.5


def _fill_nonfinite(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` with NaN/inf pixels (dead pixels of a radiometric camera) set to the median of the finite
    ones, so they neither stretch the grey window nor make edges of their own. ``fusion-ros fuse`` and the
    node fuse such frames, so registration must not refuse them."""
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    bad = 1.0 - float(finite.mean())
    if bad > _MAX_NONFINITE:
        raise InputError(f"{name} image has {100 * bad:.0f} % NaN or infinite pixels; registration needs at least "
                         f"{100 * (1 - _MAX_NONFINITE):.0f} % finite ones")
    return np.where(finite, arr, np.median(arr[finite])).astype(np.float32)


def to_gray(image: np.ndarray, name: str) -> np.ndarray:
    """Any (H,W), (H,W,1), (H,W,3) or (H,W,4) image → float32 (H,W) in [0,1] (1–99 % window).

    NaN and infinite pixels are ignored (see :func:`_fill_nonfinite`). Raises :class:`InputError` on wrong
    shapes, tiny images or an image mostly non-finite, naming ``name``.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3].astype(np.float32).mean(axis=2)
    if arr.ndim != 2:
        raise InputError(f"{name} image must be (H,W) or (H,W,1|3|4), got shape {np.shape(image)}")
    if min(arr.shape) < 32:
        raise InputError(f"{name} image {arr.shape[1]}x{arr.shape[0]} is too small to register (32 px per side at least)")
    if arr.dtype.kind not in "uif" and arr.dtype != bool:
        raise InputError(f"{name} image has unsupported dtype {arr.dtype}")
    arr = _fill_nonfinite(arr.astype(np.float32), name)
    lo, hi = np.percentile(arr, (1.0, 99.0))
    if hi <= lo:
        lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return np.clip((arr - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def _gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = cv2.GaussianBlur(gray, (0, 0), 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / _SOBEL_GAIN
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / _SOBEL_GAIN
    return gx, gy


def edge_fraction(gray: np.ndarray) -> float:
    """Fraction of pixels on an edge (slope above 1 % of the range per pixel): how much structure there is."""
    gx, gy = _gradients(gray)
    return float(np.mean(gx * gx + gy * gy > _EDGE_SLOPE**2))


def structure_features(gray: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """(H,W,2) float32 doubled-angle gradient field of a [0,1] grey image (see the module doc).

    ``smooth`` (pixels) blurs the field afterwards: it widens the basin of the local refinement.
    """
    gx, gy = _gradients(gray)
    m2 = gx * gx + gy * gy
    eps = max(_EPS_PER_MEDIAN * float(np.median(np.sqrt(m2))), _EDGE_SLOPE)
    denom = m2 + eps * eps
    feats = np.stack([(gx * gx - gy * gy) / denom, 2.0 * gx * gy / denom], axis=-1)
    if smooth > 0:
        feats = cv2.GaussianBlur(feats, (0, 0), smooth)
    return feats.astype(np.float32)
