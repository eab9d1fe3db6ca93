"""Weight-free fusion methods: fast, no download, deterministic, any device.

``pyramid`` is a Laplacian-pyramid fusion tuned on the fusion metrics, in which the visible image
keeps its overall look while thermal detail and hot targets are brought in. Its rule:

- detail levels: per pixel, the coefficient of the camera whose band has more energy in the
  surrounding 5×5 window (local-energy choose-max), so edges of either camera survive at every
  scale and a structure is taken whole from one camera instead of pixel by pixel (per-pixel
  choose-max splices noise from both into edges). On VIFB's 21 pairs this raised Qabf from 0.645
  to 0.678, MI from 2.74 to 3.11 and VIF from 0.81 to 0.88 (``docs/RESULTS.md``, Fusion quality);
- base level: the visible base plus the thermal excess over it, weighted by a saliency that is
  high where the scene is hotter than its mean (``saliency``), so warm bodies stand out in a dark
  RGB scene without turning the whole image into a thermal picture.

``balanced`` is the package default, chosen by what an unchanged RGB detector finds at night:
person AP50 of YOLOX-Nano / NanoDet-m on 30 labelled LLVIP night pairs, flicker ratio on a real
30 fps sequence (M3SVD); full table, intervals and commands in ``docs/RESULTS.md`` ("The default
method"). Each step below, measured on top of the previous one (development harness; the package's
``fusion-ros evaluate --detector`` gives the final rule 0.885 / 0.720 against RGB 0.689 / 0.614,
CLAHE-enhanced RGB 0.721 / 0.667 and ``average`` 0.801 / 0.620):

- base level: an equal-weight average of the two bases (``ir_weight`` 0.5, not a tuned value).
  ``pyramid``'s visible-plus-hot-excess base keeps the dark RGB frame's coarse picture and gives
  AP50 0.762 / 0.602; the average base lets the thermal frame's coarse structure (warm bodies
  against a cool background) shape the picture equally: 0.820 / 0.687. A base weighted towards
  whichever camera deviates more from its mean did worse (0.743 / 0.587);
- detail bands: each coefficient is a mix of the two cameras' coefficients weighted by their local
  energy over 5×5 (``E_ir / (E_ir + E_vis)``): the camera with the structure dominates, a near tie
  mixes instead of flipping on noise (same AP50 as the hard choice within ±0.02);
- the two finest bands (periods of 2–8 pixels) are averaged, not chosen: they carry most of the
  sensor and compression noise that changes from frame to frame, and a detector working at 416
  pixels on a 640+ pixel frame hardly sees them. Choosing there made the fused video change as
  much as its busier input (flicker ratio 0.96 on M3SVD); averaging gives 0.60 at the same AP50
  (0.814 / 0.695);
- exposure: a night frame is dark (LLVIP visible luminance mean ≈ 0.13) and the detectors were
  trained on normally exposed photographs (mean ≈ 0.45, mid-grey). The base level alone is
  brightened by the gamma ≤ 1 that maps its mean to ``exposure`` (0.45); details are added after
  at unit gain, so noise and frame-to-frame change are not amplified: AP50 0.885 / 0.723, flicker
  ratio unchanged (0.60). The same gamma on the whole fused image gained only 0.01–0.02 and raised
  the flicker ratio by 25 % (0.96 → 1.21); a linear gain clipped lit areas and lost 0.1–0.2.

The result is not a knife-edge: with ``exposure`` 0.35 / 0.55, 4 / 6 levels or ``ir_weight`` 0.4 /
0.6 AP50 moves by at most 0.06 and stays above RGB, CLAHE-enhanced RGB and ``average`` on both. It loses to ``pyramid`` on the fusion metrics that
reward copying one source's grey levels and edge strengths (VIFB MI 1.9 vs 3.1, Qabf 0.48 vs
0.68): ``pyramid`` stays the metric-tuned method.

Both pyramids use 2×2 box reduction and bilinear expansion on a batch of the two images at once,
which keeps a 640×512 pair within a few milliseconds on two CPU cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.registry import register_method

__all__ = ["AverageFusion", "BalancedFusion", "MaxFusion", "PyramidFusion", "expose_base", "laplacian_pyramid", "reconstruct"]


def _down2(x: torch.Tensor) -> torch.Tensor:
    """2×2 box reduction; odd sizes are edge-replicated first, which equals ``avg_pool2d(ceil_mode=True)``.

    Row pairs, then column pairs: two adds instead of ``avg_pool2d``, whose CPU kernel is ~5× slower
    for this case (and 1.5× faster than adding the four strided quarters).
    """
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    rows = x[..., 0::2, :] + x[..., 1::2, :]  # whole rows: contiguous, vectorised
    return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)


def _up2(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear ×2 expansion cropped to ``size`` (the finer level's, which may be odd)."""
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return up[..., : size[0], : size[1]]


#: Half-side of the local-energy window that picks each detail coefficient (5×5).
_SELECT_RADIUS = 2


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the (2r+1)×(2r+1) window around each pixel (zeros outside), by separable shifted adds."""
    h, w = x.shape[-2:]
    p = F.pad(x, (radius, radius, radius, radius))
    rows = p[..., :, 0:w] + p[..., :, 1 : 1 + w]
    for i in range(2, 2 * radius + 1):
        rows += p[..., :, i : i + w]
    out = rows[..., 0:h, :] + rows[..., 1 : 1 + h, :]
    for i in range(2, 2 * radius + 1):
        out += rows[..., i : i + h, :]
    return out


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid of (B,C,H,W): ``levels - 1`` detail bands (finest first) then the base.

    The number of levels is capped so the coarsest band is at least 1 pixel on its short side.
    """
    bands = []
    cur = x
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 2:
            break
        down = _down2(cur)
        bands.append(cur - _up2(down, cur.shape[-2:]))
        cur = down
    bands.append(cur)
    return bands


def reconstruct(bands: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid`."""
    cur = bands[-1]
    for detail in reversed(bands[:-1]):
        cur = _up2(cur, detail.shape[-2:]) + detail
    return cur


@dataclass(frozen=True)
class PyramidOptions:
    levels: int = option(5, "pyramid levels (detail bands + base)", range=(1, 10))
    saliency: float = option(1.0, "weight of thermal hot-spot saliency in the base level (0 = visible base only)", range=(0.0, 4.0))
    detail_gain: float = option(1.0, "gain on the fused detail bands", range=(0.0, 4.0))


@register_method
class PyramidFusion(FusionMethod):
    """Laplacian pyramid, local-energy choose-max details, saliency-weighted base (metric-tuned)."""

    name = "pyramid"
    description = "Laplacian pyramid, local-energy detail choice + thermal-saliency base; tuned on fusion metrics (Qabf, MI, VIF)"
    Options = PyramidOptions
    cost = "~5 ms / 640x512 pair on 2 CPU cores (colour and thermal conversion included)"
    seconds_per_pair = 0.0050

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        opts: PyramidOptions = self.options
        batch = ir.shape[0]
        bands = laplacian_pyramid(torch.cat([ir, vis], 0), opts.levels)
        fused = []
        for band in bands[:-1]:
            d_ir, d_vis = band[:batch], band[batch:]
            # Σ_window d_ir² > Σ_window d_vis²  ⇔  Σ_window (d_ir² − d_vis²) > 0: one box sum, not two.
            energy = _box_sum((d_ir - d_vis).mul_(d_ir + d_vis), _SELECT_RADIUS)
            # A 0/1 float mask and an exact lerp: ``torch.where`` and bool tensors are ~4× slower on CPU.
            take_ir = torch.gt(energy, 0.0, out=energy)
            detail = torch.lerp(d_vis, d_ir, take_ir)
            fused.append(detail.mul_(opts.detail_gain) if opts.detail_gain != 1.0 else detail)
        b_ir, b_vis = bands[-1][:batch], bands[-1][batch:]
        # Saliency: how much hotter than the frame's mean each base pixel is, in [0,1].
        mean = b_ir.mean(dim=(-2, -1), keepdim=True)
        weight = ((b_ir - mean) * (2.0 * opts.saliency)).clamp_(0.0, 1.0)
        fused.append(b_vis + weight * (b_ir - b_vis).clamp_(min=0.0))
        return reconstruct(fused)


@dataclass(frozen=True)
class BalancedOptions:
    levels: int = option(5, "pyramid levels (detail bands + base)", range=(1, 10))
    ir_weight: float = option(0.5, "thermal share of the base level (0.5 = equal)", range=(0.0, 1.0))
    fine_bands: int = option(2, "finest detail bands averaged instead of energy-weighted (they carry frame-to-frame noise)", range=(0, 9))
    exposure: float = option(0.45, "mean the base level is brightened towards by a gamma <= 1 (mid-grey; 0 = off)", range=(0.0, 0.99))


#: Keeps the energy weight finite where both bands are flat; far below one grey level's energy
#: (25 · (1/255)² ≈ 4e-4) and still representable in fp16.
_ENERGY_EPS = 1e-6


def expose_base(base: torch.Tensor, target: float) -> torch.Tensor:
    """Brighten a (B,1,h,w) base level in [0,1] with the gamma that maps its mean to ``target``;
    frames already at or above ``target`` are left as they are (gamma is capped at 1)."""
    mean = base.mean(dim=(-2, -1), keepdim=True).clamp_(1e-3, 0.999)
    gamma = mean.log_().reciprocal_().mul_(math.log(target)).clamp_(max=1.0)
    return base.clamp(min=0.0).pow_(gamma)


@register_method
class BalancedFusion(FusionMethod):
    """Laplacian pyramid for detectors: exposed equal-weight base, energy-weighted coarse details,
    averaged fine bands (the default)."""

    name = "balanced"
    description = "Laplacian pyramid: equal-weight base brought to mid-grey, energy-weighted details, averaged fine bands; made for detectors (default, weight-free)"
    Options = BalancedOptions
    cost = "~7 ms / 640x512 pair on 2 CPU cores, ~10 ms on 1 thread (colour and thermal conversion included)"
    #: Measured median with 2 threads, the machine not idle (`fusion-ros bench`, docs/RESULTS.md "Speed").
    seconds_per_pair = 0.0069

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        opts: BalancedOptions = self.options
        batch = ir.shape[0]
        bands = laplacian_pyramid(torch.cat([ir, vis], 0), opts.levels)
        fused = []
        for i, band in enumerate(bands[:-1]):
            d_ir, d_vis = band[:batch], band[batch:]
            if i < opts.fine_bands:
                fused.append(torch.lerp(d_vis, d_ir, 0.5))
                continue
            energy = _box_sum(band * band, _SELECT_RADIUS)  # both cameras in one call
            e_ir = energy[:batch]
            weight = e_ir.div_(energy[batch:].add_(e_ir).add_(_ENERGY_EPS))
            fused.append(torch.lerp(d_vis, d_ir, weight))
        base = torch.lerp(bands[-1][batch:], bands[-1][:batch], opts.ir_weight)
        fused.append(expose_base(base, opts.exposure) if opts.exposure > 0.0 else base)
        return reconstruct(fused)


@register_method
class AverageFusion(FusionMethod):
    """Per-pixel weighted average (baseline)."""

    name = "average"
    description = "per-pixel weighted average of thermal and visible luminance (baseline)"

    @dataclass(frozen=True)
    class Options:
        ir_weight: float = option(0.5, "weight of the thermal image", range=(0.0, 1.0))

    cost = "~3 ms / 640x512 pair on 2 CPU cores (colour and thermal conversion included)"
    seconds_per_pair = 0.0025

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return torch.lerp(vis, ir, self.options.ir_weight)


@register_method
class MaxFusion(FusionMethod):
    """Per-pixel maximum (baseline): anything bright in either camera shows."""

    name = "max"
    description = "per-pixel maximum of thermal and visible luminance (baseline)"
    cost = "~3 ms / 640x512 pair on 2 CPU cores (colour and thermal conversion included)"
    seconds_per_pair = 0.0030

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return torch.maximum(ir, vis)
