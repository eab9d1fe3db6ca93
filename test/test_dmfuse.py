"""DMFuse: parity with the authors' code (golden fixtures in ../shared), checkpoint loading, the
chunked criss-cross attention, seeded noise, and both training stages on tiny generated data.

Parity tolerance: the suite's relative rule (``_tolerance.py``, from the golden README).
Observed on the development machine (torch 2.13 CPU): U-Net features 1.26e-5 (small config) and
1.31e-5 (quarter config); head encoders 2.4e-7, CAIM outputs 2.4e-7, fused output 6.7e-8; the whole
method (NHWC, fused-kernel CAIM, encoders folded per pass) 2.5e-6 on the padded tanh output; noisy
U-Net inputs and preprocessed inputs bit-exact; fused PNG with ``authors_io`` identical to the
authors' (0 of 10,530 pixels differ). These are with 2 threads; with OMP_NUM_THREADS=1 the float
rounding differs: features 1.36e-5 / 1.22e-5, whole method 3.9e-6, one PNG pixel off by 1.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from _tolerance import assert_close_to_reference, assert_grey_levels_close
from fusion_ros.errors import WeightsError
from fusion_ros.methods import dmfuse as D
from fusion_ros.methods.dmfuse.testing import tiny_method
from fusion_ros.options import build_options

MODALITIES = ("ir", "vis")


class Golden:
    """The ../shared/golden/dmfuse fixtures: inputs, saved levels and noise (IR then visible; t = 5, 50, 100)."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        calls = json.loads((folder / "case1_levels.json").read_text())["calls"]
        self.levels = torch.tensor(
            [[[calls[f"{m}_t{t}"]["used_float32"]] for t in D.TIMESTEPS] for m in MODALITIES], dtype=torch.float32
        )  # (2, 3, 1)
        self.noise = torch.stack(
            [torch.stack([self.tensor(f"case1_noise_t{t}_{m}") for t in D.TIMESTEPS]) for m in MODALITIES]
        )  # (2, 3, 1, 3, 96, 128)
        self.inputs = {m: self.tensor(f"case1_input_{m}")[:, :1] for m in MODALITIES}  # (1,1,96,128) in [-1,1]

    def array(self, name: str) -> np.ndarray:
        return np.load(self.dir / f"{name}.npy")

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.array(name))

    def png(self, name: str) -> np.ndarray:
        return np.array(Image.open(self.dir / name))


@pytest.fixture(scope="module")
def golden(shared_dir: Path) -> Golden:
    return Golden(shared_dir / "golden" / "dmfuse")


@pytest.fixture(scope="module")
def quarter_seed0() -> D.SR3UNet:
    """The golden quarter U-Net: torch.manual_seed(0) then construction (the authors' init order)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return D.SR3UNet(D.CONFIGS["quarter"]).eval()


# ---------------------------------------------------------------------------------------------
# Parity with the authors' code
# ---------------------------------------------------------------------------------------------


def test_dmfuse_parity_schedule_and_noisy_inputs(golden: Golden) -> None:
    """Cosine schedule values and x_t = γx + √(1-γ²)ε are exactly the authors'."""
    checks = json.loads((golden.dir / "case1_levels.json").read_text())["schedule_check"]
    s = D.sqrt_alphas_cumprod_prev(D.cosine_betas())
    for key, value in checks.items():
        if key.startswith("sqrt_alphas_cumprod_prev["):
            assert s[int(key.split("[")[1].rstrip("]"))] == pytest.approx(value, rel=1e-12, abs=1e-15)
    for mi, m in enumerate(MODALITIES):
        for ti, t in enumerate(D.TIMESTEPS):
            x_t = D.DMFuseModel.q_sample(golden.inputs[m], golden.levels[mi, ti], golden.noise[mi, ti])
            np.testing.assert_array_equal(x_t.numpy(), golden.array(f"case1_xnoisy_t{t}_{m}"))  # elementwise: no rounding choice


@pytest.mark.slow
@pytest.mark.parametrize("config", ["small", "quarter"])
def test_dmfuse_parity_unet_features(golden: Golden, quarter_seed0: D.SR3UNet, config: str) -> None:
    """U-Net with the golden weights + saved levels/noise reproduces the authors' features (observed 1.3e-5)."""
    if config == "small":
        unet = D.load_unet(golden.dir / "unet_small_seed0.safetensors", D.CONFIGS["small"])
        prefix = "case1"
    else:
        unet = quarter_seed0
        prefix = "case1q"
    model = D.DMFuseModel(unet, D.DMFuseHead(D.CONFIGS[config].feature_channels())).eval()
    with torch.inference_mode():
        for mi, m in enumerate(MODALITIES):
            feats = model.features(golden.inputs[m], golden.levels[mi], golden.noise[mi])
            for level, f in enumerate(feats):
                assert_close_to_reference(f, golden.array(f"{prefix}_feats_{m}_l{level}"), what=f"{prefix} {m} level {level}")


@pytest.mark.parametrize("filename", ["head_official.model", "head_official.safetensors"])
def test_dmfuse_parity_head(golden: Golden, filename: str) -> None:
    """Released head (cuda-tagged pickle or safetensors) on the authors' quarter features: encoders,
    CAIM and fused output match (observed 2.4e-7, 2.4e-7, 6.7e-8)."""
    head = D.load_head(golden.dir / filename)
    feats = {m: [golden.tensor(f"case1q_feats_{m}_l{level}") for level in range(5)] for m in MODALITIES}
    with torch.inference_mode():
        enc = {m: head.encode(feats[m]) for m in MODALITIES}
        for m in MODALITIES:
            for level, e in enumerate(enc[m]):
                assert_close_to_reference(e, golden.array(f"case1q_enc_{m}_l{level}"), what=f"enc {m} level {level}")
        fused_levels = head.fuse(enc["ir"], enc["vis"])
        for level, f in enumerate(fused_levels):
            assert_close_to_reference(f, golden.array(f"case1q_crossfused_l{level}"), what=f"CAIM level {level}")
        assert_close_to_reference(head.decode(fused_levels), golden.array("case1_fused"), what="head output")


@pytest.mark.slow
def test_dmfuse_parity_end_to_end_png(golden: Golden, quarter_seed0: D.SR3UNet) -> None:
    """The method with ``authors_io`` turns the golden PNG pair into the authors' fused PNG (±1 allowed; observed identical)."""
    opts = build_options(D.DMFuseOptions, {"authors_io": True}, "dmfuse")
    method = D.DMFuse(opts, torch.device("cpu"), torch.float32, golden.dir, random_init=True)
    method.model.unet.load_state_dict(quarter_seed0.state_dict())
    method.model.head.load_state_dict(D.load_head(golden.dir / "head_official.model").state_dict())
    ir, vis = (torch.from_numpy(golden.png(f"case1_{m}.png")).float()[None, None] / 255 for m in MODALITIES)
    x_ir, x_vis = method.prepare(ir), method.prepare(vis)
    # uint8 → float64 → float32, white padding: elementwise, so exact
    np.testing.assert_array_equal(x_ir.numpy(), golden.array("case1_input_ir")[:, :1])
    np.testing.assert_array_equal(x_vis.numpy(), golden.array("case1_input_vis")[:, :1])
    with torch.inference_mode():  # observed 2.5e-6
        out = method.model(x_ir, x_vis, golden.levels, golden.noise)
        assert_close_to_reference(out, golden.array("case1_fused"), what="whole model")
        fused = method.fuse(ir, vis, levels=golden.levels, noise=golden.noise)
    got = np.rint(fused[0, 0].numpy() * 255).astype(np.uint8)
    assert got.shape == (90, 117)
    assert_grey_levels_close(got, golden.png("case1_fused.png"), what="authors' PNG")


# ---------------------------------------------------------------------------------------------
# Criss-cross attention
# ---------------------------------------------------------------------------------------------


def _dense_criss_cross(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference: full HW×HW attention masked to each pixel's row and column (itself once)."""
    b, _, h, w = q.shape
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    allowed = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
    energy = torch.einsum("bcp,bcn->bpn", q.flatten(2), k.flatten(2)).masked_fill(~allowed, float("-inf"))
    out = torch.einsum("bpn,bcn->bcp", energy.softmax(-1), v.flatten(2))
    return out.view(b, -1, h, w)


def _qkv(b: int, h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(h * w)
    q, k = (torch.randn(b, 4, h, w, generator=gen, dtype=dtype) * 3 for _ in range(2))
    v = torch.randn(b, w, h, 32, generator=gen, dtype=dtype).permute(0, 3, 2, 1)  # strided, like a permuted map
    return q, k, v


@pytest.mark.parametrize("shape", [(1, 7, 5), (2, 6, 11), (1, 16, 16)])
@pytest.mark.parametrize("max_elements", [1, 50, 1 << 22])
def test_dmfuse_chunked_attention_equals_full(shape: tuple[int, int, int], max_elements: int) -> None:
    """The chunked two-branch softmax (float64 and training path) is the dense criss-cross attention."""
    q, k, v = _qkv(*shape, torch.float64)
    got = D.criss_cross_attention(q, k, v, max_elements=max_elements)
    assert_close_to_reference(got, _dense_criss_cross(q, k, v), rel=1e-10, what="float64 identity")


@pytest.mark.parametrize("shape", [(1, 7, 5), (2, 6, 11), (1, 40, 48)])
def test_dmfuse_fused_kernel_attention_equals_full(shape: tuple[int, int, int]) -> None:
    """The CPU inference path (PyTorch's fused attention kernel, float32) agrees with the dense one."""
    assert D.head._FLASH_CPU is not None  # torch 2.13 has it; otherwise the chunked path would be tested twice
    q, k, v = _qkv(*shape, torch.float32)
    with torch.inference_mode():
        got = D.criss_cross_attention(q, k, v)
    assert_close_to_reference(got, _dense_criss_cross(q.double(), k.double(), v.double()), what="fused kernel")


def test_dmfuse_caim_query_comes_from_other_modality() -> None:
    """ir' = ir + γ·CC(q(vis), k(ir), v(ir)): swapping the inputs swaps the outputs."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        caim = D.CAIM(32)
    with torch.no_grad():
        caim.gamma.fill_(0.5)
    gen = torch.Generator().manual_seed(0)
    ir, vis = torch.randn(1, 32, 6, 9, generator=gen), torch.randn(1, 32, 6, 9, generator=gen)
    a_ir, a_vis = caim(ir, vis)
    b_vis, b_ir = caim(vis, ir)
    torch.testing.assert_close(a_ir, b_ir)
    torch.testing.assert_close(a_vis, b_vis)
    q = torch.nn.functional.conv2d(vis, caim.query_conv.weight, caim.query_conv.bias)
    k = torch.nn.functional.conv2d(ir, caim.key_conv.weight, caim.key_conv.bias)
    v = torch.nn.functional.conv2d(ir, caim.value_conv.weight, caim.value_conv.bias)
    assert_close_to_reference(a_ir, ir + 0.5 * _dense_criss_cross(q, k, v), what="CAIM")


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _tiny_unet(seed: int = 0) -> D.SR3UNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return D.SR3UNet(D.CONFIGS["test_tiny"]).eval()


def test_dmfuse_head_loads_strictly_in_every_format(golden: Golden, tmp_path: Path) -> None:
    ref = D.load_head(golden.dir / "head_official.model").state_dict()
    assert len(ref) == 57
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": OrderedDict(ref), "epoch": 7}, wrapped)
    combined = tmp_path / "combined.safetensors"
    save_file({**{f"head.{k}": v for k, v in ref.items()}, **{f"unet.{k}": v for k, v in _tiny_unet().state_dict().items()}}, combined)
    for path in (golden.dir / "head_official.safetensors", wrapped):
        got = D.load_head(path).state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    parts = D.split_checkpoint(combined)
    assert set(parts) == {"head", "unet"} and set(parts["head"]) == set(ref)


def test_dmfuse_unet_loads_strictly_in_every_format(tmp_path: Path) -> None:
    """Plain state (safetensors, .pth), the authors' GaussianDiffusion layout (denoise_fn. + 12 buffers)."""
    from fusion_ros.training.dmfuse_ddpm import gaussian_diffusion_state

    unet = _tiny_unet(1)
    ref = unet.state_dict()
    save_file(dict(ref), tmp_path / "plain.safetensors")
    torch.save(OrderedDict(ref), tmp_path / "plain.pth")
    gd = gaussian_diffusion_state(unet)
    assert set(D.SCHEDULE_BUFFERS) <= set(gd) and len(gd) == len(ref) + 12
    assert all(gd[k].shape == (D.N_TIMESTEP,) for k in D.SCHEDULE_BUFFERS)
    torch.save(gd, tmp_path / "ddpm_gen.pth")
    for name in ("plain.safetensors", "plain.pth", "ddpm_gen.pth"):
        got = D.load_unet(tmp_path / name, D.CONFIGS["test_tiny"]).state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in ref), name
    assert set(D.split_checkpoint(tmp_path / "ddpm_gen.pth")) == {"unet"}


def test_dmfuse_wrong_files_raise_weights_error(golden: Golden, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        D.load_head(garbage)
    with pytest.raises(WeightsError, match="not found"):
        D.load_head(tmp_path / "missing.model")
    with pytest.raises(WeightsError, match="missing keys"):
        D.load_unet(golden.dir / "head_official.model")  # a head is not a U-Net
    with pytest.raises(WeightsError, match="wrong shapes"):
        D.load_unet(golden.dir / "unet_small_seed0.safetensors", D.CONFIGS["quarter"])  # small weights, quarter net
    state = D.load_head(golden.dir / "head_official.model").state_dict()
    del state["conv_t2.conv2d.bias"]  # even an unused tensor is required: strict
    save_file(dict(state), tmp_path / "short.safetensors")
    with pytest.raises(WeightsError, match="conv_t2.conv2d.bias"):
        D.load_head(tmp_path / "short.safetensors")
    gd = {"denoise_fn." + k: v for k, v in _tiny_unet().state_dict().items()} | {"extra": torch.zeros(1)}
    torch.save(gd, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="unexpected keys: extra"):
        D.load_unet(tmp_path / "extra.pth", D.CONFIGS["test_tiny"])


def test_dmfuse_registered_and_unavailable_without_weights(tmp_path: Path) -> None:
    from fusion_ros.registry import get_method_class, method_names
    from fusion_ros.weights import manifest

    assert "dmfuse" in method_names() and get_method_class("dmfuse") is D.DMFuse
    assert D.DMFuse.color_space == "luma"
    entry = manifest()["dmfuse"]
    assert entry["files"] == [D.DMFuse.HEAD_FILE, D.DMFuse.UNET_FILE]
    reason = D.DMFuse.unavailable_reason(tmp_path)
    assert reason is not None and "model.model" in reason and "ddpm_gen.pth" in reason


# ---------------------------------------------------------------------------------------------
# The method: noise, batching, weights option, Fuser
# ---------------------------------------------------------------------------------------------


def _pair(h: int = 40, w: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=gen), torch.rand(1, 1, h, w, generator=gen)


@pytest.mark.slow
def test_dmfuse_seeded_noise_is_deterministic(tmp_path: Path) -> None:
    ir, vis = _pair()
    a, b = tiny_method(tmp_path), tiny_method(tmp_path, init_seed=1)
    b.model.load_state_dict(a.model.state_dict())
    with torch.inference_mode():
        first = a.fuse(ir, vis)
        assert first.shape == (1, 1, 40, 50) and 0 <= float(first.min()) and float(first.max()) <= 1
        # The comparisons below only mean something if the noise reaches the output: the output must vary.
        assert float(first.std()) > 1e-3, "tiny model saturates: its output does not depend on the noise"
        assert torch.equal(first, a.fuse(ir, vis))  # frame after frame
        assert torch.equal(first, b.fuse(ir, vis))  # process after process
        levels, noise = a._levels_and_noise(1, 64, 64)
        for bounds, lv in zip(a.model._level_bounds, levels[0, :, 0]):
            assert min(bounds) <= float(lv) <= max(bounds)
        assert torch.equal(first, a.fuse(ir, vis, levels=levels, noise=noise))  # injection = drawn values
        fresh = tiny_method(tmp_path, seed=-1)
        fresh.model.load_state_dict(a.model.state_dict())
        assert not torch.equal(fresh.fuse(ir, vis), fresh.fuse(ir, vis))  # the authors' behaviour
        other = tiny_method(tmp_path, seed=1)
        other.model.load_state_dict(a.model.state_dict())
        assert not torch.equal(first, other.fuse(ir, vis))


def test_dmfuse_batched_unet_equals_sequential(tmp_path: Path) -> None:
    ir, vis = _pair(64, 64, seed=3)
    seq, bat = tiny_method(tmp_path, unet_batch="off"), tiny_method(tmp_path, unet_batch="on")
    assert not seq.batched and bat.batched
    bat.model.load_state_dict(seq.model.state_dict())
    with torch.inference_mode():
        assert_close_to_reference(bat.fuse(ir, vis), seq.fuse(ir, vis), what="batched vs sequential U-Net")


@pytest.mark.slow
def test_dmfuse_weights_option_takes_head_unet_or_combined_file(tmp_path: Path) -> None:
    ref = tiny_method(tmp_path)
    head_state = {k: v.contiguous() for k, v in ref.model.head.state_dict().items()}  # NHWC on CPU
    unet_state = {k: v.contiguous() for k, v in ref.model.unet.state_dict().items()}
    torch.save(OrderedDict(head_state), tmp_path / "head.model")
    save_file(dict(unet_state), tmp_path / "unet.safetensors")
    save_file({**head_state, **{f"denoise_fn.{k}": v for k, v in unet_state.items()}}, tmp_path / "both.safetensors")
    ir, vis = _pair()
    with torch.inference_mode():
        expected = ref.fuse(ir, vis)
        for options in (
            {"weights": str(tmp_path / "both.safetensors")},
            {"weights": str(tmp_path / "head.model"), "unet_weights": str(tmp_path / "unet.safetensors")},
        ):
            assert torch.equal(tiny_method(tmp_path, **options).fuse(ir, vis), expected)
    with pytest.raises(WeightsError, match="not found"):  # the other part comes from the weights folder
        tiny_method(tmp_path, weights=str(tmp_path / "head.model"))


@pytest.mark.slow
def test_dmfuse_fuser_with_weights_folder(golden: Golden, quarter_seed0: D.SR3UNet, tmp_path: Path) -> None:
    """Fuser end to end with the two files in a weights folder: grey in → grey out, colour in → chroma kept."""
    from fusion_ros.fuser import Fuser

    (tmp_path / "dmfuse").mkdir()
    (tmp_path / "dmfuse" / "model.model").write_bytes((golden.dir / "head_official.model").read_bytes())
    torch.save({"denoise_fn." + k: v for k, v in quarter_seed0.state_dict().items()}, tmp_path / "dmfuse" / "ddpm_gen.pth")
    fuser = Fuser("dmfuse", device="cpu", weights_dir=tmp_path, warmup=False)
    ir, vis = golden.png("case1_ir.png"), golden.png("case1_vis.png")
    grey = fuser(ir, vis)
    assert grey.shape == vis.shape and grey.dtype == np.uint8
    assert np.array_equal(grey, fuser(ir, vis))
    rgb = np.stack([vis, np.clip(vis.astype(int) + 40, 0, 255).astype(np.uint8), vis], axis=-1)
    colour = fuser(ir, rgb)
    assert colour.shape == rgb.shape and colour.dtype == np.uint8
    assert np.abs(colour[..., 1].astype(int) - colour[..., 0]).mean() > 20  # green cast kept


# ---------------------------------------------------------------------------------------------
# Training (tiny U-Net, generated images)
# ---------------------------------------------------------------------------------------------


def _write_scene(path: Path, seed: int, size: int = 32) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = 0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(1, 3) * x + rng.uniform(0, 1))) * np.cos(2 * np.pi * rng.uniform(1, 3) * y)
    img = img + 0.4 * ((x - rng.uniform(0.2, 0.8)) ** 2 + (y - rng.uniform(0.2, 0.8)) ** 2 < 0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def _run(module: object, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return module.run(parser.parse_args(argv))  # type: ignore[attr-defined]


def _log(path: Path, column: str = "loss") -> list[float]:
    with path.open() as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def _first_vs_last(values: list[float], n: int) -> tuple[float, float]:
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


@pytest.mark.slow
def test_dmfuse_train_stages_loss_falls_and_checkpoints_round_trip(tmp_path: Path) -> None:
    from fusion_ros.training import dmfuse as stage2
    from fusion_ros.training import dmfuse_ddpm as stage1
    from fusion_ros.training.dmfuse_ddpm import GEN_FILE, OPT_FILE

    for i in range(4):
        _write_scene(tmp_path / "images" / f"{i}.png", i)
    for i in range(2):  # one full batch of whole images: the head's loss then falls steadily
        _write_scene(tmp_path / "pairs" / "ir" / f"{i}.png", 10 + i)
        _write_scene(tmp_path / "pairs" / "vi" / f"{i}.png", 20 + i)
    common = ["--config", "test_tiny", "--size", "32", "--device", "cpu", "--workers", "0"]

    # Stage 1: DDPM on the U-Net.
    ddpm = tmp_path / "ddpm"
    stage1_args = ["--images", str(tmp_path / "images"), "--out", str(ddpm), "--batch-size", "4", "--lr", "3e-3", "--save-every", "1000", *common]
    assert _run(stage1, [*stage1_args, "--iters", "40"]) == 0
    first, last = _first_vs_last(_log(ddpm / "train_log.csv"), 10)
    assert last < 0.8 * first, (first, last)
    gen = torch.load(ddpm / GEN_FILE, weights_only=True)
    assert set(D.SCHEDULE_BUFFERS) <= set(gen) and all(k in D.SCHEDULE_BUFFERS or k.startswith("denoise_fn.") for k in gen)
    unet = D.load_unet(ddpm / GEN_FILE, D.CONFIGS["test_tiny"])
    assert _run(stage1, [*stage1_args, "--iters", "45", "--resume"]) == 0
    assert torch.load(ddpm / OPT_FILE, weights_only=True)["iter"] == 45
    assert len(_log(ddpm / "train_log.csv")) == 45
    resumed = D.load_unet(ddpm / GEN_FILE, D.CONFIGS["test_tiny"]).state_dict()
    assert any(not torch.equal(resumed[k], v) for k, v in unet.state_dict().items())

    # Stage 2: the head on pairs, with the stage-1 U-Net frozen.
    head_dir = tmp_path / "head"
    stage2_args = ["--pairs", str(tmp_path / "pairs"), "--unet", str(ddpm / GEN_FILE), "--out", str(head_dir), "--batch-size", "2", "--lr", "2e-4", *common]
    assert _run(stage2, [*stage2_args, "--epochs", "10"]) == 0
    first, last = _first_vs_last(_log(head_dir / "train_log.csv"), 3)
    assert last < 0.95 * first, (first, last)
    channels = D.CONFIGS["test_tiny"].feature_channels()
    head = D.load_head(head_dir / "model.model", channels)
    assert len(head.state_dict()) == 57
    epoch_file = D.load_head(head_dir / "fuse_Epoch_9.model", channels).state_dict()
    assert all(torch.equal(v, epoch_file[k]) for k, v in head.state_dict().items())
    assert _run(stage2, [*stage2_args, "--epochs", "11", "--resume"]) == 0
    assert torch.load(head_dir / "train_state.pth", weights_only=True)["step"] == 11
    assert (head_dir / "fuse_Epoch_10.model").is_file() and len(_log(head_dir / "train_log.csv")) == 11
    # The trained pair loads into the method through the weights options.
    method = tiny_method(tmp_path, weights=str(head_dir / "model.model"), unet_weights=str(ddpm / GEN_FILE))
    with torch.inference_mode():
        assert method.fuse(*_pair()).shape == (1, 1, 40, 50)


@pytest.mark.slow
def test_dmfuse_train_stages_are_seeded_and_leave_the_global_rng_alone(tmp_path: Path) -> None:
    """The seed decides both stages (weight init, crops, noise), and the caller's RNG is as it was."""
    from fusion_ros.training import dmfuse as stage2
    from fusion_ros.training import dmfuse_ddpm as stage1
    from fusion_ros.training.dmfuse_ddpm import GEN_FILE

    torch.set_num_threads(1)  # speed only (tiny tensors); restored by conftest
    for i in range(2):
        _write_scene(tmp_path / "images" / f"{i}.png", i)
        _write_scene(tmp_path / "pairs" / "ir" / f"{i}.png", 10 + i)
        _write_scene(tmp_path / "pairs" / "vi" / f"{i}.png", 20 + i)
    common = ["--config", "test_tiny", "--size", "32", "--device", "cpu", "--workers", "0", "--batch-size", "2"]
    global_state = torch.random.get_rng_state()
    for run, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        unet = tmp_path / run / "ddpm" / GEN_FILE
        assert _run(stage1, ["--images", str(tmp_path / "images"), "--out", str(unet.parent), "--iters", "1", "--seed", seed, *common]) == 0
        assert _run(stage2, ["--pairs", str(tmp_path / "pairs"), "--unet", str(unet), "--out", str(tmp_path / run / "head"),
                             "--epochs", "1", "--seed", seed, *common]) == 0
    assert torch.equal(torch.random.get_rng_state(), global_state)
    for name in (f"ddpm/{GEN_FILE}", "head/model.model"):
        a, b, c = (torch.load(tmp_path / run / name, weights_only=True) for run in "abc")
        assert all(torch.equal(v, b[k]) for k, v in a.items()), name
        assert any(not torch.equal(v, c[k]) for k, v in a.items() if v.is_floating_point()), name


def test_dmfuse_loss_weights_are_options_defaulting_to_the_authors_code() -> None:
    """--w-ssim/--w-intensity/--w-texture default to args_fusion.py's 10/14/16 and weight the terms."""
    from fusion_ros.training import dmfuse as stage2

    parser = argparse.ArgumentParser()
    stage2.add_arguments(parser)
    args = parser.parse_args(["--pairs", "p", "--unet", "u"])
    assert (args.w_ssim, args.w_intensity, args.w_texture) == (10.0, 14.0, 16.0)
    paper = parser.parse_args(["--pairs", "p", "--unet", "u", "--w-ssim", "1", "--w-intensity", "4", "--w-texture", "20"])
    gen = torch.Generator().manual_seed(0)
    ir, vi, fused = (torch.rand(2, 1, 32, 32, generator=gen) for _ in range(3))
    for a in (args, paper):
        t = stage2.fusion_loss(ir, vi, fused, a.w_ssim, a.w_intensity, a.w_texture)
        expected = a.w_ssim * (1 - t["ssim"]) + a.w_intensity * t["intensity"] + a.w_texture * t["texture"]
        torch.testing.assert_close(t["loss"], expected)
    assert 0 < float(t["ssim"]) < 1 and float(t["intensity"]) > 0 and float(t["texture"]) > 0


def test_dmfuse_train_targets_on_the_command_line() -> None:
    """``fusion-ros train`` offers both stages; the shared helper module is not a target."""
    from fusion_ros.commands import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    targets = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"dmfuse", "dmfuse-ddpm"} <= set(targets) and not any(t.startswith("_") for t in targets)
    args = parser.parse_args(["dmfuse-ddpm", "--images", "imgs"])
    assert args.iters == 1_000_000 and args.config == "quarter" and args.seed == 0 and args.workers == 2
