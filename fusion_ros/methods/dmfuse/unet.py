"""DMFuse's feature extractor: the SR3 denoising U-Net, with module names of the authors'
``model/sr3_modules/unet.py`` so their DDPM checkpoint loads strictly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion_ros.methods.dmfuse.ops import inplace_ok
from fusion_ros.methods.dmfuse.schedule import FEAT_SCALES, TIMESTEPS

__all__ = ["CONFIGS", "SR3UNet", "UNetConfig"]


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


class FeatureWiseAffine(nn.Module):
    """Adds a per-channel projection of the noise embedding (``use_affine_level=False`` in SR3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(in_channels, out_channels))

    def forward(self, x: torch.Tensor, noise_embed: torch.Tensor) -> torch.Tensor:
        shift = self.noise_func(noise_embed).view(x.shape[0], -1, 1, 1)
        return x.add_(shift) if inplace_ok() else x + shift


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
        return conv(drop(F.silu(norm(x), inplace=inplace_ok())))


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
        return h.add_(shortcut) if inplace_ok() else h + shortcut


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
