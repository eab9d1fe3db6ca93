"""DeFusion: fusion from self-supervised decomposition (Liang, Jiang, Liu, Ma; ECCV 2022).

Paper: "Fusion from Decomposition: A Self-Supervised Decomposition Approach for Image Fusion", ECCV 2022.
Authors' code: https://github.com/erfect2020/DecompositionForFusion @ 9e7a09a (2023-09-14), MIT per its
README and ``LICENSE.md`` (its ResNeSt building blocks carry Hang Zhang's headers). Weights: one
checkpoint on the authors' Google Drive (see ``weights/manifest.toml``), under the same MIT terms.
No code was copied; this is a re-implementation from reading theirs.

This file re-implements the *test-time* network ``models/UCTestShareModelProCommon.py:UCTestSharedNetPro``
(7,874,473 parameters) with the exact released ``state_dict`` layout (676 keys, including the duplicated
aliases of the modules shared by the two inputs), so the authors' ``{'state_dict': …}`` checkpoint, a bare
state dict, or a ``.safetensors`` copy load with ``strict=True``. The network is a ResNeSt split-attention
encoder shared by both images ("upper" = infrared, "lower" = visible), a common encoder ("ensembler") on
both encodings, a common decoder and a unique decoder (shared by both inputs), 16→3 projection heads, and
``fusion_rule``, a 16→3 conv on the sum of the three decoder embeddings whose output is the fused image.

Deliberate deviations from the authors' code, none of which changes a single output bit (the parity test
compares with the authors' own outputs, see ``test/test_defusion.py``; like theirs, the last bits depend
on the thread count, because ATen's reductions and conv dispatch do):

* The shared encoder and the shared unique decoder run the two images as one batch of 2 at 1/2 to 1/8
  resolution (their full- and half-resolution ends run per image, which keeps the peak memory below the
  authors'); the split-attention MLP (``fc1``/``fc2``) still runs per image, because ATen routes a
  batch-1 1x1 conv on a 1x1 map to a different GEMM than a batch-2 one, which rounds differently.
* On x86 CPUs with oneDNN, conv+ReLU and conv+residual+ReLU run as oneDNN post-op fusions
  (``mkldnn._convolution_pointwise``), but only where ATen itself would have chosen oneDNN for the
  plain conv (1x1 convs go to ATen's GEMM path when single-threaded), so the kernel is the same one.
* The 3x3/2 max pool is computed as a separable max over strided views (max is exact in any order),
  the no-op nearest resize after each ×2 upsampling is skipped when sizes already match, the identity
  ``AvgPool2d(1)`` in a stride-1 ``avg_down`` shortcut is dropped, and the attention products are
  formed in place.
* :meth:`DeFusionNet.fuse` returns only the fused image and skips the three projection heads.
* The unused ``decoder_common_projection_layer`` is kept (its weights are in the checkpoint); at test
  time the common part goes through the *upper* projection, as in the authors' forward. Training
  (:mod:`fusion_ros.training.defusion`) uses the common projection, as the authors' training class does.

Inference as the authors ran it for infrared/visible (``test.py`` + ``data/visir_fusion_dataset.py``):
both images grey (PIL ``convert('L')``) replicated to 3 channels in [0,1], IR first, 16-pixel reflect
padding, forward, crop, ``clamp(0,1)``, and ``ToPILImage`` (``mul(255).byte()``, which truncates).

Colour: the authors' IR/visible path is grey in, grey-ish RGB out. The adapter here is a ``"luma"``
method by default: it feeds the visible luminance (grey, exactly like the authors' grey path) and the
thermal image, converts the 3-channel output to BT.601 luminance, and the Fuser keeps the visible chroma.
That keeps the paper's numbers meaningful (same input statistics as the published IR/VIS results) and
still gives a colour image. Feeding the RGB visible image instead (the network is RGB-native, trained on
colour COCO crops, and the author suggests it in their issue #8) pairs a colour image with a grey one,
which the published IR/VIS results never did; it is not offered. The option ``authors_preprocessing`` reproduces the authors' exact path
instead (PIL's fixed-point grey conversion, 8-bit quantised inputs, truncating uint8 output, and the raw
3-channel output as RGB) so a CLI PNG can be compared with the authors' ``*_recover.png``.

Speed: see ``docs/RESULTS.md`` (DeFusion) and ``python -m fusion_ros.bench_defusion``. On CPU the option
``tune_malloc`` (default on) applies :func:`fusion_ros.runtime.tune_malloc`. The real-time path for CUDA is
``runtime=torchscript`` with the Fuser's fp16/bf16 precision.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion_ros.color import BT601
from fusion_ros.errors import InputError, WeightsError
from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.registry import register_method
from fusion_ros.runtime import tune_malloc

__all__ = [
    "Bottleneck",
    "DeFusion",
    "DeFusionNet",
    "ResNestLayer",
    "SplitAttentionConv2d",
    "authors_grey",
    "checkpoint_filter_fn",
    "export_program",
    "export_torchscript",
    "load_defusion_state_dict",
    "run_pipeline",
]


# --------------------------------------------------------------------------------------------------
# oneDNN post-op fusion, only where ATen would pick oneDNN itself (so results are bit-identical)
# --------------------------------------------------------------------------------------------------


def _conv_uses_onednn(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> bool:
    """Whether ATen's own ``conv2d`` dispatch would run this fp32 CPU conv on oneDNN.

    Mirrors ``ConvParams::use_mkldnn`` (ATen ``Convolution.cpp``): single-threaded 1x1 convs with a
    batch below 16 and tiny single-image convs go to ATen's GEMM path, whose rounding differs.
    """
    one_by_one = weight.shape[-1] == 1 and weight.shape[-2] == 1
    first = stride > 1 or x.shape[0] >= 16 or not one_by_one or torch.get_num_threads() > 1
    second = groups > 1 or (weight.shape[-1] > 3 and weight.shape[-2] > 3) or x.shape[0] > 1 or x.numel() > 20480
    return first and second


def _conv_relu(x: torch.Tensor, conv: nn.Conv2d, fused: bool) -> torch.Tensor:
    """``relu(conv(x))``; one oneDNN call with a ReLU post-op when ``fused`` and ATen would use oneDNN."""
    stride = conv.stride[0]
    pad = conv.padding[0]
    if fused and _conv_uses_onednn(x, conv.weight, stride, conv.groups):
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, [pad, pad], [stride, stride], [1, 1], conv.groups, "relu", [], ""
        )
    return F.relu_(F.conv2d(x, conv.weight, conv.bias, stride, pad, 1, conv.groups))


def _conv_add_relu(x: torch.Tensor, residual: torch.Tensor, conv: nn.Conv2d, fused: bool) -> torch.Tensor:
    """``relu(conv(x) + residual)`` for a bias-free 1x1 conv; one oneDNN call when ``fused``."""
    if fused and _conv_uses_onednn(x, conv.weight, 1, 1):
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, conv.weight, None, [0, 0], [1, 1], [1, 1], 1, "add", None, "relu", [], ""
        )
    out = F.conv2d(x, conv.weight)
    out += residual
    return F.relu_(out)


def _onednn_fusion_available() -> bool:
    """oneDNN post-op fusion is used on x86 builds only: ATen's dispatch rule mirrored above is x86's."""
    if not torch.backends.mkldnn.is_available() or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise  # noqa: B018 - probe that the op is compiled in
    except (AttributeError, RuntimeError):
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Blocks (ResNeSt, every normalisation removed as in the authors' ``norm_layer=None`` build)
# --------------------------------------------------------------------------------------------------


class SplitAttentionConv2d(nn.Module):
    """ResNeSt split-attention 3x3 conv with radix 2 and one cardinal group, no normalisation.

    Equals ``splat.SplAtConv2d(c, c, 3, padding=1, radix=2, groups=1, bias=False, norm_layer=None)``:
    a grouped conv makes two ``c``-channel splits, their sum is pooled to one vector per image, an MLP
    (``fc1`` → ReLU → ``fc2``) and a softmax over the two splits give per-channel weights, and the output
    is the weighted sum of the splits.

    Args:
        channels: input and output channels (``planes`` of the bottleneck).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inter = max(channels * 2 // 4, 32)
        self.conv = nn.Conv2d(channels, 2 * channels, 3, 1, 1, groups=2, bias=False)
        self.fc1 = nn.Conv2d(channels, inter, 1)
        self.fc2 = nn.Conv2d(inter, 2 * channels, 1)
        self.onednn_fusion = False

    def _attention(self, gap: torch.Tensor) -> torch.Tensor:
        """Split weights for one image: (1, C, 1, 1) pooled sum → (1, 2C, 1, 1), radix-major."""
        b = gap.shape[0]
        att = self.fc2(F.relu_(self.fc1(gap)))
        # rSoftMax: (B, 2C) viewed as (B, cardinality=1, radix=2, C), softmax over the radix axis.
        att = F.softmax(att.view(b, 1, 2, -1).transpose(1, 2), dim=1)
        return att.reshape(b, -1).view(b, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _conv_relu(x, self.conv, self.onednn_fusion)  # (B, 2C, H, W)
        c = x.shape[1] // 2
        s0, s1 = x[:, :c], x[:, c:]
        gap = F.adaptive_avg_pool2d(s0 + s1, 1)  # (B, C, 1, 1)
        if gap.shape[0] == 1:
            att = self._attention(gap)
        else:  # per image: ATen's batch-1 GEMM for the MLP rounds differently from the batched one
            att = torch.cat([self._attention(gap[i : i + 1]) for i in range(gap.shape[0])])
        if x.requires_grad:  # training: keep the ReLU output intact for autograd
            return att[:, :c] * s0 + att[:, c:] * s1
        return torch.add(s0.mul_(att[:, :c]), s1.mul_(att[:, c:]))  # (B, C, H, W)


class Bottleneck(nn.Module):
    """ResNeSt bottleneck without normalisation: 1x1 → split-attention 3x3 → [avg pool] → 1x1, + shortcut.

    Args:
        inplanes: input channels.
        planes: bottleneck width; the output has ``4 * planes`` channels.
        stride: spatial stride, applied by the ``avd`` average pool (after the split-attention conv)
            and by the shortcut.
        avd: put ``AvgPool2d(3, stride, padding=1)`` after the split-attention conv. The authors' layers
            do this in their first block when ``stride > 1`` *or* the layer is built with ``is_first``,
            so some stride-1 blocks carry a 3x3 blur.
        shortcut: ``""`` identity, ``"avg"`` (avg pool then 1x1 conv, keys ``downsample.1``) or
            ``"conv"`` (strided 1x1 conv, keys ``downsample.0``).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, avd: bool = False, shortcut: str = "") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.conv2 = SplitAttentionConv2d(planes)
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if avd else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        if shortcut == "avg":
            # A kernel-1 stride-1 average pool is the identity; the authors' module has one there.
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, nn.Conv2d(inplanes, planes * 4, 1, bias=False))
        elif shortcut == "conv":
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False))
        else:
            self.downsample = nn.Sequential()
        self.onednn_fusion = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _conv_relu(x, self.conv1, self.onednn_fusion)
        out = self.avd_layer(self.conv2(out))
        return _conv_add_relu(out, self.downsample(x), self.conv3, self.onednn_fusion)


class ResNestLayer(nn.Module):
    """One stage of bottlenecks, as the authors' ``resnet.ResNestLayer(Bottleneck, …, norm_layer=None)``.

    Args:
        planes: bottleneck width; the stage outputs ``4 * planes`` channels.
        blocks: number of bottlenecks.
        stem_width: the stage's input has ``2 * stem_width`` channels (ResNeSt deep-stem convention).
        stride: stride of the first block.
        is_first: give the first block an ``avd`` pool even at stride 1.
        avg_down: shortcut of the first block pools then convolves (else a strided 1x1 conv).
        avd: allow the ``avd`` pool at all.
    """

    def __init__(
        self,
        planes: int,
        blocks: int,
        stem_width: int,
        *,
        stride: int = 1,
        is_first: bool = True,
        avg_down: bool = True,
        avd: bool = True,
    ) -> None:
        super().__init__()
        inplanes = 2 * stem_width
        shortcut = ""
        if stride != 1 or inplanes != 4 * planes:
            shortcut = "avg" if avg_down else "conv"
        first = Bottleneck(inplanes, planes, stride, avd and (stride > 1 or is_first), shortcut)
        self.layer = nn.Sequential(first, *[Bottleneck(4 * planes, planes) for _ in range(1, blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _projection() -> nn.Sequential:
    """A 16→3 3x3 conv + ReLU head (``*_projection_layer`` and ``fusion_rule``)."""
    return nn.Sequential(nn.Conv2d(16, 3, 3, 1, 1), nn.ReLU(inplace=True))


def _max_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    """``MaxPool2d(3, 2, padding=1)`` as a separable max over strided views: several times faster than
    ATen's NCHW kernel (which also computes indices) and exact, since max does not round."""
    h, w = x.shape[-2], x.shape[-1]
    oh, ow = (h + 1) // 2, (w + 1) // 2
    xp = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(xp[..., 0 : 2 * ow - 1 : 2], xp[..., 1 : 2 * ow : 2]), xp[..., 2 : 2 * ow + 1 : 2])
    return torch.maximum(
        torch.maximum(rows[..., 0 : 2 * oh - 1 : 2, :], rows[..., 1 : 2 * oh : 2, :]), rows[..., 2 : 2 * oh + 1 : 2, :]
    )


def _upsample_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``nn.Upsample(scale_factor=2, mode='bilinear')`` then the authors' nearest resize to the skip's
    ``[H, W]`` (a no-op unless the skip has an odd size, so it is skipped then)."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    if x.shape[-2] != size[0] or x.shape[-1] != size[1]:
        x = F.interpolate(x, size=size, mode="nearest")
    return x


def _pair_channels(f: torch.Tensor, n: int) -> torch.Tensor:
    """(2N, C, H, W) batch [upper; lower] → (N, 2C, H, W) ``cat((upper, lower), 1)``; free when N is 1."""
    c, h, w = f.shape[1], f.shape[2], f.shape[3]
    return f.view(2, n, c, h, w).transpose(0, 1).reshape(n, 2 * c, h, w)


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------


class DeFusionNet(nn.Module):
    """The authors' test-time ``UCTestSharedNetPro``, with the released ``state_dict`` layout.

    Inputs are 3-channel images in [0,1] of any size (already padded by the caller, see
    :func:`run_pipeline`). Attribute names equal the checkpoint keys; ``encoder_lower``,
    ``lower_encoder_layer*``, ``decoder_lower_layer*`` and ``decoder_lower_projection_layer`` are the
    same module objects as their "upper" twins, so their keys appear twice, as in the released file.
    """

    def __init__(self) -> None:
        super().__init__()
        # Shared (Siamese) encoder: full res → H/2 → H/4 → H/8.
        self.encoder_upper = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(inplace=True), ResNestLayer(8, 6, 8))
        self.maxpool_upper = nn.MaxPool2d(3, 2, 1)
        self.upper_encoder_layer1 = ResNestLayer(16, 6, 16, is_first=False)
        self.upper_encoder_layer2 = ResNestLayer(32, 4, 32, stride=2)
        self.upper_encoder_layer3 = ResNestLayer(64, 4, 64, stride=2)
        self.encoder_lower = self.encoder_upper
        self.lower_encoder_layer1 = self.upper_encoder_layer1
        self.lower_encoder_layer2 = self.upper_encoder_layer2
        self.lower_encoder_layer3 = self.upper_encoder_layer3
        # Ensembler: the common features of both encodings.
        self.common_encoder = nn.Sequential(ResNestLayer(256, 4, 256, is_first=False))
        # Common decoder (skip connections from both encoders).
        self.decoder_common_layer1 = ResNestLayer(64, 2, 768, avg_down=False, avd=False)
        self.decoder_common_layer2 = ResNestLayer(16, 2, 256, avg_down=False, avd=False)
        self.decoder_common_layer3 = ResNestLayer(4, 2, 96, avg_down=False, avd=False)
        self.decoder_common_layer4 = nn.Sequential(ResNestLayer(4, 2, 8, avg_down=False, avd=False))
        self.decoder_common_projection_layer = _projection()
        # Unique decoder, shared by both inputs (skip connections from that input's encoder).
        self.decoder_upper_layer1 = ResNestLayer(96, 4, 640, avg_down=False, avd=False)
        self.decoder_upper_layer2 = ResNestLayer(32, 4, 256, avg_down=False, avd=False)
        self.decoder_upper_layer3 = ResNestLayer(16, 6, 96, avg_down=False, avd=False)
        self.decoder_upper_layer4 = nn.Sequential(ResNestLayer(4, 6, 32, avg_down=False, avd=False))
        self.decoder_upper_projection_layer = _projection()
        self.decoder_lower_layer1 = self.decoder_upper_layer1
        self.decoder_lower_layer2 = self.decoder_upper_layer2
        self.decoder_lower_layer3 = self.decoder_upper_layer3
        self.decoder_lower_layer4 = self.decoder_upper_layer4
        self.decoder_lower_projection_layer = self.decoder_upper_projection_layer
        self.fusion_rule = _projection()
        self.onednn_fusion = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The authors' init: conv weights ~ N(0, 2 / (k*k*out_channels)), PyTorch's default biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / n))

    def set_onednn_fusion(self, enabled: bool) -> DeFusionNet:
        """Use oneDNN conv+ReLU / conv+add+ReLU fusions (fp32 x86 CPU inference only; bit-identical).

        Off by default so training, CUDA and export see plain ``conv2d`` graphs.
        """
        enabled = bool(enabled) and _onednn_fusion_available()
        self.onednn_fusion = enabled
        for m in self.modules():
            if isinstance(m, (Bottleneck, SplitAttentionConv2d)):
                m.onednn_fusion = enabled
        return self

    def _stem(self, img: torch.Tensor) -> torch.Tensor:
        """Full-resolution stage of the shared encoder, then the max pool: (B,3,H,W) → (B,32,H/2,W/2).

        Run per input (not as the batch of both): its 32-channel full-resolution maps are the largest
        tensors of the encoder, so this halves the encoder's peak memory at no cost in speed.
        """
        f0 = self.encoder_upper[2](_conv_relu(img, self.encoder_upper[0], self.onednn_fusion))  # (B, 32, H, W)
        return _max_pool_3x3_s2(f0) if not f0.requires_grad else self.maxpool_upper(f0)

    def encode(self, img1: torch.Tensor, img2: torch.Tensor) -> list[torch.Tensor]:
        """Both images through the shared encoder, batched from the half-resolution stage on.

        Returns:
            ``[f1, f2, f3]``, each (2N, C, H/2^k, W/2^k) with the upper (IR) images first:
            64 channels at 1/2, 128 at 1/4, 256 at 1/8.
        """
        pooled = torch.cat([self._stem(img1), self._stem(img2)])  # (2N, 32, H/2, W/2)
        f1 = self.upper_encoder_layer1(pooled)  # (2N, 64, H/2, W/2)
        f2 = self.upper_encoder_layer2(f1)  # (2N, 128, H/4, W/4)
        f3 = self.upper_encoder_layer3(f2)  # (2N, 256, H/8, W/8)
        return [f1, f2, f3]

    def decode(self, feats: list[torch.Tensor], size: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Common features, common decoder and unique decoder (both inputs batched down to quarter resolution).

        Args:
            feats: :meth:`encode`'s output.
            size: the input's ``[H, W]``.

        Returns:
            Embeddings ``(common, upper, lower)``, each (N, 16, H, W).
        """
        f1, f2, f3 = feats
        n = f3.shape[0] // 2
        s1, s2 = [f1.shape[-2], f1.shape[-1]], [f2.shape[-2], f2.shape[-1]]
        pair3 = _pair_channels(f3, n)  # (N, 512, H/8, W/8) = cat(f_u3, f_l3)
        common = self.common_encoder(pair3)  # (N, 1024, H/8, W/8)

        c = self.decoder_common_layer1(torch.cat([common, pair3], 1))  # (N, 256, H/8, W/8)
        c = self.decoder_common_layer2(torch.cat([_upsample_to(c, s2), _pair_channels(f2, n)], 1))  # (N, 64, H/4)
        c = self.decoder_common_layer3(torch.cat([_upsample_to(c, s1), _pair_channels(f1, n)], 1))  # (N, 16, H/2)
        c = self.decoder_common_layer4(_upsample_to(c, size))  # (N, 16, H, W)

        u = self.decoder_upper_layer1(torch.cat([torch.cat([common, common]), f3], 1))  # (2N, 384, H/8)
        u = self.decoder_upper_layer2(torch.cat([_upsample_to(u, s2), f2], 1))  # (2N, 128, H/4)
        # From here per input: the 192-channel half-resolution and the 64-channel full-resolution maps
        # are the largest tensors of the network, and batching them would double the peak memory.
        halves = []
        for part in (slice(0, n), slice(n, 2 * n)):
            h = self.decoder_upper_layer3(torch.cat([_upsample_to(u[part], s1), f1[part]], 1))  # (N, 64, H/2)
            halves.append(self.decoder_upper_layer4(_upsample_to(h, size)))  # (N, 16, H, W)
        return c, halves[0], halves[1]

    def _embeddings(self, img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.decode(self.encode(img1, img2), [img1.shape[-2], img1.shape[-1]])

    def fuse(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        """Only the fused image ``fusion_rule(upper + lower + common)``: (N, 3, H, W), ≥ 0, not clamped."""
        c, upper, lower = self._embeddings(img1, img2)
        emb = torch.add(upper, lower).add_(c)
        return _conv_relu(emb, self.fusion_rule[0], self.onednn_fusion)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The authors' four outputs ``(common, upper, lower, fusion)``, each (N, 3, H, W).

        ``img1`` is the "upper" input (infrared in the IR/VIS task), ``img2`` the "lower" (visible).
        The common part goes through the *upper* projection, as in the authors' test class.
        """
        c, upper, lower = self._embeddings(img1, img2)
        n = c.shape[0]
        fused = _conv_relu(torch.add(upper, lower).add_(c), self.fusion_rule[0], self.onednn_fusion)
        heads = _conv_relu(torch.cat([c, upper, lower]), self.decoder_upper_projection_layer[0], self.onednn_fusion)
        return heads[:n], heads[n : 2 * n], heads[2 * n :], fused

    def forward_train(self, img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four outputs as the authors' *training* class forms them: the common part through
        ``decoder_common_projection_layer`` (so that head is trained), the others as in :meth:`forward`."""
        c, upper, lower = self._embeddings(img1, img2)
        fused = self.fusion_rule(upper + lower + c)
        return (
            self.decoder_common_projection_layer(c),
            self.decoder_upper_projection_layer(upper),
            self.decoder_lower_projection_layer(lower),
            fused,
        )


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: DeFusionNet) -> dict[str, torch.Tensor]:
    """Map a loaded checkpoint onto :class:`DeFusionNet` keys.

    The released layout is native and returned unchanged. A ``module.`` prefix (a DataParallel save)
    is stripped. A file that holds only one alias of each shared module (e.g. a deduplicated export) gets
    the other alias filled from its twin, since both name the same tensor.
    """
    out = dict(state_dict)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    expected = model.state_dict()
    if set(out) == set(expected):
        return out
    twins = [
        ("encoder_lower.", "encoder_upper."),
        ("lower_encoder_layer", "upper_encoder_layer"),
        ("decoder_lower_layer", "decoder_upper_layer"),
        ("decoder_lower_projection_layer.", "decoder_upper_projection_layer."),
    ]
    for key in expected:
        if key in out:
            continue
        for a, b in twins:
            for src, dst in ((b, a), (a, b)):
                if key.startswith(dst) and src + key[len(dst) :] in out:
                    out[key] = out[src + key[len(dst) :]]
    return out


def load_defusion_state_dict(model: DeFusionNet, path: Path) -> None:
    """Load the authors' checkpoint (``{'state_dict': …}``), a bare state dict or a ``.safetensors``
    copy into ``model`` with ``strict=True``; a file with other keys or shapes raises
    :class:`~fusion_ros.errors.WeightsError` naming them."""
    from fusion_ros.weights import check_state_dict, load_state_dict

    state = checkpoint_filter_fn(load_state_dict(Path(path), unwrap=("state_dict",)), model)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------------
# The authors' pipeline
# --------------------------------------------------------------------------------------------------


def authors_grey(rgb: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert('L')`` of an RGB image in [0,1]: 8-bit quantise, then the fixed-point ITU-R 601
    ``(R*19595 + G*38470 + B*7471 + 0x8000) >> 16``; returns (B,1,H,W) grey in [0,1] on 1/255 steps."""
    q = torch.round(rgb.clamp(0, 1).double() * 255).to(torch.int64)
    grey = (q[:, 0:1] * 19595 + q[:, 1:2] * 38470 + q[:, 2:3] * 7471 + 0x8000) >> 16
    return grey.to(rgb.dtype) / 255


def run_pipeline(
    net: DeFusionNet,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    pad: int = 16,
    all_outputs: bool = False,
    channels_last: bool = False,
    fuse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The authors' inference: reflect-pad both (B,3,H,W) [0,1] inputs by ``pad``, run, crop.

    Args:
        net: the network (in eval mode).
        ir: (B,3,H,W) "upper" input; grey replicated to 3 channels in the IR/VIS task (1 channel is
            expanded here without a copy).
        vis: (B,3,H,W) "lower" input, same convention.
        pad: reflect padding on every side (the authors use 16); must be smaller than H and W.
        all_outputs: return ``(common, upper, lower, fused)`` instead of only the fused image.
        channels_last: run in NHWC (the net must have been converted with
            ``net.to(memory_format=torch.channels_last)``): faster, but oneDNN's NHWC kernels sum in
            another order, so outputs differ from the authors' in the last bits (about 3e-6 relative).
        fuse: the network call on the padded pair for the fused image (default ``net.fuse``; the
            TorchScript runtime passes its traced graph).

    Returns:
        Unclamped output(s) at (B,3,H,W): the authors clamp to [0,1] only when writing images.
    """
    h, w = ir.shape[-2], ir.shape[-1]
    if pad >= h or pad >= w:
        raise InputError(f"defusion needs images larger than its {pad}-pixel reflect padding, got {w}x{h}")
    if ir.shape[1] == 1:
        ir = ir.expand(-1, 3, -1, -1)
    if vis.shape[1] == 1:
        vis = vis.expand(-1, 3, -1, -1)
    if pad > 0:
        ir = F.pad(ir, (pad, pad, pad, pad), mode="reflect")
        vis = F.pad(vis, (pad, pad, pad, pad), mode="reflect")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ir, vis = ir.contiguous(memory_format=fmt), vis.contiguous(memory_format=fmt)
    if all_outputs:
        return tuple(o[..., pad : pad + h, pad : pad + w] for o in net(ir, vis))
    return (fuse or net.fuse)(ir, vis)[..., pad : pad + h, pad : pad + w]


# --------------------------------------------------------------------------------------------------
# Export (the real-time path: TorchScript or torch.export, fp16/bf16 on CUDA)
# --------------------------------------------------------------------------------------------------


class _FuseOnly(nn.Module):
    """Export wrapper: padded (B,3,H,W) pair → fused (B,3,H,W), plain ops only."""

    def __init__(self, net: DeFusionNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.net.fuse(ir, vis)


def export_torchscript(
    net: DeFusionNet, example_hw: tuple[int, int] = (64, 64), *, channels_last: bool = False
) -> torch.jit.ScriptModule:
    """A frozen TorchScript module of :meth:`DeFusionNet.fuse` on the net's device and dtype.

    Traced (the graph has no data-dependent control flow) with oneDNN fusion off and frozen; on CUDA also
    passed through ``optimize_for_inference`` (cuDNN conv+add+ReLU fusion). The odd-size nearest resize
    and the batch-1 attention branch are fixed at trace time, so the adapter traces once per padded frame
    size with batch 1 and runs frames one at a time.
    """
    p = next(net.parameters())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # Two distinct tensors: an aliased example pair would be traced as one input used twice.
    ex = tuple(torch.rand(1, 3, *example_hw, device=p.device, dtype=p.dtype).contiguous(memory_format=fmt) for _ in range(2))
    fusion = net.onednn_fusion
    net.set_onednn_fusion(False).eval()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(_FuseOnly(net), ex, check_trace=False)
    finally:
        net.set_onednn_fusion(fusion)
    frozen = torch.jit.freeze(traced.eval())
    # CUDA: cuDNN conv+add+ReLU fusions. CPU: keep the frozen graph, whose convs are eager's own.
    return torch.jit.optimize_for_inference(frozen) if p.device.type == "cuda" else frozen


def export_program(net: DeFusionNet, example_hw: tuple[int, int] = (64, 64)) -> torch.export.ExportedProgram:
    """``torch.export`` of :meth:`DeFusionNet.fuse` for the exact padded size ``example_hw``.

    The size is static: the odd-size nearest resize makes the graph size-dependent.
    """
    p = next(net.parameters())
    ex = (torch.rand(1, 3, *example_hw, device=p.device, dtype=p.dtype), torch.rand(1, 3, *example_hw, device=p.device, dtype=p.dtype))
    fusion = net.onednn_fusion
    net.set_onednn_fusion(False).eval()
    try:
        with torch.no_grad():
            return torch.export.export(_FuseOnly(net), ex)
    finally:
        net.set_onednn_fusion(fusion)


# --------------------------------------------------------------------------------------------------
# Method adapter
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeFusionOptions:
    """Options of the ``defusion`` method."""

    weights: str = option("", "checkpoint file overriding the manifest's defusion/DeFusion.pth (.pth/.pt/.safetensors)")
    pad: int = option(16, "reflect padding in pixels on every side before the network (authors: 16)", range=(0, 64))
    authors_preprocessing: bool = option(
        False,
        "reproduce the authors' exact IR/VIS path: PIL grey of the 8-bit visible, 8-bit IR, raw 3-channel "
        "output as RGB, truncating uint8 conversion (for comparison with their *_recover.png)",
    )
    tune_malloc: bool = option(
        True,
        "CPU only: keep freed feature maps in glibc's heap (process-wide mallopt) instead of re-faulting fresh "
        "pages every frame; much faster at 640x480, but the process keeps its peak memory",
    )
    runtime: str = option(
        "eager",
        "eager: PyTorch modules (exact, oneDNN-fused on x86 CPU); torchscript: frozen traced graph per frame "
        "size (the CUDA real-time path)",
        choices=("eager", "torchscript"),
    )
    memory_format: str = option(
        "auto",
        "auto: channels_last on CUDA, contiguous on CPU; contiguous: bit-identical to the authors' code on CPU; "
        "channels_last: ~1.3x faster on CPU, outputs differ from the authors' by ~3e-6 relative",
        choices=("auto", "contiguous", "channels_last"),
    )


@register_method
class DeFusion(FusionMethod):
    """The adapter: normalised IR + visible luminance in, fused luminance out (see the module docstring)."""

    name = "defusion"
    description = "DeFusion (ECCV 2022): self-supervised decomposition network, authors' weights"
    Options = DeFusionOptions
    color_space = "luma"
    weights_key = "defusion"
    cost = "~0.5 s / 256x256, ~2.3 s / 640x480 pair on 2 CPU cores (fp32, bit-exact)"
    seconds_per_pair = 2.3

    def __init__(
        self,
        options: Any,
        device: torch.device,
        dtype: torch.dtype,
        weights_dir: Path,
        *,
        random_init: bool = False,
    ) -> None:
        super().__init__(options, device, dtype, weights_dir, random_init=random_init)
        fmt = options.memory_format
        self.channels_last = fmt == "channels_last" or (fmt == "auto" and device.type == "cuda")
        if options.authors_preprocessing:
            # The authors' output is a 3-channel image whose channels differ: hand it out as RGB.
            self.color_space = "rgb"
        net = DeFusionNet()
        if not random_init:
            load_defusion_state_dict(net, self.weights_path(options, weights_dir))
        self.net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        cpu_fp32 = device.type == "cpu" and dtype == torch.float32 and options.runtime == "eager"
        self.net.set_onednn_fusion(cpu_fp32)
        if device.type == "cpu" and options.tune_malloc:
            tune_malloc()
        self._scripted: dict[tuple[int, int], torch.jit.ScriptModule] = {}

    @staticmethod
    def weights_path(options: Any, weights_dir: Path) -> Path:
        """The checkpoint used: the ``weights`` option, else the manifest's file under ``weights_dir``."""
        if options.weights:
            path = Path(options.weights).expanduser()
            if not path.is_file():
                raise WeightsError(f"defusion weights file not found: {path}")
            return path
        from fusion_ros.weights import manifest, missing_weights_message

        reason = missing_weights_message("defusion", weights_dir)
        if reason:
            raise WeightsError(reason)
        return weights_dir / manifest()["defusion"]["files"][0]

    def _fused(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """(B,1|3,H,W) pair → unclamped fused (B,3,H,W), through the selected runtime."""
        scripted = None if self.options.runtime == "eager" else self._scripted_fuse
        return run_pipeline(self.net, ir, vis, pad=self.options.pad, channels_last=self.channels_last, fuse=scripted)

    def _scripted_fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The frozen trace for this padded size (built on first use), one pair per call: the trace is
        specialised to one pair (its per-image attention loop is unrolled)."""
        size = (ir.shape[-2], ir.shape[-1])
        if size not in self._scripted:
            self._scripted[size] = export_torchscript(self.net, size, channels_last=self.channels_last)
        graph = self._scripted[size]
        return torch.cat([graph(ir[i : i + 1], vis[i : i + 1]) for i in range(ir.shape[0])])

    @torch.inference_mode()
    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        ir = ir.to(self.dtype)
        vis = vis.to(self.dtype)
        if self.options.authors_preprocessing:
            # 8-bit files read by PIL: IR 'L' as is, visible through PIL's fixed-point grey.
            ir_grey = torch.round(ir.clamp(0, 1) * 255) / 255
            vis_grey = authors_grey(vis) if vis.shape[1] == 3 else torch.round(vis.clamp(0, 1) * 255) / 255
            fused = self._fused(ir_grey, vis_grey).clamp(0, 1)
            # ToPILImage truncates (mul(255).byte()); +0.25 keeps the level under any later rounding.
            return ((torch.floor(fused.float() * 255) + 0.25) / 255).clamp(0, 1).to(self.dtype)
        fused = self._fused(ir, vis)  # (B, 3, H, W)
        r, g, b = fused[:, 0:1], fused[:, 1:2], fused[:, 2:3]
        return BT601[0] * r + BT601[1] * g + BT601[2] * b
