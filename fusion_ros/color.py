"""Visible-style colour: fuse the BT.601 luminance, keep the RGB camera's chroma.

Changing only Y in YCbCr and converting back adds the same ΔY to R, G and B (the inverse
transform's Y column is all ones), so the round trip is one broadcast add instead of two
3×3 colour transforms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tensor methods only: importing this module (the metrics do, for BT601) needs no torch
    import torch

__all__ = ["BT601", "luma", "replace_luma"]

#: ITU-R BT.601 luma weights of R, G, B: the one definition (fusion, DeFusion's output, the metrics).
BT601 = (0.299, 0.587, 0.114)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 Y of (B,3,H,W) RGB in [0,1] → (B,1,H,W)."""
    r, g, b = rgb.unbind(1)
    return (r * BT601[0] + g * BT601[1] + b * BT601[2]).unsqueeze(1)


def replace_luma(rgb: torch.Tensor, y_old: torch.Tensor, y_new: torch.Tensor) -> torch.Tensor:
    """RGB whose Y is ``y_new`` and whose Cb/Cr are those of ``rgb``, clamped to [0,1]."""
    return (rgb + (y_new - y_old)).clamp_(0.0, 1.0)
