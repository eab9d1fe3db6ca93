"""FusionINV: visible-style infrared/visible fusion by Stable Diffusion inversion, with diffusers, offline.

Paper: Liang, Jiang, Ma, Wang, Liu, Ma, "FusionINV: A Diffusion-Based Approach for Multimodal Image
Fusion", IEEE TIP 2025 (ieeexplore 11114795). Authors' code: github.com/erfect2020/FusionINV @ 6950866
(Apache-2.0), a fork of Cross-Image Attention (garibida/cross-image-attention, MIT) using edit-friendly
DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024, arXiv 2304.06140). Weights: Stable Diffusion
v1.5 (CreativeML OpenRAIL-M), optionally TAESD as a faster VAE (madebyollin/taesd, MIT). Written from
the paper and a reading of the authors' code; no code is copied.

The algorithm, as the authors' released code runs it:

1. Both images to RGB (thermal replicated to 3 channels), resized to a working size that is a multiple
   of 8 (authors: fixed 672×528), encoded with the VAE's latent *mode* × scaling factor.
2. Visible: edit-friendly DDPM inversion with the empty prompt, no CFG, η=1, N steps (100): every x_t is
   drawn independently from q(x_t|x_0) and the per-step noise map z_t that makes the DDPM step land on
   the next sample is solved for. The DDIM "direction" term √(1−ᾱ_prev−σ²)·ε̂ of each step is kept.
3. Infrared: the same inversion with the *same* forward noise, each step shifted by the visible
   direction × ``direction_step_size`` (−0.12) and the forward-noise part of its target × the same
   factor, so the infrared trajectory is pulled towards the visible one.
4. Denoise the batch [fusion, visible, infrared] from step ``skip_steps`` (10 of 100) with the stored
   noise maps; the fusion branch starts from the visible latent and uses the visible noise maps.
5. In the decoder self-attention of the two highest-resolution up blocks the fusion branch keeps its
   queries and takes the infrared branch's keys/values (early steps), then the visible branch's, then its
   own; its attention map is sharpened, A' = clip((A − mean)·c + mean, 0, 1) with c = ``contrast`` (1.1).
6. The authors' UNet applies a FreeU variant to every up block's input (first half of the channels ×1.2
   or ×1.4, FFT low-frequency box ×0.9 or ×0.2), during inversion and sampling; kept (option ``freeu``).

Deliberate deviations from the authors' code (outputs unchanged unless said):

- Layers are chosen by module name (``up_blocks.{n-2,n-1}.attentions.*.attn1``). The released code picks
  them by token count (64² / 32²), which never matches at its own 672×528 working size, so it injects
  nothing there; this module injects at every working size (the paper's intent).
- One UNet pass per step with batch 3. The released pipeline runs a "swap" and a "no-swap" pass, each
  doubled for classifier-free guidance; with all prompts empty the guidance term of the fusion row is
  swap_text − noswap_uncond = 0, so the result equals the single swapped pass (shown in the tests) at
  ≈¼ of the sampling work. The authors' scheme stays available (``scheme="authors"``) for that check.
- Visible and infrared inversions run as one batch-2 pass per step, and the ``skip_steps`` inversion
  steps whose noise maps the sampler never reads are not computed (their only used output, the
  infrared start latent x + s·n, needs no UNet call).
- Only the fusion branch is decoded (the authors decode all three), and it is resized back to the
  visible frame. The working size keeps the input's aspect (``long_side``, default 672).
- All step thresholds are counted on the authors' 100-step schedule and scaled with ``steps``.
- The K/V schedule uses the authors' step counter, which their step-end callback sets to the index of
  the step just finished: denoising step j sees k = max(j − 1, 0). Injection runs for 1 ≤ k < 90.
- Noise is drawn on the CPU from ``seed`` (default 1, as the authors' README) and shared by all pairs of a
  batch, so a pair's output does not depend on the device or on what else is in the batch.
- Unused parts of the release are left out: AdaIN (off in the released settings), Prompt-Mixing masks,
  the unused swap-guidance branch, the never-called null-text optimisation.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F

from fusion_ros.errors import ConfigError, DependencyError, InputError, MethodUnavailableError, WeightsError
from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.registry import register_method

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, UNet2DConditionModel

__all__ = [
    "SD_FOLDER",
    "TAESD_FOLDER",
    "FusionINV",
    "FusionINVAttnProcessor",
    "FusionINVOptions",
    "FusionINVOutput",
    "FusionINVPipeline",
    "InjectionControl",
    "InjectionSchedule",
    "Inversion",
    "benchmark",
    "injection_layer_names",
    "load_pipeline",
    "sd15_unet_config",
    "tiny_components",
    "unavailable_reason",
    "working_size",
]

#: Folder (under the weights dir) of Stable Diffusion v1.5 in diffusers layout, or of a single
#: ``.safetensors``/``.ckpt`` checkpoint beside the diffusers JSON configs and tokenizer files.
SD_FOLDER = "stable-diffusion-v1-5"
#: Folder of TAESD in diffusers layout (``AutoencoderTiny``).
TAESD_FOLDER = "taesd"
_INSTALL_HINT = "pip install diffusers==0.42.1 transformers==5.23.0"

#: The authors' step numbers are counted on a 100-step schedule.
_AUTHORS_STEPS = 100
#: Query chunk of the explicit (contrasted) attention: bounds its matrix to chunk × heads × keys floats.
_ATTN_CHUNK_ELEMS = 1 << 25

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- optional dependencies


def _require_diffusers() -> Any:
    """Import diffusers (and check transformers) or raise :class:`DependencyError`; the hub is never used."""
    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(f"method 'fusioninv' needs the Python package(s) {', '.join(missing)} ({_INSTALL_HINT})")
    import diffusers

    return diffusers


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` for the duration of a load, so a loader that would reach for the hub
    fails at once instead of hanging on a robot with no network; every call also passes
    ``local_files_only=True``."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- geometry and schedule


def working_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) multiples of 8 with the input's aspect and the long side ``long_side`` pixels.

    ``long_side == 0`` keeps the input size, rounded to multiples of 8. The short side is at least 8.
    """
    if long_side <= 0:
        scale = 1.0
    else:
        scale = long_side / max(height, width)
    h = max(8, int(round(height * scale / 8.0)) * 8)
    w = max(8, int(round(width * scale / 8.0)) * 8)
    return h, w


@dataclass(frozen=True)
class InjectionSchedule:
    """Which keys/values the fusion branch takes at each denoising step (the authors' schedule).

    With k = max(j − 1, 0) for denoising step j (the authors' callback-set counter lags one step): no
    edit unless ``edit_from ≤ k < edit_until``; infrared K/V for k < ``infrared_until`` or for even
    k < ``infrared_even_until``; visible K/V for k < ``visible_until``; otherwise the fusion branch's own
    K/V. Contrast is applied whenever an edit runs.
    """

    edit_from: int = 1
    edit_until: int = 90
    infrared_until: int = 40
    infrared_even_until: int = 60
    visible_until: int = 70

    def source(self, step: int) -> Literal["infrared", "visible", "self"] | None:
        """K/V source of the fusion branch at denoising step ``step`` (0-based), or ``None`` for no edit."""
        k = max(step - 1, 0)
        if not self.edit_from <= k < self.edit_until:
            return None
        if k < self.infrared_until or (k % 2 == 0 and k < self.infrared_even_until):
            return "infrared"
        if k < self.visible_until:
            return "visible"
        return "self"

    def scaled(self, steps: int) -> InjectionSchedule:
        """The schedule for an ``steps``-step run (numbers are counted on the authors' 100 steps)."""
        return InjectionSchedule(*(_scale_step(v, steps) for v in (
            self.edit_from, self.edit_until, self.infrared_until, self.infrared_even_until, self.visible_until)))


def _scale_step(value: int, steps: int) -> int:
    return int(round(value * steps / _AUTHORS_STEPS))


# --------------------------------------------------------------------------- attention processor


@dataclass
class InjectionControl:
    """State shared by the pipeline and its attention processors for the current UNet call.

    The UNet batch is laid out ``[fusion×P, visible×P, infrared×P, (rest)]`` with P = ``pairs``; only the
    fusion rows are edited. ``trace``, when a list, receives ``(layer, step, source)`` for every edit
    (used by the tests to check which layers and steps are hit).
    """

    pairs: int = 1
    source: Literal["infrared", "visible", "self"] | None = None
    contrast: float = 1.0
    step: int = -1
    trace: list[tuple[str, int, str]] | None = None


def _contrast_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, contrast: float, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale), sharpened and clipped as the authors do, times v; chunked over queries.

    (P, heads, Lq, d) × (P, heads, Lk, d) → (P, heads, Lq, d); computed in float32 (or float64).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    qf, kt, vf = q.to(dtype), k.to(dtype).transpose(-1, -2), v.to(dtype)
    chunk = max(1, _ATTN_CHUNK_ELEMS // max(1, q.shape[0] * q.shape[1] * k.shape[-2]))
    out = torch.empty(qf.shape[:-1] + (vf.shape[-1],), dtype=dtype, device=q.device)
    for start in range(0, q.shape[-2], chunk):
        attn = torch.softmax(qf[..., start:start + chunk, :] @ kt * scale, dim=-1)  # (P, heads, c, Lk)
        if contrast != 1.0:
            mean = attn.mean(dim=-1, keepdim=True)
            attn = attn.sub_(mean).mul_(contrast).add_(mean).clamp_(0.0, 1.0)
        out[..., start:start + chunk, :] = attn @ vf
    return out.to(q.dtype)


class FusionINVAttnProcessor:
    """Self-attention processor of the injected layers: the fusion rows keep their queries and attend to
    the keys/values named by :class:`InjectionControl` with the contrasted map; all other rows, and every
    call while ``control.source`` is ``None``, run the standard scaled-dot-product attention."""

    def __init__(self, name: str, control: InjectionControl) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.name = name
        self.control = control
        self._plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        ctl = self.control
        if ctl.source is None or encoder_hidden_states is not None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        pairs = ctl.pairs
        if hidden_states.shape[0] < 3 * pairs:
            raise ConfigError(f"FusionINV attention needs a batch of at least 3×{pairs} rows, got {hidden_states.shape[0]}")
        if ctl.trace is not None:
            ctl.trace.append((self.name, ctl.step, ctl.source))

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, L, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        src = {"infrared": slice(2 * pairs, 3 * pairs), "visible": slice(pairs, 2 * pairs), "self": slice(0, pairs)}[ctl.source]
        rest_mask = None if attention_mask is None else attention_mask[pairs:]
        rest = F.scaled_dot_product_attention(query[pairs:], key[pairs:], value[pairs:], attn_mask=rest_mask)
        q_f, k_f, v_f = query[:pairs], key[src], value[src]
        if attention_mask is None and ctl.contrast == 1.0:
            fused = F.scaled_dot_product_attention(q_f, k_f, v_f)
        else:
            if attention_mask is not None:
                raise ConfigError("FusionINV's contrasted attention does not support attention masks")
            fused = _contrast_attention(q_f, k_f, v_f, ctl.contrast, 1.0 / math.sqrt(head_dim))
        hidden_states = torch.cat([fused, rest], dim=0)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def injection_layer_names(unet: UNet2DConditionModel) -> list[str]:
    """Names of the self-attention modules (``…attn1``) in the UNet's two highest-resolution up blocks.

    In SD v1.5 these are ``up_blocks.{2,3}.attentions.{0,1,2}.transformer_blocks.0.attn1`` (the authors'
    "32" and "64" levels at 512²).
    """
    n = len(unet.up_blocks)
    prefixes = tuple(f"up_blocks.{i}.attentions." for i in (n - 2, n - 1))
    names = [
        key[: -len(".processor")]
        for key in unet.attn_processors
        if key.startswith(prefixes) and key.endswith(".attn1.processor")
    ]
    if not any(nm.startswith(prefixes[0]) for nm in names) or not any(nm.startswith(prefixes[1]) for nm in names):
        raise ConfigError("FusionINV needs self-attention in the UNet's two highest-resolution up blocks")
    return names


# --------------------------------------------------------------------------- FreeU (authors' variant)


def _fourier_box(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale the 2×2 lowest-frequency box of the centred 2-D spectrum (FFT in at least float32: half
    precision FFTs need power-of-two sizes on CUDA)."""
    freq = torch.fft.fftshift(torch.fft.fft2(x.to(torch.promote_types(x.dtype, torch.float32))), dim=(-2, -1))
    ch, cw = x.shape[-2] // 2, x.shape[-1] // 2
    freq[..., max(ch - 1, 0):ch + 1, max(cw - 1, 0):cw + 1] *= scale
    return torch.fft.ifft2(torch.fft.ifftshift(freq, dim=(-2, -1))).real.to(x.dtype)


def _set_freeu(unet: UNet2DConditionModel, enabled: bool) -> None:
    """Install (or remove) forward pre-hooks reproducing the authors' FreeU variant on every up block's input.

    Inputs with the UNet's widest channel count (1280 in SD1.5) get their first half ×1.2 and the
    low-frequency box ×0.9; inputs with the second level's count (640) get ×1.4 and ×0.2. diffusers'
    ``enable_freeu`` differs (it filters the skip features), hence hooks.
    """
    widest = unet.config.block_out_channels[-1]
    second = unet.config.block_out_channels[1]

    def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        c = x.shape[1]
        if c == widest:
            b, s = 1.2, 0.9
        elif c == second:
            b, s = 1.4, 0.2
        else:
            return args, kwargs
        x = torch.cat([x[:, : c // 2] * b, x[:, c // 2:]], dim=1)
        x = _fourier_box(x, s)
        if "hidden_states" in kwargs:
            kwargs["hidden_states"] = x
        else:
            args = (x,) + tuple(args[1:])
        return args, kwargs

    for handle in getattr(unet, "_fusioninv_freeu_hooks", []):
        handle.remove()  # a UNet reused by a second pipeline gets the hooks once, not twice
    unet._fusioninv_freeu_hooks = (
        [blk.register_forward_pre_hook(hook, with_kwargs=True) for blk in unet.up_blocks] if enabled else []
    )


# --------------------------------------------------------------------------- pipeline


@dataclass
class Inversion:
    """What the sampler needs from the two inversions, for the S = N − skip denoising steps.

    Latents are (P,4,h,w) at the start step; noise maps and directions are (S,P,4,h,w), in the order the
    sampler uses them; ``timesteps`` (S,) are the scheduler timesteps of those steps.
    """

    visible: torch.Tensor
    infrared: torch.Tensor
    visible_noise: torch.Tensor
    infrared_noise: torch.Tensor
    visible_directions: torch.Tensor
    timesteps: torch.Tensor


@dataclass
class FusionINVOutput:
    """Fused images (P,3,H,W) in [0,1] and the UNet work they took."""

    images: torch.Tensor
    unet_calls: int
    unet_rows: int


class FusionINVPipeline:
    """FusionINV on built diffusers components; ``__call__`` runs the numbered steps of the method.

    Args:
        unet: an SD-topology ``UNet2DConditionModel`` (ε-prediction).
        vae: ``AutoencoderKL`` or ``AutoencoderTiny`` (TAESD).
        scheduler: any scheduler whose config describes the training noise schedule; a
            ``DDIMScheduler`` is built from it (x̂0 clipping off: the inversion must not clip).
        prompt_embeds: (1, L, D) text-encoder output of the empty prompt (see :meth:`from_components`).
        freeu: apply the authors' FreeU variant to the up blocks.

    The pipeline owns ``unet``: it installs its attention processors and FreeU hooks on it.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: Any,
        scheduler: Any,
        prompt_embeds: torch.Tensor,
        *,
        freeu: bool = True,
    ) -> None:
        diffusers = _require_diffusers()
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.scheduler: DDIMScheduler = diffusers.DDIMScheduler.from_config(
            scheduler.config, clip_sample=False, thresholding=False
        )
        if self.scheduler.config.prediction_type != "epsilon":
            raise ConfigError(f"FusionINV needs an epsilon-prediction UNet, got {self.scheduler.config.prediction_type!r}")
        self.prompt_embeds = prompt_embeds.to(unet.device, unet.dtype)
        self.control = InjectionControl()
        self.layer_names = injection_layer_names(unet)
        processors = dict(unet.attn_processors)
        for name in self.layer_names:
            processors[f"{name}.processor"] = FusionINVAttnProcessor(name, self.control)
        unet.set_attn_processor(processors)
        _set_freeu(unet, freeu)
        #: Latent and scheduler arithmetic: float32 whatever the UNet runs in (fp16 on CUDA), float64
        #: with a float64 UNet (the tests use that to show algebraic identities without roundoff).
        self.math_dtype = torch.float64 if unet.dtype == torch.float64 else torch.float32
        self.unet_calls = 0
        self.unet_rows = 0

    @classmethod
    def from_components(
        cls, unet: Any, vae: Any, scheduler: Any, tokenizer: Any, text_encoder: Any, *, freeu: bool = True
    ) -> FusionINVPipeline:
        """Build from the usual SD components; the text encoder runs once, on the empty prompt, and is not kept."""
        ids = tokenizer(
            "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.inference_mode():
            embeds = text_encoder(ids.to(text_encoder.device))[0]
        return cls(unet, vae, scheduler, embeds, freeu=freeu)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    # -- helpers

    def _eps(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One UNet evaluation with the empty prompt (counted), returned in ``math_dtype``."""
        self.unet_calls += 1
        self.unet_rows += latents.shape[0]
        emb = self.prompt_embeds.expand(latents.shape[0], -1, -1)
        out = self.unet(latents.to(self.unet.dtype), t, encoder_hidden_states=emb, return_dict=False)[0]
        return out.to(self.math_dtype)

    def _coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ᾱ_prev, σ_t) of the η=1 step at ``t``, with the same float32 arithmetic as ``DDIMScheduler.step``
        (so a noise map solved here is undone exactly by the scheduler's step)."""
        sch = self.scheduler
        prev = int(t) - sch.config.num_train_timesteps // sch.num_inference_steps
        a_t = sch.alphas_cumprod[int(t)]
        a_prev = sch.alphas_cumprod[prev] if prev >= 0 else sch.final_alpha_cumprod
        variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
        return a_prev, variance**0.5

    def _step(self, eps: torch.Tensor, t: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The edit-friendly DDPM step x_t → x_prev with noise map ``z`` (η = 1)."""
        return self.scheduler.step(eps, t, x, eta=1.0, variance_noise=z, return_dict=False)[0]

    # -- step 1: encode / decode

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] → (B,4,H/8,W/8) latents (``math_dtype``): VAE latent mode × scaling factor."""
        x = images.to(self.device, self.vae.dtype) * 2.0 - 1.0
        enc = self.vae.encode(x)
        latents = enc.latent_dist.mode() if hasattr(enc, "latent_dist") else enc.latents
        return latents.to(self.math_dtype) * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B,4,h,w) latents → (B,3,8h,8w) images in [0,1], ``math_dtype``."""
        x = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype), return_dict=False)[0]
        return (x.to(self.math_dtype) * 0.5 + 0.5).clamp_(0.0, 1.0)

    # -- step 2+3: inversion

    def invert(
        self,
        visible: torch.Tensor,
        infrared: torch.Tensor,
        *,
        steps: int,
        skip_steps: int,
        direction_step_size: float,
        generator: torch.Generator,
        scheme: Literal["lean", "authors"] = "lean",
        progress: Callable[[], None] | None = None,
    ) -> Inversion:
        """Edit-friendly DDPM inversion of the visible latents and direction-guided inversion of the
        infrared latents, both (P,4,h,w), sharing one forward-noise draw.

        For each step i (t_i descending, x_N = x_0, n_i = √(1−ᾱ_{t_i})·ε_i):
        visible  z_i = (x_{i+1} − μ(x_i)) / σ_i, direction d_i = √(1−ᾱ_prev−σ_i²)·ε̂(x_i);
        infrared z_i = (x_{i+1} + s·n_{i+1} − μ(x_i) − s·d_i^vis) / σ_i for i > 0 (unshifted at i = 0), and
        its start latent x_skip + s·n_skip (for skip ≥ 2), s = ``direction_step_size``.
        ``scheme="authors"`` evaluates every step, each image in its own UNet call (same results).
        """
        sch = self.scheduler
        sch.set_timesteps(steps, device=self.device)
        timesteps = sch.timesteps
        pairs = visible.shape[0]
        x0 = torch.cat([visible, infrared]).to(self.math_dtype)  # (2P,4,h,w)
        eps_draw = torch.randn((steps, 1) + tuple(visible.shape[1:]), generator=generator, dtype=torch.float32)
        eps_draw = eps_draw.to(self.device, self.math_dtype)

        def forward_sample(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            """(x_i, n_i) for both images; index ``steps`` is x_0 with n = 0."""
            if i == steps:
                return x0, torch.zeros_like(x0)
            a_t = float(sch.alphas_cumprod[int(timesteps[i])])
            noise = (1 - a_t) ** 0.5 * eps_draw[i]
            return a_t**0.5 * x0 + noise, noise.expand_as(x0)

        s = direction_step_size
        count = steps - skip_steps
        z_vis = torch.empty((count,) + tuple(visible.shape), device=self.device, dtype=self.math_dtype)
        z_ir = torch.empty_like(z_vis)
        d_vis = torch.empty_like(z_vis)
        first = 0 if scheme == "authors" else skip_steps
        for i in range(steps - 1, first - 1, -1):
            t = timesteps[i]
            x_i, _ = forward_sample(i)
            x_next, n_next = forward_sample(i + 1)
            if scheme == "authors":
                eps = torch.cat([self._eps(x_i[:pairs], t), self._eps(x_i[pairs:], t)])
            else:
                eps = self._eps(x_i, t)
            a_prev, sigma = self._coefficients(t)
            mu = self._step(eps, t, x_i, torch.zeros_like(x_i))
            direction = (1 - a_prev - sigma**2) ** 0.5 * eps[:pairs]
            target = x_next.clone()
            if i > 0:
                target[pairs:] += s * n_next[pairs:]
                mu[pairs:] += s * direction
            if i >= skip_steps:
                z = (target - mu) / sigma
                z_vis[i - skip_steps], z_ir[i - skip_steps] = z[:pairs], z[pairs:]
                d_vis[i - skip_steps] = direction
            if progress is not None:
                progress()
        start, n_start = forward_sample(skip_steps)
        ir_start = start[pairs:] + (s * n_start[pairs:] if skip_steps >= 2 else 0.0)
        return Inversion(start[:pairs], ir_start, z_vis, z_ir, d_vis, timesteps[skip_steps:])

    # -- step 4+5: denoising with K/V injection

    def denoise(
        self,
        latents: torch.Tensor,
        noise_maps: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        schedule: InjectionSchedule | None = None,
        contrast: float = 1.0,
        scheme: Literal["lean", "authors"] = "lean",
        guidance_scale: float = 1.5,
        progress: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Edit-friendly DDPM sampling of ``latents`` (B,4,h,w) with per-step ``noise_maps`` (S,B,4,h,w).

        With ``schedule`` the batch is [fusion×P, visible×P, infrared×P] and the injected layers edit the
        fusion rows; without it every row is an independent DDPM branch (used to check exactness).
        ``scheme="authors"`` reproduces the released sampler: a swapped and an unswapped pass, each on the
        batch doubled for classifier-free guidance with the empty prompt, combined as
        ε = ε_swap,uncond + g·(ε_swap,text − ε_noswap,uncond).
        """
        ctl = self.control
        ctl.pairs = latents.shape[0] // 3
        ctl.contrast = contrast
        x = latents.to(self.math_dtype)
        try:
            for j, t in enumerate(timesteps):
                ctl.step = j
                source = schedule.source(j) if schedule is not None else None
                if scheme == "authors":
                    doubled = torch.cat([x, x])
                    ctl.source = source
                    swap = self._eps(doubled, t)
                    ctl.source = None
                    plain = self._eps(doubled, t)
                    half = x.shape[0]
                    eps = swap[:half] + guidance_scale * (swap[half:] - plain[:half])
                else:
                    ctl.source = source
                    eps = self._eps(x, t)
                x = self._step(eps, t, x, noise_maps[j])
                if progress is not None:
                    progress()
        finally:
            ctl.source = None
        return x

    # -- the method

    @torch.inference_mode()
    def __call__(
        self,
        infrared: torch.Tensor,
        visible: torch.Tensor,
        *,
        steps: int = 100,
        skip_steps: int = 10,
        direction_step_size: float = -0.12,
        contrast: float = 1.1,
        schedule: InjectionSchedule | None = None,
        long_side: int = 672,
        seed: int = 1,
        scheme: Literal["lean", "authors"] = "lean",
        guidance_scale: float = 1.5,
        progress: Progress | None = None,
    ) -> FusionINVOutput:
        """Fuse P pairs: ``infrared`` (P,1|3,H,W) and ``visible`` (P,3,H,W) in [0,1] → (P,3,H,W) in [0,1].

        ``steps``, ``skip_steps`` and ``schedule`` are literal step counts of this run (the adapter scales
        the authors' 100-step numbers). ``progress(done, total)`` is called after every step; it may raise
        to abort the run.
        """
        if not 0 <= skip_steps < steps:
            raise ConfigError(f"fusioninv: skip_steps {skip_steps} must be in [0, steps={steps})")
        schedule = schedule or InjectionSchedule()
        self.unet_calls = self.unet_rows = 0
        first = 0 if scheme == "authors" else skip_steps
        total, done = (steps - first) + (steps - skip_steps), 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        if visible.ndim != 4 or visible.shape[1] != 3 or infrared.ndim != 4 or infrared.shape[1] not in (1, 3) \
                or infrared.shape[0] != visible.shape[0] or infrared.shape[-2:] != visible.shape[-2:]:
            raise InputError(f"fusioninv needs infrared (P,1|3,H,W) and visible (P,3,H,W) of one size, "
                             f"got {tuple(infrared.shape)} and {tuple(visible.shape)}")
        pairs, _, height, width = visible.shape
        # 1. Working size (multiple of 8, aspect kept) and VAE latents of both images in one batch.
        h, w = working_size(height, width, long_side)
        images = torch.cat([visible, infrared.expand(-1, 3, -1, -1)]).to(self.math_dtype)
        if (h, w) != (height, width):
            images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        latents = self.encode(images)
        # 2-3. Visible inversion and direction-guided infrared inversion (one batch-2 pass per step).
        generator = torch.Generator(device="cpu").manual_seed(seed)
        inv = self.invert(
            latents[:pairs], latents[pairs:], steps=steps, skip_steps=skip_steps,
            direction_step_size=direction_step_size, generator=generator, scheme=scheme, progress=tick,
        )
        # 4. Batch [fusion, visible, infrared]: fusion starts from the visible latent and uses its noise
        #    maps; the last noise map is zero, as in the authors' inversion (the final step is the mean).
        batch = torch.cat([inv.visible, inv.visible, inv.infrared])
        noise = torch.cat([inv.visible_noise, inv.visible_noise, inv.infrared_noise], dim=1)
        noise[-1] = 0.0
        # 5. Denoise with K/V injection and contrast in the two highest-resolution decoder levels.
        out = self.denoise(
            batch, noise, inv.timesteps, schedule=schedule, contrast=contrast,
            scheme=scheme, guidance_scale=guidance_scale, progress=tick,
        )
        # 6. Decode the fusion rows only and map back to the visible frame.
        fused = self.decode(out[:pairs])
        if fused.shape[-2:] != (height, width):
            fused = F.interpolate(fused, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        return FusionINVOutput(fused.clamp_(0.0, 1.0), self.unet_calls, self.unet_rows)


# --------------------------------------------------------------------------- loading, offline


_TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def _component_missing(root: Path, weights: bool) -> list[str]:
    """Files of the diffusers folder ``root`` that are missing (weights only when ``weights``)."""
    need = ["scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"]
    if weights:
        need += ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"]
    missing = [f for f in need if not (root / f).is_file()]
    if not any(all((root / "tokenizer" / f).is_file() for f in files) for files in _TOKENIZER_SETS):
        missing.append("tokenizer/vocab.json + tokenizer/merges.txt")
    return missing


def _single_file(root: Path) -> Path | None:
    """The single SD checkpoint in ``root`` (``*.safetensors`` or ``*.ckpt`` at its top level), if exactly
    one and the diffusers weights are incomplete: a full download of the SD v1.5 repository has both, and
    its diffusers folders are then the ones used."""
    found = sorted(p for p in root.glob("*") if p.suffix in (".safetensors", ".ckpt") and p.is_file()) if root.is_dir() else []
    return found[0] if len(found) == 1 and _component_missing(root, weights=True) else None


#: Key prefixes of the parts of an original (LDM/CompVis) SD v1.x checkpoint. Their tensors map one to
#: one onto the diffusers UNet / VAE / CLIP text model (the CLIP part may carry an extra position_ids buffer).
_LDM_PARTS = {"unet": ("model.diffusion_model.",), "vae": ("first_stage_model.", "vae."),
              "text_encoder": ("cond_stage_model.transformer.",)}


def _checkpoint_keys(path: Path) -> list[str]:
    """Tensor names of a single-file checkpoint, without reading its tensors where the format allows."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return [k for k, v in obj.items() if isinstance(v, torch.Tensor)] if isinstance(obj, dict) else []


def _single_file_shortfall(keys: list[str], parts: dict[str, torch.nn.Module]) -> list[str]:
    """Parts the checkpoint has fewer tensors for than the model has: diffusers' ``from_single_file``
    loads with ``strict=False`` and would leave those weights at random initialisation without a word."""
    short = []
    for name, model in parts.items():
        have = sum(k.startswith(_LDM_PARTS[name]) for k in keys)
        need = len(model.state_dict())
        if have < need:
            short.append(f"{name} has {have} of {need} tensors (prefix {_LDM_PARTS[name][0]})")
    return short


def unavailable_reason(weights_dir: Path, vae: str = "sd") -> str | None:
    """Why FusionINV cannot be loaded from ``weights_dir``, naming the folder and missing files, or ``None``."""
    missing_pkgs = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing_pkgs:
        return f"needs the Python package(s) {', '.join(missing_pkgs)} ({_INSTALL_HINT})"
    root = weights_dir / SD_FOLDER
    single = _single_file(root)
    missing = _component_missing(root, weights=single is None)
    if single is not None and not (root / "model_index.json").is_file():
        missing.append("model_index.json")
    if missing:
        return (
            f"Stable Diffusion v1.5 not found in {root}/: missing {', '.join(missing)} (put the diffusers folder of "
            "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 there, or one original .safetensors/.ckpt "
            "checkpoint beside its model_index.json, */config.json, scheduler/scheduler_config.json and tokenizer/ "
            "files; see weights/README.md)"
        )
    if vae == "taesd":
        tdir = weights_dir / TAESD_FOLDER
        tmiss = [f for f in ("config.json", "diffusion_pytorch_model.safetensors") if not (tdir / f).is_file()]
        if tmiss:
            return (f"TAESD not found in {tdir}/: missing {', '.join(tmiss)} "
                    "(diffusers files of https://huggingface.co/madebyollin/taesd)")
    return None


def load_pipeline(
    weights_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    vae: Literal["sd", "taesd"] = "sd",
    freeu: bool = True,
) -> FusionINVPipeline:
    """Load SD v1.5 (and TAESD for ``vae="taesd"``) from ``weights_dir`` without any network access.

    ``weights_dir/stable-diffusion-v1-5/`` is either a diffusers folder (unet, vae, text_encoder,
    tokenizer, scheduler; safetensors) or one ``.safetensors``/``.ckpt`` original checkpoint beside
    ``model_index.json`` and the same folders' JSON configs and tokenizer files.
    """
    reason = unavailable_reason(weights_dir, vae)
    if reason:
        raise MethodUnavailableError(f"method 'fusioninv' is unavailable: {reason}")
    diffusers = _require_diffusers()
    import transformers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    root = weights_dir / SD_FOLDER
    common = {"local_files_only": True, "torch_dtype": dtype}
    try:
        with _hub_offline():
            single = _single_file(root)
            if single is None:
                unet = diffusers.UNet2DConditionModel.from_pretrained(root, subfolder="unet", use_safetensors=True, **common)
                sd_vae = (
                    diffusers.AutoencoderKL.from_pretrained(root, subfolder="vae", use_safetensors=True, **common)
                    if vae == "sd" else None
                )
                text_encoder = transformers.CLIPTextModel.from_pretrained(
                    root / "text_encoder", use_safetensors=True, local_files_only=True, dtype=dtype
                )
            else:
                # config=<local folder> keeps diffusers (0.42.1) off the hub: without it, it fetches the SD
                # v1.5 configs even with local_files_only, and original_config= still fetches the tokenizer.
                pipe = diffusers.StableDiffusionPipeline.from_single_file(
                    str(single), config=str(root), safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False, **common,
                )
                unet, sd_vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
                short = _single_file_shortfall(
                    _checkpoint_keys(single), {"unet": unet, "vae": sd_vae, "text_encoder": text_encoder}
                )
                if short:
                    raise WeightsError(f"{single} is not a complete SD v1.x checkpoint: {'; '.join(short)}")
            tokenizer = transformers.CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
            scheduler = diffusers.DDIMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
            chosen_vae = (
                diffusers.AutoencoderTiny.from_pretrained(weights_dir / TAESD_FOLDER, use_safetensors=True, **common)
                if vae == "taesd" else sd_vae
            )
    except WeightsError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot load Stable Diffusion v1.5 from {root}: {first}") from None
    unet.to(device)
    chosen_vae.to(device)
    text_encoder.to(device)
    pipeline = FusionINVPipeline.from_components(unet, chosen_vae, scheduler, tokenizer, text_encoder, freeu=freeu)
    del text_encoder
    return pipeline


# --------------------------------------------------------------------------- tiny topology (tests, random init)


def sd15_unet_config() -> dict[str, Any]:
    """The SD v1.5 UNet architecture (from its published ``unet/config.json``), for random-weight timing."""
    return {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "norm_num_groups": 32,
    }


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """A random SD-topology set (UNet 416 k, VAE 25 k, CLIP text 15 k parameters; ≈2 MB) built in code.

    Same block structure as SD v1.5 (4 levels, cross-attention up blocks 1-3, ×8 VAE), so the injected
    layer names, token counts per level and the whole pipeline run as with the real model.
    Returns ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``.
    """
    diffusers = _require_diffusers()
    import transformers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16, norm_num_groups=8, attention_head_dim=4,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, vocab_size=64,
        max_position_embeddings=77, bos_token_id=52, eos_token_id=53, pad_token_id=53,
    ))
    vocab: dict[str, int] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}


# --------------------------------------------------------------------------- method adapter


@dataclass(frozen=True)
class FusionINVOptions:
    steps: int = option(100, "DDPM inversion/sampling steps (authors: 100); step numbers below scale with it", range=(10, 1000))
    skip_steps: int = option(10, "denoising starts this many steps in (on the 100-step scale; authors' README: 10)", range=(0, 99))
    direction_step_size: float = option(-0.12, "infrared inversion shift along the visible direction", range=(-1.0, 1.0))
    contrast: float = option(1.1, "attention-map contrast of the fusion branch (authors' README: 1.1)", range=(0.5, 4.0))
    long_side: int = option(672, "working size: long side in pixels, aspect kept, multiple of 8 (0 = input size)", range=(0, 2048))
    seed: int = option(1, "seed of the inversion noise (fixed: same pair, same output)", range=(0, 2**31 - 1))
    vae: str = option("sd", "VAE: sd (SD v1.5) or taesd (faster, weights/taesd/)", choices=("sd", "taesd"))
    freeu: bool = option(True, "the authors' FreeU variant on the UNet up blocks")
    edit_from: int = option(1, "K/V injection and contrast from this step counter (100-step scale)", range=(0, 100))
    edit_until: int = option(90, "... until before this step counter", range=(0, 100))
    infrared_until: int = option(40, "infrared K/V before this step counter", range=(0, 100))
    infrared_even_until: int = option(60, "infrared K/V on even step counters before this", range=(0, 100))
    visible_until: int = option(70, "visible K/V before this step counter (own K/V after)", range=(0, 100))


@register_method
class FusionINV(FusionMethod):
    """Stable Diffusion v1.5 inversion with infrared K/V injection (visible-style output)."""

    name = "fusioninv"
    description = "FusionINV (TIP 2025): SD v1.5 inversion + infrared attention injection; visible-style RGB output"
    Options = FusionINVOptions
    color_space = "rgb"
    weights_key = "fusioninv"
    cost = "SD v1.5, 100 steps: 180 UNet passes (450 images)/pair; ~1.2 h/pair at 672x528 on 2 CPU cores: use a GPU"
    seconds_per_pair = 4194.0  # estimated at its 672x528 working size, which a 640x512 pair is resized to

    #: Optional ``progress(done, total)`` called after every diffusion step of :meth:`fuse` (the CLI's
    #: progress bar); it may raise to abort a frame.
    progress: Progress | None = None

    def __init__(
        self, options: FusionINVOptions, device: torch.device, dtype: torch.dtype, weights_dir: Path, *, random_init: bool = False
    ) -> None:
        super().__init__(options, device, dtype, weights_dir, random_init=random_init)
        if options.skip_steps >= _AUTHORS_STEPS or _scale_step(options.skip_steps, options.steps) >= options.steps:
            raise ConfigError(f"option fusioninv.skip_steps: {options.skip_steps} leaves no denoising step")
        if random_init:
            # Tests only: the tiny SD topology (full-size SD1.5 without weights is useless and takes hours per pair on CPU).
            parts = tiny_components(seed=0)
            parts["unet"].to(device, dtype)
            parts["vae"].to(device, dtype)
            self.pipeline = FusionINVPipeline.from_components(
                parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"], freeu=options.freeu
            )
        else:  # load_pipeline raises MethodUnavailableError, naming what is missing
            self.pipeline = load_pipeline(
                weights_dir, device=device, dtype=dtype, vae=options.vae, freeu=options.freeu  # type: ignore[arg-type]
            )

    @classmethod
    def unavailable_reason(cls, weights_dir: Path) -> str | None:
        return unavailable_reason(weights_dir)

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        o: FusionINVOptions = self.options
        schedule = InjectionSchedule(o.edit_from, o.edit_until, o.infrared_until, o.infrared_even_until, o.visible_until)
        out = self.pipeline(
            ir, vis,
            steps=o.steps, skip_steps=_scale_step(o.skip_steps, o.steps),
            direction_step_size=o.direction_step_size, contrast=o.contrast,
            schedule=schedule.scaled(o.steps), long_side=o.long_side, seed=o.seed, progress=self.progress,
        )
        return out.images.to(vis.dtype)

    def warmup(self, height: int = 64, width: int = 64) -> None:
        """One UNet call and one VAE round trip on a small latent: loads kernels without a full (slow) pair."""
        pipe = self.pipeline
        with torch.inference_mode():
            img = torch.zeros(1, 3, 64, 64, device=self.device)
            lat = pipe.encode(img)
            pipe.scheduler.set_timesteps(10)
            pipe._eps(lat, pipe.scheduler.timesteps[0])
            pipe.decode(lat)


# --------------------------------------------------------------------------- benchmark


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls (callers warm up on small inputs:
    the timed calls here take seconds to minutes, so a full-size warm-up call would double the run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def benchmark(
    *,
    height: int = 528,
    width: int = 672,
    tiny_size: tuple[int, int] = (48, 64),
    repeats: int = 1,
    tiny: bool = True,
    full_size: bool = True,
    full_size_batches: tuple[int, ...] = (1, 2, 3),
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure FusionINV's cost per pair (for ``docs/RESULTS.md`` and ``fusion-ros bench``).

    1. ``tiny``: the tiny random pipeline on a ``tiny_size`` pair (the test size; working size = input
       size), default settings (100 steps, skip 10): wall time per pair and UNet calls /
       image-evaluations, for this module's scheme and for the authors' (all inversion steps, one image
       per call; 2 passes × CFG doubling while sampling). The counts do not depend on the size.
    2. ``full_size``: one pass of a randomly initialised SD v1.5 UNet (architecture from its config; no
       weights needed) at the working latent size per batch size in ``full_size_batches``, with the
       FusionINV processors (infrared K/V + contrast on batches ≥ 3) and FreeU active; and a random SD
       v1.5 VAE encoding 2 images and decoding 1. Estimated SD v1.5 time per pair = Σ over the run's UNet
       calls of the measured time of a call of that batch size + VAE time. The authors' scheme needs
       batch 1 and 6 (6 is extrapolated as 2 × batch 3 unless measured) and decodes 3 images.

    ``log`` receives one line per finished phase. Returns the numbers (seconds, counts).
    """
    diffusers = _require_diffusers()
    dev = torch.device(device)
    say = log or (lambda _msg: None)
    h, w = working_size(height, width, 0)
    lh, lw = h // 8, w // 8
    steps, skip = 100, 10
    result: dict[str, Any] = {
        "working_size": (h, w), "latent_size": (lh, lw), "torch_threads": torch.get_num_threads(), "device": str(dev),
    }
    parts = tiny_components(seed=0)
    for key in ("unet", "vae", "text_encoder"):
        parts[key].to(dev)
    if tiny:
        pipe = FusionINVPipeline.from_components(
            parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"]
        )
        th, tw = tiny_size
        ir = torch.rand(1, 1, th, tw, generator=torch.Generator().manual_seed(0)).to(dev)
        vis = torch.rand(1, 3, th, tw, generator=torch.Generator().manual_seed(1)).to(dev)
        pipe(ir, vis, steps=10, skip_steps=1, long_side=0)  # warm-up
        result["tiny_size"] = (th, tw)
        for scheme in ("lean", "authors"):
            counts: dict[str, int] = {}

            def run(scheme: Any = scheme, counts: dict[str, int] = counts) -> None:
                out = pipe(ir, vis, steps=steps, skip_steps=skip, long_side=0, scheme=scheme)
                counts.update(calls=out.unet_calls, rows=out.unet_rows)

            result[f"tiny_{scheme}_s_per_pair"] = _timed(run, repeats)
            result[f"{scheme}_unet_calls"] = counts["calls"]
            result[f"{scheme}_unet_rows"] = counts["rows"]
            say(f"tiny {scheme}: {result[f'tiny_{scheme}_s_per_pair']:.1f} s/pair, {counts['calls']} UNet calls, {counts['rows']} rows")
    if not full_size:
        return result

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**sd15_unet_config()).eval().to(dev)
    big = FusionINVPipeline(unet, parts["vae"], parts["scheduler"], torch.zeros(1, 77, 768))
    big.control.contrast, big.control.pairs = 1.1, 1
    big.scheduler.set_timesteps(steps)
    t = big.scheduler.timesteps[20]
    per_batch: dict[int, float] = {}
    with torch.inference_mode():
        big._eps(torch.randn(3, 4, 8, 8).to(dev), t)  # warm-up
        for b in full_size_batches:
            x = torch.randn(b, 4, lh, lw, generator=torch.Generator().manual_seed(b)).to(dev)
            big.control.source = "infrared" if b >= 3 else None
            per_batch[b] = _timed(lambda x=x: big._eps(x, t), repeats)
            say(f"SD v1.5 UNet, batch {b}, latent {lh}x{lw}: {per_batch[b]:.1f} s")
        big.control.source = None
        del big, unet
        sd_vae = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
        ).eval().to(dev)
        sd_vae.decode(sd_vae.encode(torch.zeros(1, 3, 64, 64).to(dev)).latent_dist.mode())  # warm-up
        img2 = (torch.rand(2, 3, h, w) * 2 - 1).to(dev)
        vae_encode = _timed(lambda: sd_vae.encode(img2).latent_dist.mode(), repeats)
        lat1 = torch.randn(1, 4, lh, lw).to(dev)
        vae_decode = _timed(lambda: sd_vae.decode(lat1), repeats)
        say(f"SD v1.5 VAE: encode 2 images {vae_encode:.1f} s, decode 1 image {vae_decode:.1f} s")
    result.update({f"sd15_unet_batch{b}_s": v for b, v in per_batch.items()})
    result.update(sd15_vae_encode2_s=vae_encode, sd15_vae_decode1_s=vae_decode)
    if {2, 3} <= set(per_batch):
        result["sd15_lean_estimate_s"] = (steps - skip) * (per_batch[2] + per_batch[3]) + vae_encode + vae_decode
    if {1, 3} <= set(per_batch):
        b6 = per_batch.get(6, 2 * per_batch[3])
        result["sd15_authors_estimate_s"] = 2 * steps * per_batch[1] + 2 * (steps - skip) * b6 + vae_encode + 3 * vae_decode
        result["sd15_authors_batch6_extrapolated"] = 6 not in per_batch
    return result
