"""Thermal → RGB pixel registration by a 3×3 homography, applied on the fusion device.

Thermal and RGB cameras never share optics; a homography (from a calibration, valid for a
far scene or a planar one) maps thermal pixels onto the RGB frame so fused edges line up.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from fusion_ros.errors import ConfigError

__all__ = ["Registration"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class Registration:
    """Warps (B,1,h,w) thermal tensors into the visible frame's (H,W) pixel grid.

    Args:
        homography: 9 row-major numbers mapping thermal pixel (x, y, 1) to RGB pixel; ``None``
            or the identity means "same pixel grid" (resized if the sizes differ).
        resize: the user asked for a thermal frame of another size to be stretched over the visible
            one (``registration.resize``): done silently. Otherwise such a stretch is most likely a
            missing calibration, so the first one warns.
    """

    def __init__(self, homography: Sequence[float] | None = None, *, resize: bool = False) -> None:
        if homography is not None:
            values = [float(v) for v in homography]
            if len(values) != 9:
                raise ConfigError(f"registration homography needs 9 numbers (row-major 3x3), got {len(values)}")
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"registration homography has non-finite values (NaN or inf): {values}")
            if values == [0.0] * 9:
                raise ConfigError("registration homography is all zeros (singular); the identity is [1, 0, 0, 0, 1, 0, 0, 0, 1]")
            h = torch.tensor(values, dtype=torch.float64).reshape(3, 3)
            if abs(float(torch.linalg.det(h))) < 1e-12:
                raise ConfigError("registration homography is singular (determinant 0)")
            homography = values
        self.homography = None if homography is None or tuple(homography) == _IDENTITY else tuple(homography)
        self._grid_key: tuple | None = None
        self._grid: torch.Tensor | None = None
        self._warned_resize = resize  # an asked-for stretch never warns

    def _sampling_grid(self, src_hw: tuple[int, int], dst_hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """grid_sample grid: for each RGB pixel, where it lies in the thermal image (normalised coords)."""
        key = (src_hw, dst_hw, device, dtype)
        if self._grid_key != key:
            assert self.homography is not None
            h_inv = torch.linalg.inv(torch.tensor(self.homography, dtype=torch.float64).reshape(3, 3))
            H, W = dst_hw
            ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
            pts = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ h_inv.T  # (H, W, 3) thermal homogeneous
            src = pts[..., :2] / pts[..., 2:3]
            sh, sw = src_hw
            # pixel centres → [-1, 1] with align_corners=False
            gx = (src[..., 0] + 0.5) / sw * 2 - 1
            gy = (src[..., 1] + 0.5) / sh * 2 - 1
            self._grid = torch.stack([gx, gy], -1)[None].to(device=device, dtype=dtype)
            self._grid_key = key
        assert self._grid is not None
        return self._grid

    def __call__(self, thermal: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Thermal (B,1,h,w) in the visible frame's (H,W); pixels mapped from outside the thermal image are 0."""
        src_hw = (thermal.shape[-2], thermal.shape[-1])
        if self.homography is not None:
            grid = self._sampling_grid(src_hw, size, thermal.device, thermal.dtype)
            grid = grid.expand(thermal.shape[0], -1, -1, -1)
            return F.grid_sample(thermal, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if src_hw == tuple(size):
            return thermal
        if not self._warned_resize:
            warnings.warn(
                f"thermal {src_hw[1]}x{src_hw[0]} and visible {size[1]}x{size[0]} differ and no homography is set: "
                "resizing thermal to the visible frame (set a registration homography for correct alignment)",
                stacklevel=3,
            )
            self._warned_resize = True
        return F.interpolate(thermal, size=size, mode="bilinear", align_corners=False)
