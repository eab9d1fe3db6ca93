"""The FusionINV pipeline on built diffusers components: encode, invert both images, denoise with the
attention edit, decode (the numbered steps of the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn.functional as F

from fusion_ros.errors import ConfigError, InputError
from fusion_ros.methods.fusioninv.attention import FusionINVAttnProcessor, InjectionControl, injection_layer_names
from fusion_ros.methods.fusioninv.dependencies import require_diffusers
from fusion_ros.methods.fusioninv.freeu import set_freeu
from fusion_ros.methods.fusioninv.schedule import InjectionSchedule, working_size

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, UNet2DConditionModel

__all__ = ["FusionINVOutput", "FusionINVPipeline", "Inversion", "Progress"]

#: ``progress(done, total)``, called after every diffusion step; it may raise to abort the run.
Progress = Callable[[int, int], None]


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
        diffusers = require_diffusers()
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
        set_freeu(unet, freeu)
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
