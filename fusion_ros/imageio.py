"""Image files ↔ arrays for the CLI and offline tools (Pillow; 16-bit PNG/TIFF thermal kept as uint16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fusion_ros.errors import InputError

__all__ = ["read_image", "read_thermal", "read_visible", "write_image"]


def read_image(path: str | Path) -> np.ndarray:
    """Any Pillow-readable file as uint8 (H,W) / (H,W,3), uint16 (H,W) or float32 (H,W)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode == "I":
                arr = np.asarray(im)
                return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float32)
            if im.mode == "F":
                return np.asarray(im, dtype=np.float32)
            if im.mode in ("L", "1"):
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read image {p}: {err}") from None


def read_thermal(path: str | Path) -> np.ndarray:
    """A thermal image as one channel (colour-mapped files are reduced to their BT.601 grey)."""
    arr = read_image(path)
    if arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    return arr


def read_visible(path: str | Path) -> np.ndarray:
    """A visible image as uint8 RGB (H,W,3) or grey (H,W); 16-bit files are scaled to 8 bits."""
    arr = read_image(path)
    if arr.dtype != np.uint8:
        raise InputError(f"visible image {path} is {arr.dtype}; expected an 8-bit grey or colour image")
    return arr


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 grey/RGB (or uint16 grey) to ``path``; the suffix picks the format."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(image).save(p)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot write image {p}: {err}") from None
