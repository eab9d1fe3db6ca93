"""DMFuse's trained fusion head: per-level encoders, the criss-cross cross-attention module (CAIM) and the
multi-level decoder, with module names of the authors' ``Net.py`` / ``cross.py``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion_ros.methods.dmfuse.ops import inplace_ok

__all__ = ["CAIM", "DMFuseHead", "criss_cross_attention"]


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
        return out if self.is_last else F.leaky_relu(out, 0.2, inplace=inplace_ok())


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
        return self.ChannelSpatialSELayer(F.relu(x, inplace=inplace_ok()))


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
        if mask_diagonal and inplace_ok():
            energy.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        elif mask_diagonal:  # out of place (autograd, ONNX export)
            idx = torch.arange(energy.shape[-1], device=energy.device)  # (an arange, not eye: ONNX runtimes lack a bool EyeLike)
            energy = energy.masked_fill(idx[:, None] == idx[None, :], float("-inf"))
        if torch.is_grad_enabled():
            outs.append(torch.bmm(energy.softmax(dim=-1), v[sl]))
            lses.append(energy.logsumexp(dim=-1))
        else:
            # Inference: one exp pass (in place unless exporting), normalised after the product (smaller
            # tensor); the log-sum-exp from its parts (OpenVINO mis-shapes ONNX's ReduceLogSumExp).
            peak = energy.amax(dim=-1, keepdim=True)
            weights = energy.sub_(peak).exp_() if inplace_ok() else (energy - peak).exp()
            total = weights.sum(dim=-1, keepdim=True)
            out = torch.bmm(weights, v[sl])
            outs.append(out.div_(total) if inplace_ok() else out / total)
            lses.append((peak + total.log()).squeeze(-1))
    if len(outs) == 1:
        return outs[0], lses[0]
    return torch.cat(outs), torch.cat(lses)


#: PyTorch's fused CPU attention kernel, which also returns the log-sum-exp the two branches need;
#: a private op, so its absence (another torch version) falls back to :func:`_branch_attention`.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _use_fused_kernel(x: torch.Tensor) -> bool:
    """Whether :func:`criss_cross_attention` takes the fused-kernel path for tensors like ``x``."""
    return (
        _FLASH_CPU is not None and x.device.type == "cpu" and x.dtype == torch.float32
        and not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export()
    )


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
            weight, bias = conv.weight.float(), conv.bias.float()
            if rows:  # (no padding op otherwise: an ONNX export needs the kernel as a constant)
                weight, bias = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, rows)), F.pad(bias, (0, rows))
            return F.conv2d(t, weight, bias)

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
