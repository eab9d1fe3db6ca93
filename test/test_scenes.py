"""The synthetic night street: deterministic, radiometric, and showing what fusion is for."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from fusion_ros.errors import ConfigError
from fusion_ros.scenes import (
    _HORIZON_PER_HEIGHT,
    celsius_to_counts,
    counts_to_celsius,
    render_pair,
    render_rgb,
    render_thermal,
    stream,
)

H, W = 128, 160


def test_pair_shapes_dtypes_and_band() -> None:
    thermal, rgb = render_pair(1.0, H, W)
    assert thermal.shape == (H, W) and thermal.dtype == np.uint16
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    # Radiometric centi-kelvin: a night street spans a narrow band of the 16-bit range.
    assert 24_000 < int(thermal.min()) and int(thermal.max()) < 33_000
    assert int(thermal.max()) - int(thermal.min()) > 3_000
    # It is night: most of the RGB frame is dark.
    assert float(np.median(rgb)) < 60


def test_deterministic_per_time_and_seed() -> None:
    a = render_pair(2.5, H, W, seed=3)
    b = render_pair(2.5, H, W, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = render_pair(2.5, H, W, seed=4)
    assert not np.array_equal(a[0], c[0])
    d = render_pair(2.6, H, W, seed=3)
    assert not np.array_equal(a[0], d[0])  # sensor noise and motion change every frame


def test_celsius_variant_matches_counts() -> None:
    temp = render_thermal(1.0, H, W, celsius=True)
    counts = render_thermal(1.0, H, W)
    assert temp.dtype == np.float32 and np.isfinite(temp).all()
    np.testing.assert_allclose(counts_to_celsius(counts), temp, atol=0.006)
    np.testing.assert_array_equal(celsius_to_counts(np.array([0.0, 36.85])), [27315, 31000])


def _hot_ground_mask(thermal: np.ndarray) -> np.ndarray:
    """Pixels warmer than 25 C below the horizon: people, the dog, tyres, exhaust (lamp heads are above)."""
    hot = counts_to_celsius(thermal) > 25.0
    hot[: int(_HORIZON_PER_HEIGHT * thermal.shape[0]) + 1] = False
    return hot


def test_warm_people_invisible_in_rgb_but_bright_in_thermal() -> None:
    thermal, rgb = render_pair(3.0, 256, 320)
    hot = _hot_ground_mask(thermal)
    assert hot.sum() > 150
    ring = binary_dilation(hot, iterations=4) & ~binary_dilation(hot, iterations=1)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    thermal_contrast = thermal[hot].mean() - thermal[ring].mean()
    rgb_contrast = abs(luma[hot].mean() - luma[ring].mean())
    assert thermal_contrast > 800  # more than 8 K above the surroundings
    assert rgb_contrast < 10  # within a few grey levels of a dark background
    assert luma[hot].mean() < 40


def test_pedestrian_enters_from_the_right() -> None:
    right = slice(3 * W // 4, W)
    before = _hot_ground_mask(render_thermal(0.0, H, W))[:, right].sum()
    after = _hot_ground_mask(render_thermal(2.0, H, W))[:, right].sum()
    assert before == 0
    assert after > 20


def test_stream_rates_order_and_jitter() -> None:
    start = 1_000_000_000_000
    frames = list(stream(1.0, thermal_hz=30, rgb_hz=10, jitter_s=0.002, height=32, width=40, start_ns=start))
    kinds = [f.kind for f in frames]
    assert kinds.count("thermal") == 30 and kinds.count("rgb") == 10
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps)
    for kind, hz, offset in (("thermal", 30, 0.0), ("rgb", 10, 0.004)):
        ks = [f.stamp_ns for f in frames if f.kind == kind]
        assert all(b > a for a, b in zip(ks, ks[1:]))
        nominal = [start + round((i / hz + offset) * 1e9) for i in range(len(ks))]
        assert max(abs(s - n) for s, n in zip(ks, nominal)) <= 0.006 * 1e9 + 1
    f = next(f for f in frames if f.kind == "thermal")
    assert f.array.dtype == np.uint16 and f.array.shape == (32, 40)
    g = next(f for f in frames if f.kind == "rgb")
    assert g.array.dtype == np.uint8 and g.array.shape == (32, 40, 3)
    again = list(stream(1.0, height=32, width=40, start_ns=start))
    assert [(f.stamp_ns, f.kind) for f in again] == [(f.stamp_ns, f.kind) for f in frames]


def test_stream_celsius_and_no_jitter() -> None:
    frames = list(
        stream(0.2, thermal_hz=20, rgb_hz=10, jitter_s=0.0, height=32, width=40, start_ns=0, rgb_offset_s=0.0, thermal_celsius=True)
    )
    assert [f.stamp_ns for f in frames if f.kind == "thermal"] == [0, 50_000_000, 100_000_000, 150_000_000]
    assert all(f.array.dtype == np.float32 for f in frames if f.kind == "thermal")


@pytest.mark.parametrize("size", [(8, 64), (64, 5000)])
def test_bad_size_rejected(size: tuple[int, int]) -> None:
    with pytest.raises(ConfigError):
        render_rgb(0.0, *size)


def test_bad_stream_rejected() -> None:
    with pytest.raises(ConfigError):
        next(stream(0.0))
