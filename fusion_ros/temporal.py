"""Temporal stability of a fused video: does it change more from frame to frame than its inputs do?

A tracker or a detector's temporal filter downstream of the fusion node reads frame-to-frame change
as motion. A fusion rule that flips per pixel between the two cameras on sensor noise makes the
fused video shimmer where neither input does. The measure here is the **flicker ratio**

    mean_t mean_px |F_t − F_{t−1}|  /  max(mean_t mean_px |V_t − V_{t−1}|, mean_t mean_px |T_t − T_{t−1}|)

on grey levels (0–255): F and V are the BT.601 luminance of the fused and the visible frames, T the
thermal frame. A ratio ≤ 1 means the fused video is no less steady than the steadier-looking of
its inputs' worst case; a rule that only mixes the inputs linearly stays well below 1.

Thermal frames that are not 8-bit are put on 0–255 through one window for the whole sequence
(the 1st–99th percentile of the first frame), so the measure itself adds no frame-to-frame change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion_ros.color import BT601
from fusion_ros.errors import InputError

__all__ = ["FlickerMeter"]

_BT601 = np.array(BT601, dtype=np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 (H,W), (H,W,1) or (H,W,3) → float32 (H,W) luminance on 0–255."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image.astype(np.float32) @ _BT601
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise InputError(f"flicker needs (H,W) or (H,W,1|3) frames, got shape {image.shape}")
    return image.astype(np.float32)


@dataclass
class FlickerMeter:
    """Accumulates the mean absolute frame difference of fused, visible and thermal frames in order.

    Call :meth:`update` once per fused pair, in time order; :attr:`ratio` is NaN until two frames
    of one size have been seen. A size change restarts the differences (a new stream).
    """

    frames: int = 0
    _sums: np.ndarray = field(default_factory=lambda: np.zeros(3))
    _diffs: int = 0
    _prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _window: tuple[float, float] | None = None

    def _thermal(self, thermal: np.ndarray) -> np.ndarray:
        if thermal.dtype == np.uint8:
            return _grey(thermal)
        t = np.asarray(thermal, dtype=np.float32)
        if t.ndim == 3:
            t = t[..., 0]
        if self._window is None:
            finite = t[np.isfinite(t)]
            if finite.size == 0:
                raise InputError("thermal frame has no finite value (all NaN or inf)")
            lo, hi = np.percentile(finite, (1.0, 99.0))
            self._window = (float(lo), float(max(hi, lo + 1e-6)))
        lo, hi = self._window
        return np.nan_to_num((t - lo) * (255.0 / (hi - lo)), nan=0.0).clip(0.0, 255.0)

    def update(self, thermal: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> None:
        """Add one pair: the thermal frame as given to the Fuser, the visible uint8 frame and the fused output."""
        cur = (_grey(fused), _grey(visible), self._thermal(thermal))
        if self._prev is not None and all(p.shape == c.shape for p, c in zip(self._prev, cur)):
            self._sums += [float(np.abs(c - p).mean()) for c, p in zip(cur, self._prev)]
            self._diffs += 1
        self._prev = cur
        self.frames += 1

    @property
    def fused_change(self) -> float:
        """Mean |F_t − F_{t−1}| in grey levels."""
        return self._sums[0] / self._diffs if self._diffs else float("nan")

    @property
    def input_change(self) -> float:
        """The larger of the visible and thermal frames' mean |X_t − X_{t−1}|."""
        return max(self._sums[1], self._sums[2]) / self._diffs if self._diffs else float("nan")

    @property
    def ratio(self) -> float:
        """Flicker ratio (see the module docstring); NaN before two frames or for perfectly still inputs."""
        change = self.input_change
        return self.fused_change / change if change > 0 else float("nan")
