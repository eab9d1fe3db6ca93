"""FusionINV on a tiny random SD-topology pipeline built in code (≈2 MB, no download, CPU, seconds).

The tiny model has SD v1.5's block structure (4 levels, cross-attention up blocks 1-3, ×8 VAE), so
layer selection, the inversion, the K/V schedule, FreeU and loading run exactly as with the real model.
Algebraic identities (exact inversion, lean = authors' scheme) are checked in float64, where roundoff
cannot hide a real difference.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tolerance import assert_close_to_reference
from fusion_ros.errors import ConfigError, InputError, MethodUnavailableError
from fusion_ros.methods import fusioninv as fi
from fusion_ros.methods.fusioninv import attention, freeu

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


@pytest.mark.slow
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
        assert_close_to_reference(attention.contrast_attention(q, k, v, c, scale), expected, rel=1e-12, what=f"contrast {c}")
    # c = 3 pushes small weights below zero before the clip: the clip must be active in this case.
    assert ((3.0 * attn + (1 - 3.0) / attn.shape[-1]) < 0).any()
    plain = F.scaled_dot_product_attention(q, k, v, scale=scale)
    assert_close_to_reference(attention.contrast_attention(q, k, v, 1.0, scale), plain, rel=1e-12, what="contrast 1")


def test_fusioninv_contrast_chunking_matches_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 33, 4, generator=g) for _ in range(3))
    whole = attention.contrast_attention(q, k, v, 1.3, 0.5)
    monkeypatch.setattr(attention, "ATTN_CHUNK_ELEMS", 2 * 2 * 33 * 5)  # 5 queries per chunk
    assert_close_to_reference(attention.contrast_attention(q, k, v, 1.3, 0.5), whole, what="chunked")


def test_fusioninv_processor_takes_source_keys_values_for_fusion_row_only() -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    with torch.random.fork_rng():
        torch.manual_seed(0)
        attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))  # [fusion, visible, infrared]
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
            assert_close_to_reference(out[0:1], attn.to_out[0](ref), what=f"fusion row, {source}")
            assert_close_to_reference(out[1:], plain[1:], what=f"other rows, {source}")


# --------------------------------------------------------------------------- pipeline mechanics


def test_fusioninv_injected_layers_are_the_two_highest_resolution_decoder_self_attentions() -> None:
    pipe = _pipeline()
    expected = [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (2, 3) for a in (0, 1)]
    assert pipe.layer_names == expected
    procs = pipe.unet.attn_processors
    ours = sorted(n[: -len(".processor")] for n, p in procs.items() if isinstance(p, fi.FusionINVAttnProcessor))
    assert ours == sorted(expected)
    assert len(procs) == 20  # every other layer keeps its default processor


@pytest.mark.slow
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
    assert_close_to_reference(same[0], same[1], what="fusion = visible without edits")
    assert_close_to_reference(same[1], out[1], what="visible branch")  # never edited


@pytest.mark.slow
def test_fusioninv_inversion_is_exact() -> None:
    """Denoising the visible branch with its own noise maps returns its latent (edit-friendly inversion)."""
    pipe = _pipeline(torch.float64)
    ir, vis = _pair(dtype=torch.float64)
    with torch.inference_mode():
        lat = pipe.encode(torch.cat([vis, ir.expand(-1, 3, -1, -1)]))
        inv = pipe.invert(lat[:1], lat[1:], steps=50, skip_steps=5, direction_step_size=-0.12,
                          generator=torch.Generator().manual_seed(3))
        rec = pipe.denoise(inv.visible, inv.visible_noise, inv.timesteps)
        assert_close_to_reference(rec, lat[:1], rel=1e-10, what="float64 inversion round trip")
        assert inv.visible_noise.shape == (45, 1, 4, H // 8, W // 8) and inv.visible_directions.shape == inv.visible_noise.shape
        # The check is sensitive: one perturbed noise map moves the result.
        bad = inv.visible_noise.clone()
        bad[20] += 0.01
        assert (pipe.denoise(inv.visible, bad, inv.timesteps) - lat[:1]).abs().max() > 1e-5
        # The infrared start latent is its forward sample shifted by s·n (the authors' stored latent).
        a_t = float(pipe.scheduler.alphas_cumprod[int(inv.timesteps[0])])
        noise_part = (inv.infrared - a_t**0.5 * lat[1:]) / (1 - a_t) ** 0.5
        vis_part = (inv.visible - a_t**0.5 * lat[:1]) / (1 - a_t) ** 0.5
        assert_close_to_reference(noise_part, 0.88 * vis_part, rel=1e-10, what="infrared start latent")


@pytest.mark.slow
def test_fusioninv_one_batch3_pass_equals_authors_redundant_scheme() -> None:
    """With empty prompts the authors' swap/no-swap passes × CFG doubling give the single swapped pass."""
    pipe = _pipeline(torch.float64)
    ir, vis = _pair(dtype=torch.float64)
    kwargs = {"steps": 20, "skip_steps": 2, "long_side": 0, "schedule": fi.InjectionSchedule().scaled(20)}
    lean = pipe(ir, vis, **kwargs)
    authors = pipe(ir, vis, scheme="authors", **kwargs)
    assert_close_to_reference(lean.images, authors.images, rel=1e-9, what="float64: lean vs authors' scheme")
    assert (lean.unet_calls, lean.unet_rows) == (2 * 18, 18 * 2 + 18 * 3)
    assert (authors.unet_calls, authors.unet_rows) == (2 * 20 + 2 * 18, 2 * 20 + 2 * 18 * 6)


@pytest.mark.slow
def test_fusioninv_freeu_hooks_change_the_unet_and_box_scales_dc() -> None:
    x = torch.full((1, 2, 5, 6), 3.0)
    torch.testing.assert_close(freeu.fourier_box(x, 0.2), torch.full_like(x, 0.6))
    y = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(freeu.fourier_box(y, 1.0), y)
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


@pytest.mark.slow
def test_fusioninv_output_size_dtype_range_and_batch_independence() -> None:
    method = _method(long_side=40)  # working 32×40 (aspect kept), result mapped back to 48×64
    ir, vis = _pair(batch=2)
    with torch.inference_mode():
        out = method.fuse(ir, vis)
        first = method.fuse(ir[:1], vis[:1])
    assert out.shape == vis.shape and out.dtype == vis.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # Same noise for every pair: batching changes only float32 rounding, amplified over the 20 steps
    # (observed ~3e-4 on [0,1] images, see docs/RESULTS.md), hence 10x the parity rule.
    assert_close_to_reference(out[:1], first, rel=1e-3, what="pair 0 in a batch of 2 vs alone")
    assert (out[0] - out[1]).abs().max() > 1e-2


def test_fusioninv_through_fuser_uint8() -> None:
    from fusion_ros.fuser import Fuser

    fuser = Fuser("fusioninv", device="cpu", options={"steps": 10, "long_side": 32}, random_init=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    thermal = rng.integers(0, 65535, (30, 40), dtype=np.uint16)
    fused = fuser(thermal, rgb)
    assert fused.shape == rgb.shape and fused.dtype == np.uint8


@pytest.mark.slow
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
        method.pipeline(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 16, 16))  # sizes differ
    with pytest.raises(ConfigError):
        _method(steps=10, skip_steps=99)


class _Terminal:
    """A text stream that says it is a terminal (tqdm draws its bar only on one)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_fusioninv_cli_step_progress_hook_draws_on_terminals_only() -> None:
    from fusion_ros.commands.fuse import step_progress

    method = _method(steps=10)  # skip 1 of 10: 9 inversion + 9 denoising steps
    ir, vis = _pair()
    term, pipe_file = _Terminal(), _Terminal()
    pipe_file.isatty = lambda: False  # type: ignore[method-assign]
    for stream in (term, pipe_file):
        with step_progress(method, "fusioninv steps", file=stream), torch.inference_mode():  # type: ignore[arg-type]
            method.fuse(ir, vis)
        assert method.progress is None  # the method's own (absent) callback is back
    assert "fusioninv steps" in term.text and "18/18" in term.text
    assert pipe_file.text == ""
    with step_progress(object(), "no steps", file=term):  # type: ignore[arg-type]
        pass  # a method without ``progress`` is left alone


@pytest.mark.slow
def test_fusioninv_cli_fuse_shows_step_progress(tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from fusion_ros.cli import main

    _save_tiny(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(tmp_path / "ir.png")
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "vis.png")
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    out = tmp_path / "fused.png"
    code = main(["fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"), "-o", str(out),
                 "--method", "fusioninv", "--weights-dir", str(tmp_path), "--device", "cpu",
                 "--opt", "steps=10", "--opt", "long_side=32"])
    assert code == 0 and np.asarray(Image.open(out)).shape == (30, 40, 3)
    assert "fusioninv steps" in term.text and "18/18" in term.text


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


@pytest.mark.slow
def test_fusioninv_loads_saved_folder_offline(tmp_path: Path, no_network: None) -> None:
    parts = _save_tiny(tmp_path)
    assert fi.FusionINV.unavailable_reason(tmp_path) is None
    assert "taesd" in (fi.unavailable_reason(tmp_path, "taesd") or "")
    loaded = _method(weights_dir=tmp_path, steps=10)
    assert not loaded.random_init
    reference = fi.FusionINVPipeline.from_components(
        parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"]
    )
    assert_close_to_reference(loaded.pipeline.prompt_embeds, reference.prompt_embeds, what="prompt embeddings")
    ir, vis = _pair()
    with torch.inference_mode():
        got = loaded.fuse(ir, vis)
        opts = loaded.options
        want = reference(ir, vis, steps=10, skip_steps=1, long_side=0, schedule=fi.InjectionSchedule().scaled(10),
                         seed=opts.seed, contrast=opts.contrast).images
    assert_close_to_reference(got, want, what="loaded folder vs in-memory pipeline")


@pytest.mark.slow
def test_fusioninv_loads_taesd_offline(tmp_path: Path, no_network: None) -> None:
    _save_tiny(tmp_path)
    with torch.random.fork_rng():
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



# The original (LDM/CompVis) key names of an SD v1.x checkpoint, written from the diffusers model: the
# inverse of diffusers' single-file conversion, which diffusers 0.42.1 does not ship. Restricted to what
# SD v1.x uses (no class/addition embeddings); checked by the exact round trip in the tests below.
_LDM_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
               ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_LDM_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                   "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _ldm_resnet(rest: str) -> str:
    for new, old in _LDM_RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _ldm_unet_key(key: str, per_block: int, up_attention: list[bool]) -> str:
    """diffusers UNet2DConditionModel key → ``input_blocks/middle_block/output_blocks`` key."""
    import re

    head, _, leaf = key.rpartition(".")
    if head in _LDM_UNET_FIXED:
        return f"{_LDM_UNET_FIXED[head]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = 1 + int(m[1]) * (per_block + 1) + int(m[3])
        return f"input_blocks.{i}.0.{_ldm_resnet(m[4])}" if m[2] == "resnets" else f"input_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (per_block + 1) + per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_ldm_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = int(m[1]) * (per_block + 1) + int(m[3])
        return f"output_blocks.{i}.0.{_ldm_resnet(m[4])}" if m[2] == "resnets" else f"output_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        return f"output_blocks.{b * (per_block + 1) + per_block}.{2 if up_attention[b] else 1}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key}")


def _ldm_vae_key(key: str, levels: int) -> str:
    """diffusers AutoencoderKL key → ``encoder.down.i.block.j`` / ``decoder.up.(n-1-i)`` / ``mid.attn_1`` key."""
    import re

    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", key)
    key = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m[1])}.block.", key)
    key = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{levels - 1 - int(m[1])}.upsample.", key)
    key = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", key)
    for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        key = key.replace(f"mid_block.attentions.0.{new}.", f"mid.attn_1.{old}.")
    return key


def _ldm_checkpoint(parts: dict[str, object]) -> dict[str, torch.Tensor]:
    """The tiny pipeline as one original-format SD v1.x state dict (VAE attention as 1×1 convolutions)."""
    unet, vae, text = parts["unet"], parts["vae"], parts["text_encoder"]
    up_attention = [t.startswith("CrossAttn") for t in unet.config.up_block_types]  # type: ignore[attr-defined]
    out = {f"model.diffusion_model.{_ldm_unet_key(k, unet.config.layers_per_block, up_attention)}": v  # type: ignore[attr-defined]
           for k, v in unet.state_dict().items()}  # type: ignore[attr-defined]
    for k, v in vae.state_dict().items():  # type: ignore[attr-defined]
        name = _ldm_vae_key(k, len(vae.config.up_block_types))  # type: ignore[attr-defined]
        out[f"first_stage_model.{name}"] = v[:, :, None, None] if ".attn_1." in name and v.ndim == 2 else v
    out.update({f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v
                for k, v in text.state_dict().items()})  # type: ignore[attr-defined]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def _save_single_file(root: Path, suffix: str, drop: str = "") -> tuple[dict[str, object], Path]:
    """The tiny pipeline as ``stable-diffusion-v1-5/tiny<suffix>`` beside model_index.json and the
    components' JSON configs and tokenizer files only (what a user places next to an original checkpoint)."""
    parts = fi.tiny_components(seed=0)
    sd = root / fi.SD_FOLDER
    diffusers.StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(sd)
    for weights in sd.glob("*/*.safetensors"):
        weights.unlink()
    # As in SD v1.5's model_index.json: PNDM scheduler, safety checker and feature extractor listed
    # although their folders are absent (the loader passes None for both).
    index = json.loads((sd / "model_index.json").read_text())
    index.update(scheduler=["diffusers", "PNDMScheduler"], safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)
    (sd / "model_index.json").write_text(json.dumps(index))
    state = {k: v for k, v in _ldm_checkpoint(parts).items() if not (drop and k.startswith(drop))}
    path = sd / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:  # the CompVis .ckpt layout: a torch pickle {"state_dict": ..., "global_step": ...}
        torch.save({"state_dict": state, "global_step": 1}, path)
    return parts, path


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_fusioninv_loads_single_file_checkpoint_offline(tmp_path: Path, no_network: None, suffix: str) -> None:
    parts, path = _save_single_file(tmp_path, suffix)
    assert sorted(p.name for p in path.parent.rglob("*") if p.suffix in (".safetensors", ".ckpt", ".bin")) == [path.name]
    assert fi.FusionINV.unavailable_reason(tmp_path) is None
    with torch.random.fork_rng():
        torch.manual_seed(1234)  # freshly built modules differ from the saved ones unless the file is loaded
        loaded = _method(weights_dir=tmp_path, steps=10)
    for name in ("unet", "vae"):
        got, want = getattr(loaded.pipeline, name).state_dict(), parts[name].state_dict()  # type: ignore[attr-defined]
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    reference = fi.FusionINVPipeline.from_components(
        parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"]
    )
    assert torch.equal(loaded.pipeline.prompt_embeds, reference.prompt_embeds)  # the CLIP text model, via its output


def test_fusioninv_single_file_configs_missing_are_named(tmp_path: Path) -> None:
    _, path = _save_single_file(tmp_path, ".safetensors")
    (path.parent / "model_index.json").unlink()
    (path.parent / "unet" / "config.json").unlink()
    reason = fi.FusionINV.unavailable_reason(tmp_path) or ""
    assert "model_index.json" in reason and "unet/config.json" in reason
    assert "unet/diffusion_pytorch_model.safetensors" not in reason  # the single file holds the weights


def test_fusioninv_complete_diffusers_folder_wins_over_a_top_level_checkpoint(tmp_path: Path, no_network: None) -> None:
    parts = _save_tiny(tmp_path)  # a full SD v1.5 download also has v1-5-pruned-emaonly.safetensors at the top
    (tmp_path / fi.SD_FOLDER / "v1-5-pruned-emaonly.safetensors").write_bytes(b"not read")
    loaded = _method(weights_dir=tmp_path, steps=10)
    assert torch.equal(loaded.pipeline.unet.conv_in.weight, parts["unet"].conv_in.weight)  # type: ignore[attr-defined]


def test_fusioninv_incomplete_single_file_is_weights_error(tmp_path: Path, no_network: None) -> None:
    from fusion_ros.errors import WeightsError

    # Without the check diffusers would load this with the missing decoder left at random weights.
    _save_single_file(tmp_path, ".safetensors", drop="first_stage_model.decoder.up.0.")
    with pytest.raises(WeightsError, match=r"vae has \d+ of \d+ tensors"):
        _method(weights_dir=tmp_path, steps=10)
    _, path = _save_single_file(tmp_path / "corrupt", ".ckpt")
    path.write_bytes(b"not a torch pickle")
    with pytest.raises(WeightsError, match="tiny.ckpt"):
        _method(weights_dir=tmp_path / "corrupt", steps=10)


def test_fusioninv_missing_diffusers_is_a_dependency_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fusion_ros.errors import DependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    assert "diffusers" in (fi.FusionINV.unavailable_reason(tmp_path) or "")
    with pytest.raises(DependencyError, match="diffusers"):
        fi.tiny_components()
