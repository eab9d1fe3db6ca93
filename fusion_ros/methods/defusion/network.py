"""DeFusion's network: the authors' test-time ``UCTestSharedNetPro`` with the released ``state_dict`` layout.

ResNeSt split-attention blocks without normalisation, a Siamese encoder, a common encoder, a common and
a shared unique decoder, and ``fusion_rule``. The released network is :data:`CONFIGS` ``["released"]``;
``"test_tiny"`` is the same graph with half the channels and one block per stage, for unit tests.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONFIGS",
    "Bottleneck",
    "DeFusionConfig",
    "DeFusionNet",
    "EXPORT_FORMS",
    "ResNestLayer",
    "SPLIT_FREE_MAX_CHANNELS",
    "SplitAttentionConv2d",
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


#: Widest split-attention layer (channels per split) that OpenVINO's export form computes without a channel split.
SPLIT_FREE_MAX_CHANNELS = 16


#: Forms of the export graph (:meth:`DeFusionNet.set_export_mode`): each the fastest for its runtimes.
EXPORT_FORMS = ("generic", "openvino")


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
        #: OpenVINO's export form (set by :meth:`DeFusionNet.set_export_mode`): narrow layers without a channel split.
        self.split_free = False

    def _splits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two radix splits ``relu(grouped conv(x))``, each (B, C, H, W).

        With ``split_free``, for at most :data:`SPLIT_FREE_MAX_CHANNELS` channels, each split is its own dense
        conv over all input channels, the other group's weights zero (``x·0`` adds ``+0.0``: the same sums
        up to float order). OpenVINO keeps such narrow maps in NHWC, where slicing channels off one conv's
        output is a copy in a reference kernel (~9 % of DeFusion's time at 640x512), and the extra
        multiply-adds are cheap at these widths; ONNX Runtime is slower with it (docs/RESULTS.md, Deployment).
        """
        w = self.conv.weight
        c = w.shape[0] // 2
        if self.split_free and c <= SPLIT_FREE_MAX_CHANNELS:
            zeros = torch.zeros_like(w[:c])
            s0 = F.relu(F.conv2d(x, torch.cat([w[:c], zeros], 1), None, 1, 1))
            return s0, F.relu(F.conv2d(x, torch.cat([zeros, w[c:]], 1), None, 1, 1))
        x = _conv_relu(x, self.conv, self.onednn_fusion)  # (B, 2C, H, W)
        return x[:, :c], x[:, c:]

    def _attention(self, gap: torch.Tensor) -> torch.Tensor:
        """Split weights for one image: (1, C, 1, 1) pooled sum → (1, 2C, 1, 1), radix-major."""
        b = gap.shape[0]
        att = self.fc2(F.relu_(self.fc1(gap)))
        # rSoftMax: (B, 2C) viewed as (B, cardinality=1, radix=2, C), softmax over the radix axis.
        att = F.softmax(att.view(b, 1, 2, -1).transpose(1, 2), dim=1)
        return att.reshape(b, -1).view(b, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = self._splits(x)
        c = s0.shape[1]
        gap = F.adaptive_avg_pool2d(s0 + s1, 1)  # (B, C, 1, 1)
        if gap.shape[0] == 1:
            att = self._attention(gap)
        else:  # per image: ATen's batch-1 GEMM for the MLP rounds differently from the batched one
            att = torch.cat([self._attention(gap[i : i + 1]) for i in range(gap.shape[0])])
        if s0.requires_grad:  # training: keep the ReLU output intact for autograd
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
        return self.finish(_conv_relu(x, self.conv1, self.onednn_fusion), self.downsample(x))

    def finish(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The block from ``out = relu(conv1(x))`` and ``shortcut = downsample(x)`` on: split-attention conv,
        [avg pool], then ``relu(conv3(·) + shortcut)``."""
        out = self.avd_layer(self.conv2(out))
        return _conv_add_relu(out, shortcut, self.conv3, self.onednn_fusion)


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


def _projection(channels: int = 16) -> nn.Sequential:
    """A 16→3 3x3 conv + ReLU head (``*_projection_layer`` and ``fusion_rule``)."""
    return nn.Sequential(nn.Conv2d(channels, 3, 3, 1, 1), nn.ReLU(inplace=True))


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


def _upsample_to(x: torch.Tensor, size: list[int], resize: str = "auto") -> torch.Tensor:
    """``nn.Upsample(scale_factor=2, mode='bilinear')`` then the authors' nearest resize to the skip's ``[H, W]``.

    ``resize``: ``"auto"`` skips the nearest resize where it is a no-op (the skip has an even size);
    ``"always"`` applies it (a traced graph then serves every size); ``"crop"`` crops to ``[H, W]`` instead,
    also for every size. The crop equals the nearest resize here: the upsampled side is ``2·ceil(s/2)``,
    so ``s`` or ``s + 1``, and nearest from ``s + 1`` to ``s`` reads source ``floor(i·(s+1)/s) = i`` for
    every ``i < s`` (PyTorch computes that product in float32, exact to below the ``1/s`` margin for sides
    under ~4,000 pixels).
    """
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    if resize == "crop":
        return x[..., : size[0], : size[1]]
    if resize == "always" or x.shape[-2] != size[0] or x.shape[-1] != size[1]:
        x = F.interpolate(x, size=size, mode="nearest")
    return x


def _pair_channels(f: torch.Tensor, n: int) -> torch.Tensor:
    """(2N, C, H, W) batch [upper; lower] → (N, 2C, H, W) ``cat((upper, lower), 1)``; free when N is 1."""
    c, h, w = f.shape[1], f.shape[2], f.shape[3]
    return f.view(2, n, c, h, w).transpose(0, 1).reshape(n, 2 * c, h, w)


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeFusionConfig:
    """Size of a :class:`DeFusionNet`: the released widths divided by ``width_div``, and at most
    ``max_blocks`` bottlenecks per stage (``0``: the released counts). Only the released config
    matches the authors' checkpoint."""

    width_div: int = 1
    max_blocks: int = 0


#: ``released``: the authors' network (7,874,473 parameters). ``test_tiny``: unit tests and smoke runs.
CONFIGS: dict[str, DeFusionConfig] = {
    "released": DeFusionConfig(),
    "test_tiny": DeFusionConfig(width_div=2, max_blocks=1),
}


class DeFusionNet(nn.Module):
    """The authors' test-time ``UCTestSharedNetPro``, with the released ``state_dict`` layout.

    Inputs are 3-channel images in [0,1] of any size (already padded by the caller, see
    :func:`run_pipeline`). Attribute names equal the checkpoint keys; ``encoder_lower``,
    ``lower_encoder_layer*``, ``decoder_lower_layer*`` and ``decoder_lower_projection_layer`` are the
    same module objects as their "upper" twins, so their keys appear twice, as in the released file.
    """

    def __init__(self, config: DeFusionConfig = CONFIGS["released"]) -> None:
        super().__init__()
        self.config = config

        def layer(planes: int, blocks: int, stem: int, **kw: bool | int) -> ResNestLayer:
            k = config.width_div
            return ResNestLayer(planes // k, min(blocks, config.max_blocks or blocks), stem // k, **kw)  # type: ignore[arg-type]

        emb = 16 // config.width_div
        # Shared (Siamese) encoder: full res → H/2 → H/4 → H/8.
        self.encoder_upper = nn.Sequential(nn.Conv2d(3, emb, 3, 1, 1), nn.ReLU(inplace=True), layer(8, 6, 8))
        self.maxpool_upper = nn.MaxPool2d(3, 2, 1)
        self.upper_encoder_layer1 = layer(16, 6, 16, is_first=False)
        self.upper_encoder_layer2 = layer(32, 4, 32, stride=2)
        self.upper_encoder_layer3 = layer(64, 4, 64, stride=2)
        self.encoder_lower = self.encoder_upper
        self.lower_encoder_layer1 = self.upper_encoder_layer1
        self.lower_encoder_layer2 = self.upper_encoder_layer2
        self.lower_encoder_layer3 = self.upper_encoder_layer3
        # Ensembler: the common features of both encodings.
        self.common_encoder = nn.Sequential(layer(256, 4, 256, is_first=False))
        # Common decoder (skip connections from both encoders).
        self.decoder_common_layer1 = layer(64, 2, 768, avg_down=False, avd=False)
        self.decoder_common_layer2 = layer(16, 2, 256, avg_down=False, avd=False)
        self.decoder_common_layer3 = layer(4, 2, 96, avg_down=False, avd=False)
        self.decoder_common_layer4 = nn.Sequential(layer(4, 2, 8, avg_down=False, avd=False))
        self.decoder_common_projection_layer = _projection(emb)
        # Unique decoder, shared by both inputs (skip connections from that input's encoder).
        self.decoder_upper_layer1 = layer(96, 4, 640, avg_down=False, avd=False)
        self.decoder_upper_layer2 = layer(32, 4, 256, avg_down=False, avd=False)
        self.decoder_upper_layer3 = layer(16, 6, 96, avg_down=False, avd=False)
        self.decoder_upper_layer4 = nn.Sequential(layer(4, 6, 32, avg_down=False, avd=False))
        self.decoder_upper_projection_layer = _projection(emb)
        self.decoder_lower_layer1 = self.decoder_upper_layer1
        self.decoder_lower_layer2 = self.decoder_upper_layer2
        self.decoder_lower_layer3 = self.decoder_upper_layer3
        self.decoder_lower_layer4 = self.decoder_upper_layer4
        self.decoder_lower_projection_layer = self.decoder_upper_projection_layer
        self.fusion_rule = _projection(emb)
        self.onednn_fusion = False
        #: Export mode: only ops every ONNX runtime has and shape-generic resizes (see :meth:`set_export_mode`).
        self.export_mode = False
        self.export_form = "generic"
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The authors' init: conv weights ~ N(0, 2 / (k*k*out_channels)); biases ~ U(±1/√fan_in) as
        PyTorch's default. Pass ``generator`` to draw from it instead of the global RNG (tests)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / n), generator=generator)
                if m.bias is not None and generator is not None:
                    bound = 1.0 / math.sqrt(m.weight[0].numel())
                    m.bias.uniform_(-bound, bound, generator=generator)

    def set_export_mode(self, enabled: bool, form: str = "generic") -> DeFusionNet:
        """Trace-friendly forward for ONNX export (one graph for every input size), the same function up to
        float rounding: plain ``MaxPool2d`` instead of the strided-view max (whose slice bounds a tracer
        freezes), after each ×2 upsampling the nearest resize always applied (a no-op on even sizes), and
        the 1x1 convs after an upsampling moved before it (:meth:`_upsampled_layer`).

        ``form``: :data:`EXPORT_FORMS`. ``"openvino"`` replaces that nearest resize with a crop and computes
        narrow split-attention layers without a channel split (:meth:`SplitAttentionConv2d._splits`):
        faster in OpenVINO, slower in ONNX Runtime (docs/RESULTS.md, Deployment).
        """
        if form not in EXPORT_FORMS:
            raise ValueError(f"unknown export form {form!r}; valid: {', '.join(EXPORT_FORMS)}")
        self.export_mode = bool(enabled)
        self.export_form = form
        for m in self.modules():
            if isinstance(m, SplitAttentionConv2d):
                m.split_free = self.export_mode and form == "openvino"
        return self

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
        return self.maxpool_upper(f0) if f0.requires_grad or self.export_mode else _max_pool_3x3_s2(f0)

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
        ex = ("crop" if self.export_form == "openvino" else "always") if self.export_mode else "auto"
        s1, s2 = [f1.shape[-2], f1.shape[-1]], [f2.shape[-2], f2.shape[-1]]
        pair3 = _pair_channels(f3, n)  # (N, 512, H/8, W/8) = cat(f_u3, f_l3)
        common = self.common_encoder(pair3)  # (N, 1024, H/8, W/8)

        c = self.decoder_common_layer1(torch.cat([common, pair3], 1))  # (N, 256, H/8, W/8)
        c = self._upsampled_layer(self.decoder_common_layer2, c, _pair_channels(f2, n), s2, ex)  # (N, 64, H/4)
        c = self._upsampled_layer(self.decoder_common_layer3, c, _pair_channels(f1, n), s1, ex)  # (N, 16, H/2)
        c = self.decoder_common_layer4(_upsample_to(c, size, ex))  # (N, 16, H, W); identity shortcut

        u = self.decoder_upper_layer1(torch.cat([torch.cat([common, common]), f3], 1))  # (2N, 384, H/8)
        u = self._upsampled_layer(self.decoder_upper_layer2, u, f2, s2, ex)  # (2N, 128, H/4)
        # From here per input: the 192-channel half-resolution and the 64-channel full-resolution maps
        # are the largest tensors of the network, and batching them would double the peak memory.
        halves = []
        for part in (slice(0, n), slice(n, 2 * n)):
            h = self._upsampled_layer(self.decoder_upper_layer3, u[part], f1[part], s1, ex)  # (N, 64, H/2)
            halves.append(self._upsampled_layer(self.decoder_upper_layer4[0], h, None, size, ex))  # (N, 16, H, W)
        return c, halves[0], halves[1]

    def _upsampled_layer(
        self, layer: ResNestLayer, low: torch.Tensor, skip: torch.Tensor | None, size: list[int], resize: str
    ) -> torch.Tensor:
        """``layer(cat([_upsample_to(low, size), skip], 1))`` (no concatenation without ``skip``), for a layer
        whose first block starts with 1x1 convs only (``conv1`` and a stride-1 conv shortcut, no biases).

        In export mode those two 1x1 convs run before the upsampling, on ``low`` and ``skip`` apart, and their
        parts are added: a 1x1 conv mixes channels per pixel, the bilinear ×2 and the nearest resize or crop
        mix pixels per channel, so they commute, and a conv of a concatenation is the sum of its parts'
        convs. The same function up to float rounding, but the wide upsampled maps and their concatenation
        are never built and the convs on ``low`` run on a quarter of the pixels (docs/RESULTS.md, Deployment).
        """
        if not self.export_mode:
            x = _upsample_to(low, size, resize)
            return layer(x if skip is None else torch.cat([x, skip], 1))
        first = layer.layer[0]
        c = low.shape[1]

        def conv1x1(conv: nn.Conv2d) -> torch.Tensor:
            y = _upsample_to(F.conv2d(low, conv.weight[:, :c]), size, resize)
            return y if skip is None else y + F.conv2d(skip, conv.weight[:, c:])

        return layer.layer[1:](first.finish(F.relu(conv1x1(first.conv1)), conv1x1(first.downsample[0])))

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

