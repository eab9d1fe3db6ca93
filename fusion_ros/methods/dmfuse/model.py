"""DMFuse end to end on padded [-1,1] grey pairs: noise levels, the U-Net feature passes, the head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from fusion_ros.methods.dmfuse.head import DMFuseHead
from fusion_ros.methods.dmfuse.ops import inplace_ok
from fusion_ros.methods.dmfuse.schedule import FEAT_SCALES, N_TIMESTEP, TIMESTEPS, cosine_betas, sqrt_alphas_cumprod_prev
from fusion_ros.methods.dmfuse.unet import SR3UNet

__all__ = ["DMFuseModel"]


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
                    sums[lv] = sums[lv].add_(part) if inplace_ok() else sums[lv] + part
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
