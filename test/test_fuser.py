"""The Fuser contract: shapes, dtypes, colour handling and input errors, for every weight-free method."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _tolerance import assert_close_to_reference
from fusion_ros import Fuser, InputError
from fusion_ros.color import luma
from fusion_ros.registration import Registration
from fusion_ros.registry import get_method_class, method_names

WEIGHT_FREE = [n for n in method_names() if get_method_class(n).weights_key is None]


def _pair(h: int, w: int, thermal_dtype: str = "uint16", colour: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if thermal_dtype == "uint8":
        ir = rng.integers(0, 256, (h, w), dtype=np.uint8)
    elif thermal_dtype == "uint16":
        ir = rng.integers(20000, 30000, (h, w), dtype=np.uint16)
    else:
        ir = rng.uniform(-10, 40, (h, w)).astype(np.float32)
    vis = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
    return ir, vis


@pytest.mark.parametrize("method", WEIGHT_FREE)
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (481, 641), (64, 48)])
@pytest.mark.parametrize("colour", [True, False])
def test_shape_and_dtype_follow_visible(method: str, size: tuple[int, int], colour: bool) -> None:
    ir, vis = _pair(*size, colour=colour)
    out = Fuser(method, device="cpu")(ir, vis)
    assert out.shape == vis.shape and out.dtype == np.uint8


@pytest.mark.parametrize("thermal_dtype", ["uint8", "uint16", "float32"])
def test_thermal_dtypes(thermal_dtype: str) -> None:
    ir, vis = _pair(40, 60, thermal_dtype)
    out = Fuser("pyramid", device="cpu")(ir, vis)
    assert out.shape == vis.shape


def test_nan_temperatures_fuse_without_nan() -> None:
    ir, vis = _pair(40, 60, "float32")
    ir[5:20, 5:20] = np.nan
    ir[0, 0] = np.inf
    fuser = Fuser("max", device="cpu")
    out = fuser(ir, vis)
    assert out.shape == vis.shape
    # NaN pixels map to the coldest value, so max-fusion shows the visible pixel there (±1 rounding)...
    nan_block = (slice(5, 20), slice(5, 20))
    assert np.abs(out[nan_block].astype(int) - vis[nan_block]).max() <= 1
    # ... while the finite temperatures around it do take part in the fusion.
    assert np.abs(out[25:, 25:].astype(int) - vis[25:, 25:]).max() > 10


def test_all_nan_thermal_is_an_input_error() -> None:
    ir = np.full((8, 8), np.nan, np.float32)
    with pytest.raises(InputError, match="no finite value"):
        Fuser("pyramid", device="cpu")(ir, np.zeros((8, 8, 3), np.uint8))


def test_chroma_is_preserved() -> None:
    """Only Y changes: Cb and Cr of the output equal the input's wherever nothing clips."""
    h, w = 32, 32
    vis = np.full((h, w, 3), (120, 80, 60), np.uint8)
    ir = np.full((h, w), 140, np.uint8)
    out = Fuser("average", device="cpu")(ir, vis).astype(np.float64)
    src = vis.astype(np.float64)

    def cbcr(rgb: np.ndarray) -> np.ndarray:
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        return np.stack([-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b], -1)

    y_in = src @ np.array([0.299, 0.587, 0.114])
    y_out = out @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.abs(y_out - y_in) > 5)  # the luminance really changed
    np.testing.assert_allclose(cbcr(out), cbcr(src), atol=1.0)  # rounding to uint8 only


def test_grey_in_grey_out_equals_luma_path() -> None:
    """Grey in → grey out, equal to the luminance of the colour path where colours do not clip."""
    ir, _ = _pair(50, 70)
    base = np.random.default_rng(1).integers(60, 190, (50, 70, 1))
    vis = np.clip(base + np.array([8, -4, 6]), 0, 255).astype(np.uint8)  # low-saturation colour
    grey = np.asarray(np.round(vis.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)), np.uint8)
    out_grey = Fuser("pyramid", device="cpu")(ir, grey)
    assert out_grey.shape == grey.shape
    out_col = Fuser("pyramid", device="cpu")(ir, vis)
    y = out_col.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.mean(np.abs(y - out_grey)) < 1.5


def test_fuse_tensor_batch_matches_single() -> None:
    fuser = Fuser("pyramid", device="cpu")
    gen = torch.Generator().manual_seed(0)
    ir = torch.rand(3, 1, 40, 50, generator=gen)
    vis = torch.rand(3, 3, 40, 50, generator=gen)
    batch = fuser.fuse_tensor(ir, vis)
    singles = torch.cat([fuser.fuse_tensor(ir[i : i + 1], vis[i : i + 1]) for i in range(3)])
    assert_close_to_reference(batch, singles, what="batch vs one pair at a time")
    assert batch.shape == vis.shape


def test_pyramid_shows_hot_target_in_dark_scene() -> None:
    """The default's purpose: a warm body invisible in RGB is bright in the fused frame."""
    vis = np.full((128, 160, 3), 12, np.uint8)
    ir = np.full((128, 160), 21000, np.uint16)
    ir[40:90, 70:85] = 29000
    out = Fuser("pyramid", device="cpu")(ir, vis).astype(float)
    target, background = out[50:80, 72:83].mean(), out[:, :40].mean()
    assert target > background + 60


def test_homography_identity_is_noop_and_shift_moves() -> None:
    ir, vis = _pair(40, 60, "uint8")
    plain = Fuser("max", device="cpu")(ir, vis)
    ident = Fuser("max", device="cpu", homography=[1, 0, 0, 0, 1, 0, 0, 0, 1])(ir, vis)
    np.testing.assert_array_equal(plain, ident)
    ir2 = np.zeros((40, 60), np.uint8)
    ir2[10, 10] = 255
    shifted = Fuser("max", device="cpu", homography=[1, 0, 5, 0, 1, 3, 0, 0, 1])(ir2, np.zeros((40, 60), np.uint8))
    assert shifted[13, 15] == 255 and shifted[10, 10] == 0


def test_size_mismatch_is_refused_without_homography_or_resize() -> None:
    ir = np.zeros((20, 30), np.uint8)
    vis = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(InputError, match="thermal 30x20 and rgb 60x40 differ.*registration.resize"):
        Fuser("max", device="cpu")(ir, vis)
    shifted = Fuser("max", device="cpu", homography=(2, 0, 1, 0, 2, 0, 0, 0, 1))
    assert shifted(ir, vis).shape == vis.shape


def test_size_mismatch_with_resize_stretches_without_a_warning() -> None:
    """registration.resize is the user's explicit request: no warning about it."""
    fuser = Fuser("max", device="cpu", resize=True)
    ir = np.zeros((20, 30), np.uint8)
    vis = np.zeros((40, 60, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fuser(ir, vis).shape == vis.shape


def test_implicit_resize_warns_once() -> None:
    """Registration used directly (the page's preview) stretches a thermal frame of another size, warning
    once: without an asked-for resize, a size mismatch is most likely a missing calibration."""
    registration = Registration()
    ir = torch.zeros(1, 1, 20, 30)
    with pytest.warns(UserWarning, match="resizing thermal"):
        assert registration(ir, (40, 60)).shape == (1, 1, 40, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registration(ir, (40, 60))  # second frame: no second warning


@pytest.mark.parametrize(
    ("ir", "vis", "match"),
    [
        (np.zeros((0, 5), np.uint8), np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4), np.int32), np.zeros((4, 4, 3), np.uint8), "uint8, uint16 or float32"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), "one channel"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), "HxWx3"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), "must be uint8"),
        (np.zeros((4, 4), np.uint8), [[0]], "numpy array"),
        (np.zeros((4, 4), np.uint8), np.zeros((0, 4, 1), np.uint8), "empty"),
    ],
)
def test_bad_inputs_raise_input_error(ir: np.ndarray, vis: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Fuser("pyramid", device="cpu")(ir, vis)


def test_fuse_arrays_is_the_pairwise_fusion_in_one_call() -> None:
    rng = np.random.default_rng(3)
    irs = [rng.integers(0, 65535, (24, 32), dtype=np.uint16) for _ in range(3)]
    viss = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    batched = Fuser("pyramid", device="cpu").fuse_arrays(irs, viss)
    single = Fuser("pyramid", device="cpu")
    for ir, vis, out in zip(irs, viss, batched):
        assert out.shape == vis.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - single(ir, vis)).max() <= 1


@pytest.mark.parametrize(
    ("irs", "viss", "match"),
    [
        ([], [], "at least one"),
        ([np.zeros((4, 4), np.uint8)], [np.zeros((4, 4), np.uint8)] * 2, "as many"),
        ([np.zeros((4, 4), np.uint8)] * 2, [np.zeros((4, 4), np.uint8), np.zeros((4, 6), np.uint8)], "one size"),
        ([np.zeros((4, 4), np.uint8), np.zeros((4, 6), np.uint8)], [np.zeros((4, 4), np.uint8)] * 2, "one size"),
    ],
)
def test_fuse_arrays_refuses_mismatched_batches(irs: list, viss: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Fuser("pyramid", device="cpu").fuse_arrays(irs, viss)


def test_luma_is_bt601() -> None:
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert abs(float(luma(rgb)) - 0.299) < 1e-6


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 9), (64, 80)])
def test_laplacian_pyramid_reconstructs_exactly(size: tuple[int, int]) -> None:
    from fusion_ros.methods.classical import laplacian_pyramid, reconstruct

    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    bands = laplacian_pyramid(x, 5)
    torch.testing.assert_close(reconstruct(bands), x)
    assert bands[-1].shape[-1] >= 1


def test_one_availability_rule(tmp_path: Path) -> None:
    """An explicit checkpoint file replaces the manifest's files; a crashing check is a reason, not a crash."""
    from fusion_ros.registry import get_method_class, method_unavailable_reason

    defusion = get_method_class("defusion")
    assert "missing weights" in method_unavailable_reason(defusion, tmp_path)
    assert method_unavailable_reason(defusion, tmp_path, {"weights": str(tmp_path / "mine.pth")}) is None

    class Broken:
        @classmethod
        def unavailable_reason(cls, weights_dir: Path) -> str | None:
            raise KeyError("manifest entry")

    assert method_unavailable_reason(Broken, tmp_path) == "its availability cannot be checked (KeyError: 'manifest entry')"
