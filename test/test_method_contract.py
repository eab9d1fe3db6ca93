"""The contract every registered method keeps, through the Fuser: output shape and dtype follow the
visible frame (colour, grey, grey with a channel axis), odd sizes, 8- and 16-bit thermal, and the same
output for the same input and seed.

Network methods run with small random weights drawn from a seeded generator (no weight files): DeFusion
and DMFuse on their ``test_tiny`` configs, FusionINV on its tiny SD-topology pipeline (10 steps).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_ros.fuser import Fuser
from fusion_ros.methods.base import FusionMethod
from fusion_ros.options import build_options
from fusion_ros.registry import get_method_class, method_names

H, W = 37, 53  # odd, and not a multiple of any network's stride or padding unit
CPU = torch.device("cpu")


def _random_init(name: str, tiny_config: bool, **options: object) -> Callable[[Path, int], FusionMethod]:
    def build(weights_dir: Path, seed: int) -> FusionMethod:
        cls = get_method_class(name)
        opts = build_options(cls.Options, options, name)
        if tiny_config:  # the method draws its weights from a generator seeded with ``seed``
            return cls(opts, CPU, torch.float32, weights_dir, random_init=True, config="test_tiny", seed=seed)
        with torch.random.fork_rng():  # FusionINV's tiny pipeline seeds its own forked RNG; belt and braces
            torch.manual_seed(seed)
            return cls(opts, CPU, torch.float32, weights_dir, random_init=True)

    return build


#: How to build the network methods with random weights; weight-free methods are built by name.
TINY_BUILDERS: dict[str, Callable[[Path, int], FusionMethod]] = {
    "dmfuse": _random_init("dmfuse", tiny_config=True),
    "defusion": _random_init("defusion", tiny_config=True),
    "fusioninv": _random_init("fusioninv", tiny_config=False, steps=10, long_side=0),
}
#: FusionINV's tiny pipeline still runs 10 diffusion steps per call (seconds each): out of the inner loop.
SLOW = {"fusioninv"}


def _params() -> list[object]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in method_names()]


def _fuser(name: str, weights_dir: Path, seed: int = 0) -> Fuser:
    """A Fuser running ``name``; network weights drawn from ``seed``."""
    cls = get_method_class(name)
    if cls.weights_key is None:
        return Fuser(name, device="cpu", warmup=False)
    assert name in TINY_BUILDERS, f"method {name!r} needs weights: add a tiny random-weight builder to this test"
    fuser = Fuser("average", device="cpu", warmup=False)  # the Fuser's own parts; the method is swapped in
    fuser.method = TINY_BUILDERS[name](weights_dir, seed)
    fuser.method_name = name
    return fuser


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    hot = ((x - 30) ** 2 + (y - 15) ** 2 < 60).astype(np.float64)  # a warm blob: structure, not only noise
    return {
        "thermal16": (28000 + 2500 * hot + rng.normal(0, 80, (H, W))).astype(np.uint16),
        "thermal8": (60 + 150 * hot + rng.normal(0, 6, (H, W))).clip(0, 255).astype(np.uint8),
        "rgb": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    }


@pytest.mark.parametrize("name", _params())
def test_output_follows_the_visible_frame(name: str, tmp_path: Path) -> None:
    fuser = _fuser(name, tmp_path)
    inputs = _inputs()
    rgb = inputs["rgb"]
    grey = np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    for thermal in (inputs["thermal16"], inputs["thermal8"]):
        for visible in (rgb, grey, grey[..., None]):
            out = fuser(thermal, visible)
            assert out.shape == visible.shape and out.dtype == np.uint8, (thermal.dtype, visible.shape)
    colour = fuser(inputs["thermal16"], rgb)
    assert len(np.unique(colour)) > 1, "constant output"


@pytest.mark.parametrize("name", _params())
def test_method_returns_a_tensor_like_its_input(name: str, tmp_path: Path) -> None:
    method = _fuser(name, tmp_path).method
    gen = torch.Generator().manual_seed(0)
    channels = 1 if method.color_space == "luma" else 3
    ir = torch.rand(2, 1, H, W, generator=gen)
    vis = torch.rand(2, channels, H, W, generator=gen)
    with torch.inference_mode():
        out = method.fuse(ir, vis)
    assert out.shape == vis.shape and out.dtype == vis.dtype and out.device == vis.device
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", _params())
def test_same_input_and_seed_give_the_same_output(name: str, tmp_path: Path) -> None:
    """Frame after frame, and in a second instance built from the same seed (a restarted node)."""
    inputs = _inputs()
    first = _fuser(name, tmp_path)
    out = first(inputs["thermal16"], inputs["rgb"])
    np.testing.assert_array_equal(first(inputs["thermal16"], inputs["rgb"]), out)
    np.testing.assert_array_equal(_fuser(name, tmp_path)(inputs["thermal16"], inputs["rgb"]), out)
