"""DMFuse: diffusion-model features fused by criss-cross cross-attention (Qi, Zhang & Wang, CJIF 2024).

Paper: "DMFuse: Diffusion Model Guided Cross-Attention Learning for Infrared and Visible Image
Fusion", Chinese Journal of Information Fusion 1(3):226-242, 2024, doi:10.62762/CJIF.2024.655617.
Authors' code: github.com/Zhishe-Wang/DMFuse @ 6b763d6 (2025-01-09), which has no licence file
(all rights reserved by default); its U-Net derives from wgcban/ddpm-cd (MIT) and its attention
from Serge-weihao/CCNet-Pure-Pytorch (MIT). This file is a re-implementation: no code was copied.

Weights: the fusion head is ``models/model.model`` in the authors' repository (57 tensors, a torch
pickle whose storages are tagged ``cuda:0``); the diffusion U-Net is ``ddpm_gen.pth``, published by
the authors on Baidu Netdisk only. ``weights/manifest.toml`` ``[dmfuse]`` says where each goes.

Pipeline of one pair (the authors' ``test.py``):

1. IR and visible luminance in [0,1] → [-1,1], replicated to 3 channels, padded at the bottom and
   right to a multiple of 32 with white (the authors' ``copyMakeBorder(value=256)`` saturates to 255).
2. For each modality and t ∈ {5, 50, 100}: a noise level γ ~ U(√ᾱ[t-1], √ᾱ[t]) of the cosine
   schedule with 2000 steps, x_t = γ·x + √(1-γ²)·ε, one pass of the SR3 U-Net (quarter width:
   inner channel 32) conditioned on γ itself, keeping the decoder features fd[2, 5, 8, 11, 14]
   (the first res-block of each decoder level, full resolution first). Features of the three t
   are concatenated per level.
3. Fusion head (:class:`DMFuseHead`): per-level encoders with channel+spatial squeeze-excitation
   (``en3`` serves the two coarsest levels), one criss-cross cross-attention module (CAIM) shared
   by all levels, a multi-level decoder whose two 3×3 convs are reused at every level, tanh.
4. Crop back; negatives clamp to 0.

Deliberate differences from the authors' code (the maths is theirs; the parity tests in
``test/test_dmfuse.py`` hold it to 1e-4 of their outputs):

- Noise: the authors draw γ and ε from numpy's and torch's global generators, so every run differs.
  Here they come from a ``torch.Generator`` re-seeded with the ``seed`` option on every call
  (default 0): the same pair gives the same output, frame after frame, and the noise is drawn once
  per image size and reused. ``seed=-1`` draws fresh noise each call as the authors do. Tests
  inject explicit noise and levels.
- The CAIM never materialises the H·W·(H+W) energies (~10 GB of the authors' 11-13 GB peak at
  640×512): the joint softmax over a pixel's column and row is split into a column softmax and a
  row softmax recombined through their log-sum-exps (:func:`criss_cross_attention`), computed on
  CPU inference by PyTorch's fused attention kernel (queries and keys zero-padded to the value
  width) and otherwise in chunks of columns/rows. Results agree with the dense form to float rounding.
- The head's per-level encoder convolution is applied to each timestep's features as soon as its
  U-Net pass ends (conv over a concatenation = sum of convs over its parts), so the wide features
  of only one pass are alive; the sum order differs from the authors' by float rounding.
- On CPU the networks run in channels-last (NHWC) layout (``channels_last`` option): oneDNN's
  convolutions were measured faster that way on this project's 2-core machine.
- The U-Net stops after the last decoder block whose output is used (``ups.16``): ``ups.17``,
  ``ups.18`` and ``final_conv`` are still built (checkpoint keys, DDPM training) but not run for
  features. The single-head self-attention uses ``scaled_dot_product_attention``.
- No hard-coded ``.cuda()``; CUDA with FP16 runs the convolutions in half precision while noise
  levels, the noise embedding and the attention softmax stay in float32 (γ ≈ 0.99995 is 1.0 in FP16).
- The 6 U-Net passes of a pair run one by one on CPU (a batch of 6 was not faster there, and
  costs ~6× the activation memory) and as one batch on CUDA (``unet_batch`` option).
- Input quantisation: by default the [0,1] inputs are used as they are. ``authors_io=true``
  reproduces the authors' uint8 round trip exactly: inputs quantised to 8 bits and
  ``u8/255·2-1`` computed in float64, output ``clamp(0,255)·255`` rounded half-to-even and
  saturated to uint8 as ``cv2.imwrite`` does, so the fused PNG equals theirs.
- Colour: the authors read both images as grey and write grey. Here the method fuses luminance
  (``color_space = "luma"``) and the Fuser keeps the visible chroma (the paper's §4.3); grey in
  gives grey out.

Where the paper and the code differ (the code is followed, for checkpoint compatibility):

- Loss weights of the head training: the paper gives 1, 4 and 20, the code (``args_fusion.py``)
  uses SSIM 10, intensity 14, texture 16; ``fusion-ros train dmfuse`` defaults to the code's and
  exposes all three (see :mod:`fusion_ros.training.dmfuse`).
- The code's noise schedule is the 'train' cosine schedule with 2000 steps (the 3000-step 'val'
  schedule of ``config/ddpm.json`` is never used); noise levels are continuous γ, not integer t.
- The released head holds modules its forward never uses (``conv_in2..5``, ``conv_t2``, ``conv_t3``);
  they are kept so the file loads with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion_ros.errors import InputError, WeightsError
from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.registry import register_method

__all__ = [
    "CAIM",
    "CONFIGS",
    "DMFuse",
    "DMFuseHead",
    "DMFuseModel",
    "SR3UNet",
    "UNetConfig",
    "criss_cross_attention",
    "cosine_betas",
    "head_state_from_checkpoint",
    "load_head",
    "load_unet",
    "schedule_buffers",
    "split_checkpoint",
    "unet_state_from_checkpoint",
]

#: Timesteps whose noisy copies feed the head, and the decoder features kept (indices into the
#: reversed list of decoder res-block outputs, as the authors' ``feat_scales``).
TIMESTEPS = (5, 50, 100)
FEAT_SCALES = (2, 5, 8, 11, 14)
N_TIMESTEP = 2000
#: Input sizes are padded to a multiple of this (the authors' choice; the U-Net needs 16).
PAD_MULTIPLE = 32

# --------------------------------------------------------------------------------------------
# Noise schedule
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# SR3 U-Net (module names follow the authors' model/sr3_modules/unet.py so checkpoints load)
# --------------------------------------------------------------------------------------------


class PositionalEncoding(nn.Module):
    """Sinusoidal embedding of the continuous noise level γ: sin then cos of γ·10000^(-k/(dim/2))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, noise_level: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, dim)
        count = self.dim // 2
        step = torch.arange(count, dtype=noise_level.dtype, device=noise_level.device) / count
        encoding = noise_level.unsqueeze(1) * torch.exp(-math.log(1e4) * step.unsqueeze(0))
        return torch.cat([torch.sin(encoding), torch.cos(encoding)], dim=-1)


class Swish(nn.Module):
    """x·sigmoid(x), a module so the ``nn.Sequential`` indices match the checkpoint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


def _inplace() -> bool:
    """In-place activations save a large allocation per op at inference; autograd needs the inputs."""
    return not torch.is_grad_enabled()


class FeatureWiseAffine(nn.Module):
    """Adds a per-channel projection of the noise embedding (``use_affine_level=False`` in SR3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(in_channels, out_channels))

    def forward(self, x: torch.Tensor, noise_embed: torch.Tensor) -> torch.Tensor:
        shift = self.noise_func(noise_embed).view(x.shape[0], -1, 1, 1)
        return x.add_(shift) if _inplace() else x + shift


class Block(nn.Module):
    """GroupNorm → Swish → (Dropout) → 3×3 conv; keys ``block.0`` (norm) and ``block.3`` (conv)."""

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, dim),
            Swish(),
            nn.Dropout(dropout) if dropout != 0 else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm, _, drop, conv = self.block
        return conv(drop(F.silu(norm(x), inplace=_inplace())))


class ResnetBlock(nn.Module):
    """Two Blocks with the noise embedding added in between, plus a (1×1 when widths differ) shortcut."""

    def __init__(self, dim: int, dim_out: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        # Construction order = the authors' (noise_func, block1, block2, res_conv): seeded random
        # initialisation then reproduces their weights exactly.
        self.noise_func = FeatureWiseAffine(emb_dim, dim_out)
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups, dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.noise_func(self.block1(x), emb))
        shortcut = self.res_conv(x)
        return h.add_(shortcut) if _inplace() else h + shortcut


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions, scores scaled by 1/√C, residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2)  # (B, 3, HW, C)
        q, k, v = (t.unsqueeze(1) for t in qkv.unbind(1))  # (B, 1, HW, C)
        if q.dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(c))  # (B, 1, HW, C)
        out = out[:, 0].transpose(-1, -2).reshape(b, c, h, w).to(x.dtype)
        return self.out(out) + x


class ResnetBlocWithAttn(nn.Module):
    """A ResnetBlock, followed by self-attention at the attention resolutions."""

    def __init__(self, dim: int, dim_out: int, *, emb_dim: int, groups: int, dropout: float, with_attn: bool) -> None:
        super().__init__()
        self.with_attn = with_attn
        self.res_block = ResnetBlock(dim, dim_out, emb_dim, dropout, groups)
        if with_attn:
            self.attn = SelfAttention(dim_out, groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, emb)
        return self.attn(x) if self.with_attn else x


class Downsample(nn.Module):
    """3×3 conv with stride 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class UNetConfig:
    """SR3 U-Net hyper-parameters (the authors' ``config/ddpm.json`` + ``define_G`` defaults).

    ``image_size`` only decides where attention sits (levels whose nominal size is in
    ``attn_res``), whatever the input size.
    """

    in_channel: int = 3
    out_channel: int = 3
    inner_channel: int = 32
    norm_groups: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8)
    attn_res: tuple[int, ...] = (16,)
    res_blocks: int = 2
    dropout: float = 0.2
    image_size: int = 256

    def feature_channels(self, n_timesteps: int = len(TIMESTEPS)) -> tuple[int, ...]:
        """Widths of the concatenated features per level, full resolution first (head input widths)."""
        return tuple(n_timesteps * self.inner_channel * m for m in self.channel_mults)


#: ``quarter``: the released model (inner channel 128 → 32, "compress the quadruple channels").
#: ``small``: the golden fixtures' reduced config. ``test_tiny``: unit tests and smoke training.
CONFIGS: dict[str, UNetConfig] = {
    "quarter": UNetConfig(),
    "small": UNetConfig(inner_channel=16, norm_groups=16),
    "test_tiny": UNetConfig(inner_channel=8, norm_groups=4, channel_mults=(1, 2, 2, 4, 4), dropout=0.0),
}


class SR3UNet(nn.Module):
    """The SR3 denoising U-Net of DMFuse, conditioned on the continuous noise level γ.

    ``forward`` predicts the noise (DDPM training); :meth:`decoder_features` returns the decoder
    features the fusion head reads, and stops as soon as the last of them is computed.
    """

    def __init__(self, config: UNetConfig = CONFIGS["quarter"]) -> None:
        super().__init__()
        cfg = self.config = config
        inner, groups, drop = cfg.inner_channel, cfg.norm_groups, cfg.dropout
        self.noise_level_mlp = nn.Sequential(
            PositionalEncoding(inner), nn.Linear(inner, inner * 4), Swish(), nn.Linear(inner * 4, inner)
        )
        self.init_conv = nn.Conv2d(cfg.in_channel, inner, kernel_size=3, padding=1)
        pre = inner
        skip_channels = [pre]
        now_res = cfg.image_size
        downs: list[nn.Module] = []
        n_levels = len(cfg.channel_mults)
        for level, mult in enumerate(cfg.channel_mults):
            width = inner * mult
            for _ in range(cfg.res_blocks):
                downs.append(ResnetBlocWithAttn(pre, width, emb_dim=inner, groups=groups, dropout=drop, with_attn=now_res in cfg.attn_res))
                skip_channels.append(width)
                pre = width
            if level != n_levels - 1:
                downs.append(Downsample(pre))
                skip_channels.append(pre)
                now_res //= 2
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([
            ResnetBlocWithAttn(pre, pre, emb_dim=inner, groups=groups, dropout=drop, with_attn=True),
            ResnetBlocWithAttn(pre, pre, emb_dim=inner, groups=groups, dropout=drop, with_attn=False),
        ])
        ups: list[nn.Module] = []
        for level in reversed(range(n_levels)):
            width = inner * cfg.channel_mults[level]
            for _ in range(cfg.res_blocks + 1):
                ups.append(ResnetBlocWithAttn(
                    pre + skip_channels.pop(), width, emb_dim=inner, groups=groups, dropout=drop, with_attn=now_res in cfg.attn_res
                ))
                pre = width
            if level != 0:
                ups.append(Upsample(pre))
                now_res *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(pre, cfg.out_channel, groups)

    def embed(self, noise_level: torch.Tensor) -> torch.Tensor:
        """Noise-level embedding (B, inner); the sinusoid is computed in float32 whatever the weights' dtype."""
        pe, *mlp = self.noise_level_mlp
        emb = pe(noise_level.reshape(-1).float()).to(self.init_conv.weight.dtype)
        for layer in mlp:
            emb = layer(emb)
        return emb

    def _encode(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.init_conv(x)
        skips = [x]
        for layer in self.downs:
            x = layer(x, emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, emb)
        return x, skips

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """Predicted noise ε for x_t (B,C,H,W) at levels γ (B,) or (B,1); H, W multiples of 16."""
        emb = self.embed(noise_level)
        x, skips = self._encode(x, emb)
        for layer in self.ups:
            x = layer(torch.cat((x, skips.pop()), dim=1), emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
        return self.final_conv(x)

    def decoder_features(self, x: torch.Tensor, noise_level: torch.Tensor, feat_scales: Sequence[int] = FEAT_SCALES) -> list[torch.Tensor]:
        """Outputs of the decoder res-blocks selected by ``feat_scales``, in that order.

        ``feat_scales`` index the *reversed* list of decoder res-block outputs (0 = the last,
        full-resolution block), as in the authors' ``fd[i]``.
        """
        n_blocks = sum(isinstance(m, ResnetBlocWithAttn) for m in self.ups)
        wanted = {n_blocks - 1 - i: i for i in feat_scales}  # ordinal in forward order → fd index
        emb = self.embed(noise_level)
        x, skips = self._encode(x, emb)
        found: dict[int, torch.Tensor] = {}
        ordinal = 0
        for layer in self.ups:
            if isinstance(layer, ResnetBlocWithAttn):
                x = layer(torch.cat((x, skips.pop()), dim=1), emb)
                if ordinal in wanted:
                    found[wanted[ordinal]] = x
                    if len(found) == len(wanted):
                        break
                ordinal += 1
            else:
                x = layer(x)
        return [found[i] for i in feat_scales]


# --------------------------------------------------------------------------------------------
# Fusion head (module names follow the authors' Net.py / cross.py)
# --------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """Reflection pad k//2 → conv → LeakyReLU(0.2) unless ``is_last`` (the authors' unused Dropout2d is omitted)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, is_last: bool = False) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        self.is_last = is_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        out = self.conv2d(x)
        return out if self.is_last else F.leaky_relu(out, 0.2, inplace=_inplace())


class ChannelSELayer(nn.Module):
    """Channel squeeze-excitation weights: mean over HW → fc1 → ReLU → fc2 → sigmoid, (B,C)."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))


class SpatialSELayer(nn.Module):
    """Spatial squeeze-excitation weights: 1×1 conv to one channel → sigmoid, (B,1,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


class ChannelSpatialSELayer(nn.Module):
    """cSE(x) + sSE(x) = x·(channel weight + spatial weight), one multiplication instead of two."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.cSE = ChannelSELayer(channels, reduction)
        self.sSE = SpatialSELayer(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.cSE(x)[:, :, None, None] + self.sSE(x))


class Encoder(nn.Module):
    """Per-level feature encoder: 3×3 ConvLayer (no activation) → ReLU → channel+spatial SE."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, out_channels, 3, is_last=True)
        self.ChannelSpatialSELayer = ChannelSpatialSELayer(out_channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.conv1(x))

    def conv_part(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Contribution of input channels ``start … start + C`` to ``conv1`` (bias with the first part).

        conv(cat(a, b, c)) = conv_a(a) + conv_b(b) + conv_c(c): features of several U-Net passes are
        encoded as they arrive instead of being kept until they can be concatenated.
        """
        conv = self.conv1.conv2d
        weight = conv.weight[:, start:start + x.shape[1]]
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, conv.bias if start == 0 else None)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU → SE on the (summed) ``conv1`` output."""
        return self.ChannelSpatialSELayer(F.relu(x, inplace=_inplace()))


class Decoder1(nn.Module):
    """Output layer: 1×1 ConvLayer (no activation) → tanh."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, out_channels, 1, is_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv1(x))


def _branch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_diagonal: bool, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention within each of N independent lines, in chunks of lines.

    Args:
        q: (N, L, c) queries, k: (N, c, L) keys, v: (N, L, C) values of N lines of length L.
        mask_diagonal: exclude each position from its own line (the column branch, so that the
            pixel itself is counted once, in the row branch).
        chunk: lines per chunk; the (chunk, L, L) energies are the only large temporary.

    Returns:
        The normalised output (N, L, C) and the log-sum-exp of each query's energies (N, L).
    """
    outs, lses = [], []
    for start in range(0, q.shape[0], chunk):
        sl = slice(start, start + chunk)
        energy = torch.bmm(q[sl], k[sl])  # (n, L, L)
        if mask_diagonal:
            energy.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        if _inplace():
            # Inference: one exp pass, in place, normalised after the product (smaller tensor).
            peak = energy.amax(dim=-1, keepdim=True)
            weights = energy.sub_(peak).exp_()
            total = weights.sum(dim=-1, keepdim=True)
            outs.append(torch.bmm(weights, v[sl]).div_(total))
            lses.append((peak + total.log()).squeeze(-1))
        else:
            outs.append(torch.bmm(energy.softmax(dim=-1), v[sl]))
            lses.append(energy.logsumexp(dim=-1))
    return torch.cat(outs), torch.cat(lses)


#: PyTorch's fused CPU attention kernel, which also returns the log-sum-exp the two branches need;
#: a private op, so its absence (another torch version) falls back to :func:`_branch_attention`.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _use_fused_kernel(x: torch.Tensor) -> bool:
    """Whether :func:`criss_cross_attention` takes the fused-kernel path for tensors like ``x``."""
    return _FLASH_CPU is not None and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _branch_attention_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_diagonal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_branch_attention` through the fused CPU kernel: about 2× faster, no (L, L) energies
    in memory. The kernel wants equal head sizes, so queries and keys are zero-padded to the
    value width, which leaves every dot product unchanged."""
    length, width = q.shape[1], v.shape[-1]
    # The kernel silently misreads some strided layouts: hand it plain contiguous tensors.
    # (CAIM already projects zero-padded queries and keys, so the padding here is then a no-op.)
    q_pad = F.pad(q, (0, width - q.shape[-1])).contiguous().unsqueeze(1)  # (N, 1, L, C)
    k_pad = F.pad(k.transpose(1, 2), (0, width - k.shape[1])).contiguous().unsqueeze(1)
    mask = None
    if mask_diagonal:
        mask = torch.zeros(length, length, dtype=q.dtype, device=q.device)
        mask.diagonal().fill_(float("-inf"))
    out, lse = _FLASH_CPU(q_pad, k_pad, v.contiguous().unsqueeze(1), 0.0, False, attn_mask=mask, scale=1.0)[:2]
    return out[:, 0], lse[:, 0]


def criss_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, max_elements: int = 1 << 22) -> torch.Tensor:
    """Criss-cross attention: each pixel attends to its column and its row, one joint softmax.

    Exactly the CCNet formulation of the authors' ``cross.py`` (the pixel itself appears once, in
    the row), but the joint softmax over the H+W candidates is split into a column softmax and a
    row softmax whose outputs are recombined with weights sigmoid(lse_col - lse_row), so the
    energies are only ever held for ``max_elements`` entries at a time.

    Args:
        q: (B,c,H,W) queries; k: (B,c,H,W) keys; v: (B,C,H,W) values.
        max_elements: cap on the elements of one chunk of energies (memory, not maths).

    Returns:
        (B,C,H,W) attention output (without residual or γ).
    """
    b, _, h, w = q.shape
    # Column branch: lines are the B·W columns, positions run over H.
    q_col = q.permute(0, 3, 2, 1).reshape(b * w, h, -1)
    k_col = k.permute(0, 3, 1, 2).reshape(b * w, -1, h)
    v_col = v.permute(0, 3, 2, 1).reshape(b * w, h, -1)
    fused = _use_fused_kernel(q)
    if fused:
        out_col, lse_col = _branch_attention_fused(q_col, k_col, v_col, True)
    else:
        out_col, lse_col = _branch_attention(q_col, k_col, v_col, True, max(1, max_elements // (h * h)))
    # Row branch: lines are the B·H rows, positions run over W.
    q_row = q.permute(0, 2, 3, 1).reshape(b * h, w, -1)
    k_row = k.permute(0, 2, 1, 3).reshape(b * h, -1, w)
    v_row = v.permute(0, 2, 3, 1).reshape(b * h, w, -1)
    if fused:
        out_row, lse_row = _branch_attention_fused(q_row, k_row, v_row, False)
    else:
        out_row, lse_row = _branch_attention(q_row, k_row, v_row, False, max(1, max_elements // (w * w)))
    # Share of the joint softmax mass that falls in the column: exp(lse_col) / (exp(lse_col) + exp(lse_row)).
    share_col = torch.sigmoid(lse_col.view(b, w, h).transpose(1, 2) - lse_row.view(b, h, w))  # (B,H,W)
    out_col = out_col.view(b, w, h, -1).permute(0, 3, 2, 1)  # (B,C,H,W)
    out_row = out_row.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B,C,H,W)
    share = share_col.unsqueeze(1)
    return torch.lerp(out_row, out_col, share)  # out_row·(1-share) + out_col·share


class CAIM(nn.Module):
    """Cross-attention interactive module (the authors' ``CrissCrossAttention``).

    The query comes from the *other* modality, key and value from the map's own:
    ir' = ir + γ·CC(q(vis), k(ir), v(ir)), vis' = vis + γ·CC(q(ir), k(vis), v(vis)).
    The same 1×1 projections serve both modalities and all levels.
    """

    def __init__(self, channels: int, max_elements: int = 1 << 22) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.max_elements = max_elements

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = ir.dtype
        # Softmax statistics in float32 even when the network runs in half precision.
        x, y = ir.float(), vis.float()
        # The fused CPU kernel needs queries and keys as wide as the values: zero rows added to
        # their projections give zero channels, which leave every dot product unchanged.
        width = self.value_conv.out_channels if _use_fused_kernel(x) else self.query_conv.out_channels

        def proj(conv: nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
            rows = width - conv.out_channels if conv is not self.value_conv else 0
            weight = F.pad(conv.weight.float(), (0, 0, 0, 0, 0, 0, 0, rows))
            return F.conv2d(t, weight, F.pad(conv.bias.float(), (0, rows)))

        q_x, k_x, v_x = proj(self.query_conv, x), proj(self.key_conv, x), proj(self.value_conv, x)
        q_y, k_y, v_y = proj(self.query_conv, y), proj(self.key_conv, y), proj(self.value_conv, y)
        gamma = self.gamma.float()
        ir_out = x + gamma * criss_cross_attention(q_y, k_x, v_x, self.max_elements)
        vis_out = y + gamma * criss_cross_attention(q_x, k_y, v_y, self.max_elements)
        return ir_out.to(dtype), vis_out.to(dtype)


class DMFuseHead(nn.Module):
    """The trained part of DMFuse: encoders, CAIM, multi-level decoder (the authors' ``Net.net``).

    Args:
        feature_channels: widths of the concatenated diffusion features at the four distinct
            encoder inputs (levels 0-3; level 4 reuses ``en3``): 96/192/384/768 for the released model.
        max_elements: chunk size of the criss-cross attention (memory bound, not maths).
    """

    def __init__(self, feature_channels: Sequence[int] = (96, 192, 384, 768), max_elements: int = 1 << 22) -> None:
        super().__init__()
        c0, c1, c2, c3 = feature_channels[:4]
        # Construction order and the never-used layers follow the authors' file so the released
        # checkpoint loads with strict=True.
        self.conv_in1 = ConvLayer(64, 64, 3)
        self.conv_in2 = ConvLayer(32, 16, 1)  # unused by the forward (in the checkpoint)
        self.conv_in3 = ConvLayer(64, 32, 1)  # unused
        self.conv_in4 = ConvLayer(128, 64, 1)  # unused
        self.conv_in5 = ConvLayer(128, 128, 1)  # unused
        self.conv_t4 = ConvLayer(128, 64, 3)
        self.conv_t3 = ConvLayer(128, 64, 3)  # unused
        self.conv_t2 = ConvLayer(64, 32, 3)  # unused
        self.conv_t1 = Decoder1(64, 1)
        self.en0 = Encoder(c0, 32)
        self.en1 = Encoder(c1, 32)
        self.en2 = Encoder(c2, 32)
        self.en3 = Encoder(c3, 32)
        self.crossatten = CAIM(32, max_elements)

    def encoders(self) -> tuple[Encoder, ...]:
        """The encoder of each of the 5 levels (``en3`` twice, as the authors)."""
        return (self.en0, self.en1, self.en2, self.en3, self.en3)

    def encode(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """5 levels of concatenated diffusion features of one modality → 5 maps of 32 channels."""
        return [enc(f) for enc, f in zip(self.encoders(), feats)]

    def fuse(self, enc_ir: Sequence[torch.Tensor], enc_vis: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """CAIM at each level → cat([ir', vis']) of 64 channels."""
        return [torch.cat(self.crossatten(a, b), dim=1) for a, b in zip(enc_ir, enc_vis)]

    def decode(self, fused: Sequence[torch.Tensor]) -> torch.Tensor:
        """Coarse to fine: f = conv_t4(cat[conv_in1(up×2(f)), level]); then 1×1 conv + tanh → (B,1,H,W)."""
        f = fused[-1]
        for level in reversed(fused[:-1]):
            f = self.conv_t4(torch.cat([self.conv_in1(F.interpolate(f, scale_factor=2.0, mode="nearest")), level], dim=1))
        return self.conv_t1(f)

    def forward(self, feats_ir: Sequence[torch.Tensor], feats_vis: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decode(self.fuse(self.encode(feats_ir), self.encode(feats_vis)))


# --------------------------------------------------------------------------------------------
# Whole model: noise, features, head
# --------------------------------------------------------------------------------------------


class DMFuseModel(nn.Module):
    """Frozen diffusion U-Net + fusion head, from padded [-1,1] grey pairs to the tanh output.

    Args:
        unet: the SR3 U-Net (frozen; run in eval mode).
        head: the fusion head.
        timesteps: diffusion steps of the noisy copies (the authors' 5, 50, 100).
        feat_scales: decoder features kept (the authors' 2, 5, 8, 11, 14).
    """

    def __init__(self, unet: SR3UNet, head: DMFuseHead, timesteps: Sequence[int] = TIMESTEPS, feat_scales: Sequence[int] = FEAT_SCALES) -> None:
        super().__init__()
        self.unet = unet
        self.head = head
        self.timesteps = tuple(timesteps)
        self.feat_scales = tuple(feat_scales)
        sqrt_ac = sqrt_alphas_cumprod_prev(cosine_betas(N_TIMESTEP))
        # Uniform bounds of γ per timestep; low > high as in the authors' np.random.uniform call.
        self._level_bounds = [(float(sqrt_ac[t - 1]), float(sqrt_ac[t])) for t in self.timesteps]

    def draw(self, shape: Sequence[int], generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise levels (2, T, B) float32 and noise (2, T, B, 3, H, W) float32 for a padded batch.

        Draw order: modality (IR, visible), then timestep, then the level before the noise, as
        the authors' six ``feats`` calls. ``shape`` is the padded (B, H, W).
        """
        batch, height, width = shape
        levels = torch.empty(2, len(self.timesteps), batch, dtype=torch.float32, device=device)
        noise = torch.empty(2, len(self.timesteps), batch, 3, height, width, dtype=torch.float32, device=device)
        for m in range(2):
            for i, (low, high) in enumerate(self._level_bounds):
                u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
                levels[m, i] = (low + (high - low) * u).float()
                noise[m, i].normal_(generator=generator)
        return levels, noise

    def features(self, x: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        """Concatenated decoder features of one modality, full resolution first.

        Args:
            x: (B,1,H,W) image in [-1,1], H and W multiples of 16.
            levels: (T, B) noise levels γ, float32.
            noise: (T, B, 3, H, W) standard normal noise, float32.
        """
        per_t = []
        for level, eps in zip(levels, noise):
            x_t = self.q_sample(x, level, eps).to(self.unet.init_conv.weight.dtype)
            per_t.append(self.unet.decoder_features(x_t, level, self.feat_scales))
        return [torch.cat(fs, dim=1) for fs in zip(*per_t)]

    def encoded_features(self, x: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        """The head's encoder outputs for one modality (as ``head.encode(features(...))``), with each
        U-Net pass's features folded into the encoders' convolutions at once and then freed, so the
        wide features of only one pass are ever alive (at 640×512 that saves ~0.4 GB)."""
        encoders = self.head.encoders()
        sums: list[torch.Tensor] = []
        for i, (level, eps) in enumerate(zip(levels, noise)):
            x_t = self.q_sample(x, level, eps).to(self.unet.init_conv.weight.dtype)
            for lv, (enc, f) in enumerate(zip(encoders, self.unet.decoder_features(x_t, level, self.feat_scales))):
                part = enc.conv_part(f, i * f.shape[1])
                if i == 0:
                    sums.append(part)
                else:
                    sums[lv] = sums[lv].add_(part) if _inplace() else sums[lv] + part
        return [enc.finish(total) for enc, total in zip(encoders, sums)]

    def features_batched(self, x: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> list[list[torch.Tensor]]:
        """Features of both modalities from one U-Net call on a batch of 2·T·B.

        Args:
            x: (2, B, 1, H, W) IR then visible in [-1,1]; levels (2, T, B); noise (2, T, B, 3, H, W).

        Returns:
            [IR features, visible features], each as :meth:`features`.
        """
        n_mod, n_t, batch = levels.shape
        x_t = self.q_sample(x.unsqueeze(1), levels, noise)  # (2, T, B, 3, H, W)
        x_t = x_t.flatten(0, 2).to(self.unet.init_conv.weight.dtype)
        feats = self.unet.decoder_features(x_t, levels.flatten(), self.feat_scales)
        out: list[list[torch.Tensor]] = [[], []]
        for f in feats:
            f = f.view(n_mod, n_t, batch, *f.shape[1:]).transpose(1, 2)  # (2, B, T, C, h, w)
            for m in range(n_mod):
                out[m].append(f[m].flatten(1, 2))
        return out

    @staticmethod
    def q_sample(x: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """γ·x + √(1-γ²)·ε in float32, the authors' operation order (bit-exact on their fixtures)."""
        gamma = level.float().reshape(*level.shape, *([1] * (noise.dim() - level.dim())))
        return gamma * x.float() + (1 - gamma**2).sqrt() * noise

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """Fused tanh output (B,1,H,W) of padded grey inputs in [-1,1] with given levels and noise.

        Args:
            ir, vis: (B,1,H,W) in [-1,1], H and W multiples of 32.
            levels: (2, T, B) γ per modality and timestep; noise: (2, T, B, 3, H, W).
            batched: one U-Net call for all 2·T·B passes (faster on CUDA, ~6× activation memory).
        """
        if batched:
            feats_ir, feats_vis = self.features_batched(torch.stack([ir, vis]), levels, noise)
            enc_ir, enc_vis = self.head.encode(feats_ir), self.head.encode(feats_vis)
        else:
            enc_ir = self.encoded_features(ir, levels[0], noise[0])
            enc_vis = self.encoded_features(vis, levels[1], noise[1])
        return self.head.decode(self.head.fuse(enc_ir, enc_vis))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def unet_state_from_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """U-Net keys from the authors' DDPM file (``denoise_fn.*`` + 12 schedule buffers) or a plain U-Net state.

    The schedule buffers are dropped: the authors' ``feats`` draws its levels from a numpy copy of
    the schedule built from the config, never from the buffers, and so does this module.
    """
    if not any(k.startswith("denoise_fn.") for k in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        if key.startswith("denoise_fn."):
            out[key[len("denoise_fn."):]] = value
        elif key not in SCHEDULE_BUFFERS:
            out[key] = value  # reported as unexpected by the strict check
    return out


def head_state_from_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Head keys from a head-only file (the released ``model.model``) or a combined file (``head.*``)."""
    if any(k.startswith("head.") for k in state):
        return {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    return dict(state)


def _read(path: Path) -> dict[str, torch.Tensor]:
    from fusion_ros.weights import load_state_dict

    return load_state_dict(Path(path), unwrap=("state_dict",))


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load with a one-line explanation of any mismatch; ``assign`` so a module built on
    the meta device (no wasted random initialisation) takes the file's tensors."""
    from fusion_ros.weights import check_state_dict

    check_state_dict(module, state, source)
    # Fresh copies: tensors read from a file may be views into it, unaligned for the kernels.
    module.load_state_dict({k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()}, strict=True, assign=True)


def load_unet(path: str | Path, config: UNetConfig = CONFIGS["quarter"]) -> SR3UNet:
    """An :class:`SR3UNet` with weights from ``path`` (``.pth`` DDPM/plain, ``.safetensors``), strictly checked."""
    with torch.device("meta"):
        unet = SR3UNet(config)
    _load_strict(unet, unet_state_from_checkpoint(_read(Path(path))), str(path))
    return unet.eval().requires_grad_(False)


def load_head(path: str | Path, feature_channels: Sequence[int] = (96, 192, 384, 768)) -> DMFuseHead:
    """A :class:`DMFuseHead` with weights from ``path`` (the released ``.model`` pickle or ``.safetensors``)."""
    with torch.device("meta"):
        head = DMFuseHead(feature_channels)
    _load_strict(head, head_state_from_checkpoint(_read(Path(path))), str(path))
    return head.eval()


#: Key prefixes that mark U-Net tensors in a file given with ``--weights`` (bare, as the authors'
#: DDPM file, or under ``unet.`` in a combined file); every other key belongs to the head.
_UNET_PREFIXES = ("denoise_fn.", "unet.", "noise_level_mlp.", "init_conv.", "downs.", "mid.", "ups.", "final_conv.")


def split_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The parts (``"head"``, ``"unet"``) of one checkpoint file: a head, a U-Net, or both.

    A combined file holds the head's keys bare or under ``head.`` and the U-Net's under
    ``denoise_fn.`` or ``unet.``. Keys of neither end up in the head and fail its strict check.
    """
    state = _read(Path(path))
    unet = {k: v for k, v in state.items() if k.startswith(_UNET_PREFIXES) or k in SCHEDULE_BUFFERS}
    head = {k: v for k, v in state.items() if k not in unet}
    parts = {}
    if head:
        parts["head"] = head_state_from_checkpoint(head)
    if unet:
        parts["unet"] = unet_state_from_checkpoint({k.removeprefix("unet."): v for k, v in unet.items()})
    if not parts:
        raise WeightsError(f"{path} holds no tensors")
    return parts


# --------------------------------------------------------------------------------------------
# Method adapter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DMFuseOptions:
    seed: int = option(
        0, "noise seed, re-applied every frame so output is deterministic; -1 = fresh noise per frame (the authors' behaviour)",
        range=(-1, 2**31 - 1),
    )
    unet_batch: str = option(
        "auto", "run the 6 U-Net passes as one batch: auto (CUDA yes; CPU no: ~6x the memory, see docs/RESULTS.md), on, off",
        choices=("auto", "on", "off"),
    )
    channels_last: bool = option(True, "CPU: run the networks in NHWC memory layout (faster with oneDNN; no effect on CUDA)")
    authors_io: bool = option(False, "reproduce the authors' uint8 input quantisation and output rounding exactly (PNG parity)")
    weights: str = option(
        "", "checkpoint file: the head (model.model), the DDPM U-Net (ddpm_gen.pth) or both; the other part from the weights folder"
    )
    unet_weights: str = option("", "U-Net checkpoint file (default: the manifest's, in the weights folder)")


@register_method
class DMFuse(FusionMethod):
    """DMFuse with the authors' frozen quarter-width diffusion U-Net and released fusion head."""

    name = "dmfuse"
    description = "DMFuse (CJIF 2024): diffusion U-Net features (t=5/50/100) + criss-cross cross-attention head"
    Options = DMFuseOptions
    color_space = "luma"
    weights_key = "dmfuse"
    cost = "~15 s, 1.7 GB peak / 640x512 pair on 2 CPU cores (6 U-Net passes + head); GPU advised"
    seconds_per_pair = 15.4

    #: Files inside the weights folder (as in ``weights/manifest.toml``).
    HEAD_FILE = "dmfuse/model.model"
    UNET_FILE = "dmfuse/ddpm_gen.pth"

    def __init__(
        self, options: Any, device: torch.device, dtype: torch.dtype, weights_dir: Path, *, random_init: bool = False, config: str = "quarter"
    ) -> None:
        super().__init__(options, device, dtype, weights_dir, random_init=random_init)
        opts: DMFuseOptions = options
        cfg = CONFIGS[config]
        with torch.device("cpu" if random_init else "meta"):  # meta: no initialisation the weights replace
            unet, head = SR3UNet(cfg), DMFuseHead(cfg.feature_channels())
        if not random_init:
            self._load_weights(unet, head, opts, weights_dir)
        self.model = DMFuseModel(unet, head).to(device=device, dtype=dtype).eval().requires_grad_(False)
        if device.type == "cpu" and opts.channels_last:
            # oneDNN's convolutions run faster in NHWC here, and less memory is reordered.
            self.model.to(memory_format=torch.channels_last)
        self.batched = opts.unet_batch == "on" or (opts.unet_batch == "auto" and device.type == "cuda")
        self.generator = torch.Generator(device=device)
        if opts.seed >= 0:
            self.generator.manual_seed(opts.seed)
        else:
            self.generator.seed()
        self._noise_cache: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _load_weights(unet: SR3UNet, head: DMFuseHead, opts: DMFuseOptions, weights_dir: Path) -> None:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        sources: dict[str, str] = {}
        if opts.weights:
            parts = split_checkpoint(opts.weights)
            sources = {k: opts.weights for k in parts}
        if opts.unet_weights:
            parts["unet"] = unet_state_from_checkpoint(_read(Path(opts.unet_weights)))
            sources["unet"] = opts.unet_weights
        for part, default in (("head", DMFuse.HEAD_FILE), ("unet", DMFuse.UNET_FILE)):
            if part not in parts:
                path = weights_dir / default
                state = _read(path)
                parts[part] = head_state_from_checkpoint(state) if part == "head" else unet_state_from_checkpoint(state)
                sources[part] = str(path)
        _load_strict(head, parts["head"], sources["head"])
        _load_strict(unet, parts["unet"], sources["unet"])

    def _levels_and_noise(self, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels and noise for a padded batch; with a fixed seed they are drawn once per shape."""
        shape = (batch, height, width)
        if self.options.seed < 0:
            return self.model.draw(shape, self.generator, self.device)
        if self._noise_cache is None or self._noise_cache[0] != shape:
            self.generator.manual_seed(self.options.seed)
            self._noise_cache = (shape, *self.model.draw(shape, self.generator, self.device))
        return self._noise_cache[1], self._noise_cache[2]

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, *, levels: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Fused luminance (B,1,H,W) in [0,1].

        Args:
            ir, vis: (B,1,H,W) in [0,1].
            levels: optional (2, 3, B) noise levels γ (IR then visible; t = 5, 50, 100), to inject
                saved values instead of drawing them; ``noise`` likewise, (2, 3, B, 3, H', W') at
                the padded size H' = ⌈H/32⌉·32, W' = ⌈W/32⌉·32.
        """
        if ir.shape != vis.shape or ir.ndim != 4 or ir.shape[1] != 1:
            raise InputError(f"dmfuse needs ir and vis of equal shape (B,1,H,W), got {tuple(ir.shape)} and {tuple(vis.shape)}")
        batch, _, height, width = ir.shape
        x_ir, x_vis = self.prepare(ir), self.prepare(vis)
        if levels is None or noise is None:
            drawn_levels, drawn_noise = self._levels_and_noise(batch, x_ir.shape[-2], x_ir.shape[-1])
            levels = drawn_levels if levels is None else levels
            noise = drawn_noise if noise is None else noise
        out = self.model(x_ir, x_vis, levels.to(self.device), noise.to(self.device), batched=self.batched)
        out = out[:, :, :height, :width].float()
        if self.options.authors_io:
            # clamp(0,255)·255, then cv2.imwrite's saturating round-half-to-even to uint8.
            return (out.clamp(min=0.0) * 255.0).round().clamp(0.0, 255.0) / 255.0
        return out.clamp(0.0, 1.0)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) in [0,1] → the U-Net's input range [-1,1], float32, padded at the bottom and
        right with white (+1, the authors' 255) to a multiple of 32. With ``authors_io`` the value
        goes through uint8 and float64 as their loader computes it."""
        if self.options.authors_io:
            u8 = (x.double() * 255.0).round().clamp(0.0, 255.0)
            x = (u8 / 255.0 * 2.0 - 1.0).float()
        else:
            x = x.float() * 2.0 - 1.0
        pad_h, pad_w = -x.shape[-2] % PAD_MULTIPLE, -x.shape[-1] % PAD_MULTIPLE
        return F.pad(x, (0, pad_w, 0, pad_h), value=1.0)
