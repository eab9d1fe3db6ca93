"""Thermal normalisation: windows, NaN, and bounded flicker on video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_ros import ConfigError, ThermalConfig
from fusion_ros.thermal import ThermalNormalizer

CPU = torch.device("cpu")


def test_uint8_passthrough() -> None:
    ir = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = ThermalNormalizer()(ir, CPU)
    torch.testing.assert_close(out[0, 0], torch.from_numpy(ir).float() / 255)


def test_uint16_percentile_window_ignores_outliers() -> None:
    ir = np.full((64, 64), 25000, np.uint16)
    ir[::2] = 21000
    ir[0, 0] = 65535  # one dead-hot pixel must not set the window
    out = ThermalNormalizer()(ir, CPU)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert float(out[0, 0, 1, 0]) == pytest.approx(1.0)


def test_fixed_window() -> None:
    ir = np.array([[0.0, 10.0, 20.0, 40.0]], np.float32)
    out = ThermalNormalizer(ThermalConfig(normalization="fixed", window=(10.0, 30.0)))(ir, CPU)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0]))


def test_nan_maps_to_cold() -> None:
    ir = np.array([[np.nan, 10.0], [20.0, 30.0]], np.float32)
    out = ThermalNormalizer(ThermalConfig(normalization="fixed", window=(10.0, 30.0)))(ir, CPU)
    assert float(out[0, 0, 0, 0]) == 0.0 and torch.isfinite(out).all()


def _sequence(n: int = 40) -> list[np.ndarray]:
    """Background at ~22000 counts; a hot object (35000) enters at frame 20 and covers 30% of the view."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(n):
        f = rng.normal(22000, 300, (60, 80)).astype(np.float32)
        if i >= 20:
            f[:, :24] = 35000
        frames.append(np.clip(f, 0, 65535).astype(np.uint16))
    return frames


def _background_level(normalizer: ThermalNormalizer, frames: list[np.ndarray]) -> np.ndarray:
    return np.array([float(normalizer(f, CPU)[0, 0, :, 40:].mean()) for f in frames])


def test_temporal_smoothing_bounds_flicker() -> None:
    frames = _sequence()
    stateless = _background_level(ThermalNormalizer(ThermalConfig(smoothing=0.0)), frames)
    smooth = _background_level(ThermalNormalizer(ThermalConfig(smoothing=0.95)), frames)
    jump_stateless = np.abs(np.diff(stateless)).max()
    jump_smooth = np.abs(np.diff(smooth)).max()
    assert jump_stateless > 0.2  # per-frame windows pump when the hot object enters
    assert jump_smooth < jump_stateless / 3
    # After the entry the background darkens gradually, without oscillating back.
    assert np.all(np.diff(smooth[20:]) < 0.01)


def test_reset_forgets_window() -> None:
    norm = ThermalNormalizer(ThermalConfig(smoothing=0.9))
    norm(np.full((8, 8), 1000, np.uint16) + np.arange(64, dtype=np.uint16).reshape(8, 8), CPU)
    norm.reset()
    assert norm.window is None


@pytest.mark.parametrize(
    "kwargs",
    [dict(normalization="bogus"), dict(low_percentile=50, high_percentile=40), dict(window=(5.0, 5.0)), dict(smoothing=1.0)],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ThermalConfig(**kwargs)
