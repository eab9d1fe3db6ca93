"""DMFuse's diffusion schedule: the timesteps and features the head reads, and the authors' cosine schedule."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "FEAT_SCALES",
    "N_TIMESTEP",
    "PAD_MULTIPLE",
    "SCHEDULE_BUFFERS",
    "TIMESTEPS",
    "cosine_betas",
    "schedule_buffers",
    "sqrt_alphas_cumprod_prev",
]

#: Timesteps whose noisy copies feed the head, and the decoder features kept (indices into the
#: reversed list of decoder res-block outputs, as the authors' ``feat_scales``).
TIMESTEPS = (5, 50, 100)
FEAT_SCALES = (2, 5, 8, 11, 14)
N_TIMESTEP = 2000
#: Input sizes are padded to a multiple of this (the authors' choice; the U-Net needs 16).
PAD_MULTIPLE = 32

def cosine_betas(n_timestep: int = N_TIMESTEP, s: float = 8e-3) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal) in float64, betas clipped at 0.999, as the authors' ``make_beta_schedule``."""
    steps = np.arange(n_timestep + 1, dtype=np.float64) / n_timestep + s
    alphas = np.cos(steps / (1 + s) * math.pi / 2) ** 2
    alphas = alphas / alphas[0]
    return np.minimum(1 - alphas[1:] / alphas[:-1], 0.999)


def sqrt_alphas_cumprod_prev(betas: np.ndarray) -> np.ndarray:
    """√ᾱ with a leading 1: entry t is the signal scale after t steps (length T+1, float64)."""
    return np.sqrt(np.append(1.0, np.cumprod(1.0 - betas)))


#: Names of the schedule buffers the authors' ``GaussianDiffusion`` saves beside ``denoise_fn.*``.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def schedule_buffers(betas: np.ndarray) -> dict[str, torch.Tensor]:
    """The 12 float32 schedule buffers of the authors' DDPM checkpoint (written by our DDPM training
    so its files load in their code; ignored on loading, as their ``feats`` ignores them too)."""
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32) for k in SCHEDULE_BUFFERS}
