"""The ``fusioninv`` method: options, and the adapter from the Fuser's tensors to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fusion_ros.errors import ConfigError
from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.methods.fusioninv.loading import load_pipeline, unavailable_reason
from fusion_ros.methods.fusioninv.pipeline import FusionINVPipeline, Progress
from fusion_ros.methods.fusioninv.schedule import AUTHORS_STEPS, InjectionSchedule, scale_step
from fusion_ros.methods.fusioninv.tiny import tiny_components
from fusion_ros.registry import register_method

__all__ = ["FusionINV", "FusionINVOptions"]


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
        if options.skip_steps >= AUTHORS_STEPS or scale_step(options.skip_steps, options.steps) >= options.steps:
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
            steps=o.steps, skip_steps=scale_step(o.skip_steps, o.steps),
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
