"""Thermal frames to [0,1] intensity: 8-bit passthrough, 16-bit counts and float temperatures
through a robust window, optionally smoothed over time so video does not flicker.

Per-frame min/max scaling (what most drivers do) makes the whole image pump when a hot object
enters the view; percentiles ignore a few hot pixels, and an EMA of the window keeps brightness
steady from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fusion_ros.device import array_to_device
from fusion_ros.errors import ConfigError, InputError

__all__ = ["INDEPENDENT_FRAMES", "NORMALIZATIONS", "THERMAL_DTYPES", "ThermalConfig", "ThermalNormalizer"]

#: Thermal array dtypes the core accepts (mono8 / mono16 counts / 32FC1 temperatures).
THERMAL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))

#: Values of ``ThermalConfig.normalization`` (the ``thermal.normalization`` parameter).
NORMALIZATIONS = ("auto", "percentile", "fixed")

# Percentiles are taken on every 4th pixel of every 4th row: 16x less work, same window to
# within a count on real sensors (the window is smoothed anyway).
_SUBSAMPLE = 4


@dataclass(frozen=True)
class ThermalConfig:
    """How thermal values become [0,1]; each field is the node parameter ``thermal.<field>``.

    Attributes:
        normalization: ``"auto"`` (uint8 passthrough, percentile window otherwise), ``"percentile"``
            (always a window from the frame's percentiles), ``"fixed"`` (the ``window`` given).
        low_percentile: lower percentile of the robust window (``auto``/``percentile``).
        high_percentile: upper percentile.
        window: (low, high) in the frame's own unit (counts or degrees) for ``fixed``.
        smoothing: weight of the previous frame's window in the current one (an exponential moving
            average), 0 = every frame on its own window. The default 0.9 is for what this package
            fuses most: a camera stream (the node, a bag), where a per-frame window makes the whole
            image pump when a hot object enters the view. It costs nothing for a single pair (the
            first frame uses its own window), so one default serves the node, the CLI, bags and the
            page; fusing unrelated images one after another with one :class:`ThermalNormalizer`
            (a dataset evaluation) is the case that needs 0.
        invert: map hot to dark (for "black-hot" palettes).
    """

    normalization: str = "auto"
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    window: tuple[float, float] = (0.0, 65535.0)
    smoothing: float = 0.9
    invert: bool = False

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"thermal normalization must be auto, percentile or fixed, not {self.normalization!r}")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ConfigError(
                f"thermal percentiles need 0 <= low < high <= 100, got {self.low_percentile}, {self.high_percentile}"
            )
        if len(self.window) != 2 or not self.window[1] > self.window[0]:
            raise ConfigError(f"thermal window needs 2 numbers, high > low, got {tuple(self.window)}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"thermal smoothing must be in [0, 1), got {self.smoothing}")


#: For images that are not a stream (a dataset, a folder of unrelated pairs): every thermal frame
#: normalised on its own window, so one image never leaks into the next one's brightness.
INDEPENDENT_FRAMES = ThermalConfig(smoothing=0.0)


class ThermalNormalizer:
    """Maps thermal arrays to (1,1,H,W) float tensors in [0,1]; keeps the smoothed window between calls."""

    def __init__(self, config: ThermalConfig | None = None) -> None:
        self.config = config or ThermalConfig()
        self._window: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the smoothed window (a new sequence, a bag loop)."""
        self._window = None

    @property
    def window(self) -> tuple[float, float] | None:
        """The window used for the last frame (None before the first or for uint8 passthrough)."""
        return self._window

    def _frame_window(self, thermal: np.ndarray) -> tuple[float, float]:
        cfg = self.config
        if cfg.normalization == "fixed":
            return float(cfg.window[0]), float(cfg.window[1])
        sample = thermal[::_SUBSAMPLE, ::_SUBSAMPLE]
        if sample.dtype.kind == "f":
            sample = sample[np.isfinite(sample)]
            if sample.size == 0:
                raise InputError("thermal frame has no finite value (all NaN or inf)")
        lo, hi = np.percentile(sample, (cfg.low_percentile, cfg.high_percentile))
        return float(lo), float(hi)

    def __call__(self, thermal: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Normalise one (H,W) thermal array; returns (1,1,H,W) on ``device`` in [0,1], NaN → 0 (coldest)."""
        t = array_to_device(thermal, device)
        if thermal.dtype == np.uint8 and self.config.normalization == "auto":
            out = t.to(dtype).div_(255.0)
        else:
            lo, hi = self._frame_window(thermal)
            if self._window is not None and self.config.smoothing > 0.0:
                a = self.config.smoothing
                lo = a * self._window[0] + (1.0 - a) * lo
                hi = a * self._window[1] + (1.0 - a) * hi
            self._window = (lo, hi)
            scale = 1.0 / max(hi - lo, 1e-6)
            out = t.to(torch.float32).sub_(lo).mul_(scale)
            if thermal.dtype.kind == "f":
                out = torch.nan_to_num_(out, nan=0.0, posinf=1.0, neginf=0.0)
            out = out.clamp_(0.0, 1.0).to(dtype)
        if self.config.invert:
            out = 1.0 - out
        return out[None, None]
