"""The baseline that needs no thermal camera: contrast-limited adaptive histogram equalisation.

CLAHE runs on the BT.601 luminance only (clip limit 3, 8×8 tiles, OpenCV's implementation) and
the change of Y is added to R, G and B alike — chroma kept, as :func:`fusion_ros.color.replace_luma`
does for fused frames — so "enhanced RGB" differs from RGB exactly where fusion would act.
"""

from __future__ import annotations

import numpy as np

from fusion_ros.color import BT601
from fusion_ros.errors import InputError

__all__ = ["clahe_rgb"]


def clahe_rgb(image: np.ndarray, clip: float = 3.0, tiles: int = 8) -> np.ndarray:
    """uint8 RGB (H,W,3) or grey (H,W) → the same with CLAHE applied to its luminance."""
    import cv2

    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InputError(f"CLAHE takes uint8 RGB (H,W,3) or grey (H,W), got {image.dtype} {image.shape}")
    clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles))
    if image.ndim == 2:
        return clahe.apply(image)
    rgb = image.astype(np.float32)
    y = rgb @ np.asarray(BT601, np.float32)
    y8 = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    delta = clahe.apply(y8).astype(np.float32) - y
    return np.clip(np.rint(rgb + delta[..., None]), 0, 255).astype(np.uint8)
