"""The enhanced-RGB baseline: CLAHE on luminance changes brightness, not colour."""

from __future__ import annotations

import numpy as np
import pytest

from fusion_ros.detection import clahe_rgb
from fusion_ros.errors import InputError


def test_clahe_brightens_a_dark_frame_and_keeps_chroma() -> None:
    rng = np.random.default_rng(5)
    dark = np.clip(rng.normal(25, 8, (96, 128, 1)) + np.array([12.0, 0.0, -6.0]), 0, 255).astype(np.uint8)
    out = clahe_rgb(dark)
    assert out.shape == dark.shape and out.dtype == np.uint8
    assert out.mean() > dark.mean() + 10
    inside = (dark > 0).all(axis=2) & (dark < 255).all(axis=2) & (out > 0).all(axis=2) & (out < 255).all(axis=2)
    # The same Y change lands on R, G and B: channel differences stay within rounding.
    for a, b in ((0, 1), (1, 2)):
        diff_in = dark[..., a].astype(int) - dark[..., b]
        diff_out = out[..., a].astype(int) - out[..., b]
        assert np.abs(diff_out - diff_in)[inside].max() <= 1
    grey = clahe_rgb(dark[..., 1])
    assert grey.shape == dark.shape[:2] and grey.mean() > dark[..., 1].mean() + 10


def test_clahe_rejects_non_uint8() -> None:
    with pytest.raises(InputError, match="uint8"):
        clahe_rgb(np.zeros((8, 8, 3), np.float32))
