"""The flicker ratio of fused video (fusion_ros.temporal.FlickerMeter) on sequences with known answers,
and as ``fusion-ros bag --flicker`` reports it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fusion_ros.bag import write_scene_bag
from fusion_ros.cli import main
from fusion_ros.errors import InputError
from fusion_ros.scenes import stream
from fusion_ros.temporal import FlickerMeter


def _sequence(seed: int, n: int = 6, shape: tuple[int, int] = (24, 32)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A slowly brightening RGB sequence and a thermal sequence with a moving warm square."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 120, (*shape, 3))
    rgb = [np.clip(base + 3 * k, 0, 255).astype(np.uint8) for k in range(n)]
    thermal = []
    for k in range(n):
        t = np.full(shape, 50, np.uint8)
        t[4:12, 2 + 3 * k : 10 + 3 * k] = 200
        thermal.append(t)
    return thermal, rgb


def test_fused_equal_to_the_busier_input_gives_one() -> None:
    thermal, rgb = _sequence(0)
    meter = FlickerMeter()
    for t, v in zip(thermal, rgb):
        meter.update(t, v, np.repeat(t[..., None], 3, 2))  # "fusion" = the thermal frame, which changes more
    assert meter.input_change > 3.0  # the thermal frame's change, larger than the RGB's 3 levels
    assert meter.ratio == pytest.approx(1.0, abs=1e-6)


def test_still_output_gives_zero_and_noise_gives_more_than_one() -> None:
    thermal, rgb = _sequence(1)
    still, noisy = FlickerMeter(), FlickerMeter()
    rng = np.random.default_rng(2)
    for t, v in zip(thermal, rgb):
        still.update(t, v, rgb[0])
        noisy.update(t, v, rng.integers(0, 256, v.shape, dtype=np.uint8))
    assert still.ratio == 0.0
    assert noisy.ratio > 5.0  # uniform noise changes by ~85 levels per frame


def test_sixteen_bit_thermal_uses_one_window_for_the_sequence() -> None:
    # Counts scaled by 100 with an offset: the same relative change as the 8-bit version once the
    # first frame's window is applied to every frame (a per-frame window would hide a global drift).
    thermal, rgb = _sequence(3)
    m8, m16 = FlickerMeter(), FlickerMeter()
    for t, v in zip(thermal, rgb):
        t16 = (t.astype(np.uint16) * 100 + 20000).astype(np.uint16)
        m8.update(t, v, v)
        m16.update(t16, v, v)
    assert m16.input_change == pytest.approx(m8.input_change * 255.0 / 150.0, rel=0.02)  # window 50..200 → 0..255


def test_fewer_than_two_frames_is_nan_and_bad_shapes_are_input_errors() -> None:
    meter = FlickerMeter()
    assert math.isnan(meter.ratio)
    meter.update(np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))
    assert math.isnan(meter.ratio) and meter.frames == 1
    with pytest.raises(InputError, match="flicker needs"):
        meter.update(np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="no finite value"):
        FlickerMeter().update(np.full((4, 4), np.nan, np.float32), np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))


def test_bag_command_reports_the_flicker_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_scene_bag(tmp_path / "in", stream(0.5, thermal_hz=10.0, rgb_hz=10.0, height=72, width=96, seed=4))
    assert main(["bag", str(tmp_path / "in"), str(tmp_path / "out"), "--method", "average", "--flicker", "--quiet"]) == 0
    line = next(li for li in capsys.readouterr().out.splitlines() if li.startswith("flicker ratio"))
    ratio = float(line.split()[2].rstrip(":"))
    assert 0.0 < ratio < 1.0 and "(5 frames)" in line  # averaging two cameras' changes stays below the larger one
