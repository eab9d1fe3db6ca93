"""Visible-style colour: fuse the BT.601 luminance, keep the RGB camera's chroma.

Changing only Y in YCbCr and converting back adds the same ΔY to R, G and B (the inverse
transform's Y column is all ones), so the round trip is one broadcast add instead of two
3×3 colour transforms.
"""

from __future__ import annotations

import torch

__all__ = ["luma", "replace_luma"]

_BT601 = (0.299, 0.587, 0.114)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 Y of (B,3,H,W) RGB in [0,1] → (B,1,H,W)."""
    r, g, b = rgb.unbind(1)
    return (r * _BT601[0] + g * _BT601[1] + b * _BT601[2]).unsqueeze(1)


def replace_luma(rgb: torch.Tensor, y_old: torch.Tensor, y_new: torch.Tensor) -> torch.Tensor:
    """RGB whose Y is ``y_new`` and whose Cb/Cr are those of ``rgb``, clamped to [0,1]."""
    return (rgb + (y_new - y_old)).clamp_(0.0, 1.0)
