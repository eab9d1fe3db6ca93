"""FusionINV on a tiny random SD-topology pipeline built in code (≈2 MB, no download, CPU, seconds).

The tiny model has SD v1.5's block structure (4 levels, cross-attention up blocks 1-3, ×8 VAE), so
layer selection, the inversion, the K/V schedule, FreeU and loading run exactly as with the real model.
Algebraic identities (exact inversion, lean = authors' scheme) are checked in float64, where roundoff
cannot hide a real difference.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion_ros.errors import ConfigError, InputError, MethodUnavailableError
from fusion_ros.methods import fusioninv as fi

diffusers = pytest.importorskip("diffusers")  # a CI dependency (requirements.txt); never absent there

H, W = 48, 64  # 6×8 latent: the UNet's three down-samplings still leave 1×1


def _pipeline(dtype: torch.dtype = torch.float32, freeu: bool = True) -> fi.FusionINVPipeline:
    parts = fi.tiny_components(seed=0)
    for key in ("unet", "vae", "text_encoder"):
        parts[key].to(dtype)
    return fi.FusionINVPipeline.from_components(
        parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"], freeu=freeu
    )


def _pair(batch: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(batch, 3, H, W, generator=g).to(dtype)
    ir = torch.rand(batch, 1, H, W, generator=g).to(dtype)
    return ir, vis


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch: pytest.MonkeyPatch) -> object:
    """Any hub access in these tests fails at once. The tiny model runs thousands of microsecond-sized
    ops per pair; one thread avoids OpenMP hand-offs that cost more than they gain (and collapse when
    the cores are shared)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- cheap parts


def test_fusioninv_module_imports_without_diffusers() -> None:
    code = "import sys, fusion_ros.methods.fusioninv as m; print(m.FusionINV.name, 'diffusers' in sys.modules, 'transformers' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout.split()
    assert out == ["fusioninv", "False", "False"]


def test_fusioninv_registered_as_rgb_method() -> None:
    from fusion_ros.registry import get_method_class

    cls = get_method_class("fusioninv")
    assert cls is fi.FusionINV and cls.color_space == "rgb" and cls.weights_key == "fusioninv"
    assert "CPU" in cls.cost


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [((528, 672), 672, (528, 672)), ((512, 640), 672, (536, 672)), ((480, 640), 672, (504, 672)),
     ((640, 480), 672, (672, 504)), ((517, 643), 0, (520, 640)), ((10, 10), 0, (8, 8))],
)
def test_fusioninv_working_size_multiple_of_8_keeps_aspect(size: tuple[int, int], long_side: int, expected: tuple[int, int]) -> None:
    assert fi.working_size(*size, long_side) == expected


def _authors_source(j: int) -> str | None:
    """The released code's rule, restated: the callback-set counter k lags the loop index by one;
    edits for k in [1, 90); IR K/V if k<40 or (k even and k<60); VIS K/V if k<70; else only contrast."""
    k = 0 if j == 0 else j - 1
    if not 1 <= k < 90:
        return None
    if k < 40 or (k % 2 == 0 and k < 60):
        return "infrared"
    return "visible" if k < 70 else "self"


def test_fusioninv_schedule_matches_authors_rule() -> None:
    sched = fi.InjectionSchedule()
    got = [sched.source(j) for j in range(90)]
    assert got == [_authors_source(j) for j in range(90)]
    assert got[:2] == [None, None] and got[2] == "infrared" and got[42] == "visible" and got[43] == "infrared"
    assert fi.InjectionSchedule().scaled(50) == fi.InjectionSchedule(0, 45, 20, 30, 35)
    assert fi.InjectionSchedule().scaled(100) == fi.InjectionSchedule()


def test_fusioninv_manifest_entries() -> None:
    from fusion_ros.weights import manifest

    entry = manifest()["fusioninv"]
    assert "stable-diffusion-v1-5/unet/diffusion_pytorch_model.safetensors" in entry["files"]
    assert "OpenRAIL-M" in entry["licence"] and "huggingface.co" in entry["source"]
    assert manifest()["taesd"]["licence"] == "MIT"


# --------------------------------------------------------------------------- attention processor


def test_fusioninv_contrast_is_sharpened_and_clipped() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 7, 4, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    scale = 0.5
    attn = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    for c in (1.1, 3.0):
        expected = (c * attn + (1 - c) / attn.shape[-1]).clamp(0, 1) @ v
        torch.testing.assert_close(fi._contrast_attention(q, k, v, c, scale), expected)
    # c = 3 pushes small weights below zero before the clip: the clip must be active in this case.
    assert ((3.0 * attn + (1 - 3.0) / attn.shape[-1]) < 0).any()
    torch.testing.assert_close(fi._contrast_attention(q, k, v, 1.0, scale), F.scaled_dot_product_attention(q, k, v, scale=scale))


def test_fusioninv_contrast_chunking_matches_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 33, 4, generator=g) for _ in range(3))
    whole = fi._contrast_attention(q, k, v, 1.3, 0.5)
    monkeypatch.setattr(fi, "_ATTN_CHUNK_ELEMS", 2 * 2 * 33 * 5)  # 5 queries per chunk
    torch.testing.assert_close(fi._contrast_attention(q, k, v, 1.3, 0.5), whole)


def test_fusioninv_processor_takes_source_keys_values_for_fusion_row_only() -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    x = torch.randn(3, 5, 8)  # [fusion, visible, infrared]
    ctl = fi.InjectionControl(pairs=1, contrast=1.0)
    proc = fi.FusionINVAttnProcessor("layer", ctl)
    plain = AttnProcessor2_0()(attn, x)
    with torch.inference_mode():
        assert torch.equal(proc(attn, x), plain)  # no source: untouched
        for source, row in (("infrared", 2), ("visible", 1), ("self", 0)):
            ctl.source = source
            out = proc(attn, x)
            q = attn.to_q(x[0:1]).view(1, 5, 2, 4).transpose(1, 2)
            kk = attn.to_k(x[row:row + 1]).view(1, 5, 2, 4).transpose(1, 2)
            vv = attn.to_v(x[row:row + 1]).view(1, 5, 2, 4).transpose(1, 2)
            ref = F.scaled_dot_product_attention(q, kk, vv).transpose(1, 2).reshape(1, 5, 8)
            torch.testing.assert_close(out[0:1], attn.to_out[0](ref))
            torch.testing.assert_close(out[1:], plain[1:])


# --------------------------------------------------------------------------- pipeline mechanics


def test_fusioninv_injected_layers_are_the_two_highest_resolution_decoder_self_attentions() -> None:
    pipe = _pipeline()
    expected = [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (2, 3) for a in (0, 1)]
    assert pipe.layer_names == expected
    procs = pipe.unet.attn_processors
    ours = sorted(n[: -len(".processor")] for n, p in procs.items() if isinstance(p, fi.FusionINVAttnProcessor))
    assert ours == sorted(expected)
    assert len(procs) == 20  # every other layer keeps its default processor


def test_fusioninv_injection_schedule_hits_intended_layers_and_steps() -> None:
    """Instrumented processors over the authors' 90 denoising steps (100 steps, skip 10)."""
    pipe = _pipeline()
    pipe.control.trace = []
    pipe.scheduler.set_timesteps(100)
    timesteps = pipe.scheduler.timesteps[10:]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, H // 8, W // 8, generator=g).repeat(3, 1, 1, 1)
    x[2] = torch.randn(4, H // 8, W // 8, generator=g)
    noise = torch.randn(len(timesteps), 1, 4, H // 8, W // 8, generator=g).repeat(1, 3, 1, 1, 1)
    with torch.inference_mode():
        out = pipe.denoise(x, noise, timesteps, schedule=fi.InjectionSchedule(), contrast=1.1)
    trace = pipe.control.trace
    by_step: dict[int, set[tuple[str, str]]] = {}
    for layer, step, source in trace:
        by_step.setdefault(step, set()).add((layer, source))
    for j in range(90):
        src = _authors_source(j)
        expected = {(name, src) for name in pipe.layer_names} if src else set()
        assert by_step.get(j, set()) == expected, j
    assert len(trace) == 4 * sum(_authors_source(j) is not None for j in range(90))
    # The edit changes the fusion row; fusion and visible start equal and share noise, so without edits
    # they would stay equal (checked below).
    assert (out[0] - out[1]).abs().max() > 1e-3
    pipe.control.trace = None
    with torch.inference_mode():
        same = pipe.denoise(x, noise, timesteps, schedule=None)
    torch.testing.assert_close(same[0], same[1])
    torch.testing.assert_close(same[1], out[1])  # the visible branch is never edited


def test_fusioninv_inversion_is_exact() -> None:
    """Denoising the visible branch with its own noise maps returns its latent (edit-friendly inversion)."""
    pipe = _pipeline(torch.float64)
    ir, vis = _pair(dtype=torch.float64)
    with torch.inference_mode():
        lat = pipe.encode(torch.cat([vis, ir.expand(-1, 3, -1, -1)]))
        inv = pipe.invert(lat[:1], lat[1:], steps=50, skip_steps=5, direction_step_size=-0.12,
                          generator=torch.Generator().manual_seed(3))
        rec = pipe.denoise(inv.visible, inv.visible_noise, inv.timesteps)
        torch.testing.assert_close(rec, lat[:1], atol=1e-10, rtol=0)
        assert inv.visible_noise.shape == (45, 1, 4, H // 8, W // 8) and inv.visible_directions.shape == inv.visible_noise.shape
        # The check is sensitive: one perturbed noise map moves the result.
        bad = inv.visible_noise.clone()
        bad[20] += 0.01
        assert (pipe.denoise(inv.visible, bad, inv.timesteps) - lat[:1]).abs().max() > 1e-5
        # The infrared start latent is its forward sample shifted by s·n (the authors' stored latent).
        a_t = float(pipe.scheduler.alphas_cumprod[int(inv.timesteps[0])])
        noise_part = (inv.infrared - a_t**0.5 * lat[1:]) / (1 - a_t) ** 0.5
        vis_part = (inv.visible - a_t**0.5 * lat[:1]) / (1 - a_t) ** 0.5
        torch.testing.assert_close(noise_part, 0.88 * vis_part)


def test_fusioninv_one_batch3_pass_equals_authors_redundant_scheme() -> None:
    """With empty prompts the authors' swap/no-swap passes × CFG doubling give the single swapped pass."""
    pipe = _pipeline(torch.float64)
    ir, vis = _pair(dtype=torch.float64)
    kwargs = {"steps": 20, "skip_steps": 2, "long_side": 0, "schedule": fi.InjectionSchedule().scaled(20)}
    lean = pipe(ir, vis, **kwargs)
    authors = pipe(ir, vis, scheme="authors", **kwargs)
    torch.testing.assert_close(lean.images, authors.images, atol=1e-9, rtol=0)
    assert (lean.unet_calls, lean.unet_rows) == (2 * 18, 18 * 2 + 18 * 3)
    assert (authors.unet_calls, authors.unet_rows) == (2 * 20 + 2 * 18, 2 * 20 + 2 * 18 * 6)


def test_fusioninv_freeu_hooks_change_the_unet_and_box_scales_dc() -> None:
    x = torch.full((1, 2, 5, 6), 3.0)
    torch.testing.assert_close(fi._fourier_box(x, 0.2), torch.full_like(x, 0.6))
    y = torch.randn(1, 2, 5, 6)
    torch.testing.assert_close(fi._fourier_box(y, 1.0), y)
    on, off = _pipeline(), _pipeline(freeu=False)
    on.scheduler.set_timesteps(10)
    lat = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (on._eps(lat, on.scheduler.timesteps[3]) - off._eps(lat, on.scheduler.timesteps[3])).abs().max() > 1e-4
    again = fi.FusionINVPipeline(on.unet, on.vae, on.scheduler, on.prompt_embeds)  # reuse: hooks not doubled
    assert len(again.unet._fusioninv_freeu_hooks) == len(again.unet.up_blocks)


# --------------------------------------------------------------------------- the method


def _method(weights_dir: Path | None = None, **options: object) -> fi.FusionINV:
    from fusion_ros.fuser import create_method

    opts = {"steps": 20, "long_side": 0, **options}
    return create_method("fusioninv", device=torch.device("cpu"), dtype=torch.float32, weights_dir=weights_dir,
                         options=opts, random_init=weights_dir is None)  # type: ignore[return-value]


def test_fusioninv_output_size_dtype_range_and_batch_independence() -> None:
    method = _method(long_side=40)  # working 32×40 (aspect kept), result mapped back to 48×64
    ir, vis = _pair(batch=2)
    with torch.inference_mode():
        out = method.fuse(ir, vis)
        first = method.fuse(ir[:1], vis[:1])
    assert out.shape == vis.shape and out.dtype == vis.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # Same noise for every pair: batching changes only float32 rounding (amplified over the steps).
    torch.testing.assert_close(out[:1], first, atol=1e-3, rtol=0)
    assert (out[0] - out[1]).abs().max() > 1e-2


def test_fusioninv_through_fuser_uint8() -> None:
    from fusion_ros.fuser import Fuser

    fuser = Fuser("fusioninv", device="cpu", options={"steps": 10, "long_side": 32}, random_init=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    thermal = rng.integers(0, 65535, (30, 40), dtype=np.uint16)
    fused = fuser(thermal, rgb)
    assert fused.shape == rgb.shape and fused.dtype == np.uint8


def test_fusioninv_deterministic_with_seed() -> None:
    method = _method()
    ir, vis = _pair()
    with torch.inference_mode():
        a, b = method.fuse(ir, vis), method.fuse(ir, vis)
        other = _method(seed=2).fuse(ir, vis)
    assert torch.equal(a, b)
    assert (a - other).abs().max() > 1e-4


def test_fusioninv_progress_counts_steps_and_can_abort() -> None:
    method = _method(steps=10, skip_steps=20)  # skip 2 of 10
    calls: list[tuple[int, int]] = []
    method.progress = lambda done, total: calls.append((done, total))
    ir, vis = _pair()
    with torch.inference_mode():
        method.fuse(ir, vis)
    assert calls == [(i, 16) for i in range(1, 17)]

    class Stop(Exception):
        pass

    def abort(done: int, total: int) -> None:
        raise Stop

    method.progress = abort
    with pytest.raises(Stop), torch.inference_mode():
        method.fuse(ir, vis)
    assert method.pipeline.control.source is None  # processors left disarmed


def test_fusioninv_rejects_bad_inputs_and_options() -> None:
    method = _method(steps=10)
    with pytest.raises(InputError), torch.inference_mode():
        method.pipeline(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigError):
        _method(steps=10, skip_steps=99)


# --------------------------------------------------------------------------- weights, offline


def _save_tiny(root: Path) -> dict[str, object]:
    parts = fi.tiny_components(seed=0)
    sd = root / fi.SD_FOLDER
    for name, comp in parts.items():
        comp.save_pretrained(sd / name)
    return parts


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_fusioninv_unavailable_message_names_missing_folder(tmp_path: Path) -> None:
    reason = fi.FusionINV.unavailable_reason(tmp_path)
    assert reason is not None
    assert str(tmp_path / "stable-diffusion-v1-5") in reason and "unet/diffusion_pytorch_model.safetensors" in reason
    with pytest.raises(MethodUnavailableError, match="stable-diffusion-v1-5"):
        _method(weights_dir=tmp_path)


def test_fusioninv_loads_saved_folder_offline(tmp_path: Path, no_network: None) -> None:
    parts = _save_tiny(tmp_path)
    assert fi.FusionINV.unavailable_reason(tmp_path) is None
    assert "taesd" in (fi.unavailable_reason(tmp_path, "taesd") or "")
    loaded = _method(weights_dir=tmp_path, steps=10)
    assert not loaded.random_init
    reference = fi.FusionINVPipeline.from_components(
        parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"]
    )
    torch.testing.assert_close(loaded.pipeline.prompt_embeds, reference.prompt_embeds)
    ir, vis = _pair()
    with torch.inference_mode():
        got = loaded.fuse(ir, vis)
        opts = loaded.options
        want = reference(ir, vis, steps=10, skip_steps=1, long_side=0, schedule=fi.InjectionSchedule().scaled(10),
                         seed=opts.seed, contrast=opts.contrast).images
    torch.testing.assert_close(got, want)


def test_fusioninv_loads_taesd_offline(tmp_path: Path, no_network: None) -> None:
    _save_tiny(tmp_path)
    torch.manual_seed(0)
    tiny = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
    )
    tiny.save_pretrained(tmp_path / fi.TAESD_FOLDER)
    method = _method(weights_dir=tmp_path, steps=10, vae="taesd")
    assert type(method.pipeline.vae).__name__ == "AutoencoderTiny"
    ir, vis = _pair()
    with torch.inference_mode():
        out = method.fuse(ir, vis)
    assert out.shape == vis.shape and torch.isfinite(out).all()


def test_fusioninv_corrupt_weights_give_weights_error(tmp_path: Path, no_network: None) -> None:
    from fusion_ros.errors import WeightsError

    _save_tiny(tmp_path)
    (tmp_path / fi.SD_FOLDER / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="stable-diffusion-v1-5"):
        _method(weights_dir=tmp_path, steps=10)



def test_fusioninv_missing_diffusers_is_a_dependency_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fusion_ros.errors import DependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    assert "diffusers" in (fi.FusionINV.unavailable_reason(tmp_path) or "")
    with pytest.raises(DependencyError, match="diffusers"):
        fi.tiny_components()
