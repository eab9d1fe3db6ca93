"""DMFuse as ONNX graphs, for the ``runtime`` option's ONNX backends and ``fusion-ros export``.

Two graphs, as the model has two networks:

* ``unet``: one U-Net feature pass, noisy image x_t and its noise level γ in, the five decoder features out.
  Dynamic batch, height and width (multiples of 32, as the pipeline pads).
* ``head``: the fusion head on the concatenated features of both modalities, fused tanh image out. Static:
  the criss-cross attention runs in chunks of lines whose count depends on the size (that keeps its
  energies small), so there is one file per padded size, exported on first use and cached.

Noise drawing, q-sampling, padding, cropping and clamping stay outside the graphs, shared with the torch path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion_ros.deploy.backends import OnnxRunner
from fusion_ros.deploy.export import cache_dir, cached_graph, export_onnx, state_digest
from fusion_ros.methods.dmfuse.model import DMFuseModel

__all__ = ["HeadGraph", "OnnxDMFuse", "UNetFeatures", "export_head_graph", "export_unet_graph", "graph_name"]

_LEVELS = 5


class UNetFeatures(nn.Module):
    """Export wrapper: ``(x_t, level)`` → the decoder features the head reads, full resolution first."""

    def __init__(self, model: DMFuseModel) -> None:
        super().__init__()
        self.unet = model.unet
        self.feat_scales = model.feat_scales

    def forward(self, x_t: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.unet.decoder_features(x_t, level, self.feat_scales))


class HeadGraph(nn.Module):
    """Export wrapper: five IR then five visible feature levels → the head's tanh output (B,1,H,W)."""

    def __init__(self, model: DMFuseModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats[:_LEVELS], feats[_LEVELS:])


def graph_name(model: DMFuseModel, graph: str, size: tuple[int, int] | None) -> str:
    """File name of ``graph`` (``unet``/``head``) of ``model``'s weights for the padded ``(H, W)`` or any size."""
    part = model.unet if graph == "unet" else model.head
    return f"dmfuse-{graph}-{'dyn' if size is None else f'{size[1]}x{size[0]}'}-{state_digest(part)}.onnx"


def _cpu_fp32(model: DMFuseModel) -> DMFuseModel:
    """A CPU fp32 contiguous copy of ``model`` to export from (the graphs are fp32; the method's model is untouched)."""
    return copy.deepcopy(model).to("cpu", torch.float32).to(memory_format=torch.contiguous_format).eval()


def _unet_meta(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "method": "dmfuse",
        "graph": "unet",
        "options": dict(options or {}),
        "inputs": "x_t: float32 (B,3,H,W) = level*x + sqrt(1-level^2)*noise, x the grey image in [-1,1] replicated to 3 "
        "channels and padded at the bottom and right with +1 to multiples of 32 (H, W dynamic); level: float32 (B,), "
        "the noise level gamma drawn in [sqrt_alphas_cumprod[t], sqrt_alphas_cumprod[t-1]] of the 2000-step cosine "
        "schedule for t in 5, 50, 100",
        "outputs": "f0..f4: the U-Net decoder features fd[2,5,8,11,14], full resolution first",
    }


def export_unet_graph(model: DMFuseModel, path: Path, *, size: tuple[int, int] | None = None, options: Mapping[str, Any] | None = None) -> Path:
    """Export one U-Net feature pass of ``model`` to ``path`` (padded ``size`` static, or dynamic)."""
    model = _cpu_fp32(model)
    h, w = size or (64, 64)
    g = torch.Generator().manual_seed(0)
    args = (torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.full((1,), 0.99))
    names = [f"f{i}" for i in range(_LEVELS)]
    axes = None if size else {"x_t": {0: "batch", 2: "height", 3: "width"}, "level": {0: "batch"}} | {
        n: {0: "batch", 2: f"height_{i}", 3: f"width_{i}"} for i, n in enumerate(names)
    }
    meta = _unet_meta(options) | {"weights_digest": state_digest(model.unet)}
    return export_onnx(UNetFeatures(model), args, path, input_names=("x_t", "level"), output_names=names, dynamic_axes=axes, metadata=meta)


def export_head_graph(model: DMFuseModel, path: Path, size: tuple[int, int], *, options: Mapping[str, Any] | None = None) -> Path:
    """Export the fusion head of ``model`` to ``path`` for the padded ``(H, W)`` (static: see the module docstring)."""
    model = _cpu_fp32(model)
    h, w = size
    widths = [model.head.encoders()[lv].conv1.conv2d.in_channels for lv in range(_LEVELS)]
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.rand(1, c, h >> lv, w >> lv, generator=g) for _ in range(2) for lv, c in enumerate(widths))
    names = [f"{m}_{lv}" for m in ("ir", "vis") for lv in range(_LEVELS)]
    meta = {
        "method": "dmfuse",
        "graph": "head",
        "options": dict(options or {}),
        "weights_digest": state_digest(model.head),
        "inputs": f"ir_0..ir_4, vis_0..vis_4: float32 (1,C_l,{h}/2^l,{w}/2^l), level l of the U-Net graph's features "
        "for t = 5, 50, 100 concatenated on channels, per modality",
        "outputs": "fused: float32 (1,1,H,W) tanh output at the padded size; crop to the image and clamp to [0,1]",
    }
    return export_onnx(HeadGraph(model), feats, path, input_names=names, output_names=("fused",), metadata=meta)


class OnnxDMFuse:
    """:meth:`DMFuseModel.forward` through an ONNX backend: the dynamic U-Net graph for the six feature
    passes, and the head graph of each padded size (exported and compiled on first use)."""

    def __init__(self, model: DMFuseModel, backend: str, device: torch.device, weights_dir: Path | None, *,
                 options: Mapping[str, Any] | None = None, fp16: bool = False) -> None:
        self.model = model
        self.backend, self.device, self.fp16 = backend, device, fp16
        self.options = dict(options or {})
        self.cache = cache_dir(weights_dir)
        path = cached_graph(self.cache, graph_name(model, "unet", None), lambda p: export_unet_graph(model, p, options=self.options))
        self.unet = OnnxRunner(path, backend, device, fp16=fp16)
        self._heads: dict[tuple[int, int], OnnxRunner] = {}

    def head(self, size: tuple[int, int]) -> OnnxRunner:
        """The head graph's runner for the padded ``(H, W)``."""
        if size not in self._heads:
            path = cached_graph(
                self.cache, graph_name(self.model, "head", size), lambda p: export_head_graph(self.model, p, size, options=self.options)
            )
            self._heads[size] = OnnxRunner(path, self.backend, self.device, fp16=self.fp16)
        return self._heads[size]

    def features(self, x: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        """Concatenated features of one modality, as :meth:`DMFuseModel.features`. Each pass's outputs are
        copied into the concatenated buffers as soon as the pass ends, so besides the buffers only one
        pass's outputs are alive, not all passes' and their concatenation too (at 640×512 the three passes'
        outputs are 0.24 GB per modality)."""
        n = len(levels)
        feats: list[torch.Tensor] = []
        for i, (level, eps) in enumerate(zip(levels, noise)):
            outs = self.unet(x_t=self.model.q_sample(x, level, eps), level=level.float())
            if not feats:
                feats = [o.new_empty(o.shape[0], o.shape[1] * n, *o.shape[2:]) for o in outs]
            for buf, o in zip(feats, outs):
                buf[:, i * o.shape[1] : (i + 1) * o.shape[1]].copy_(o)
            del outs
        return feats

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Fused tanh output (B,1,H,W) of padded [-1,1] inputs, as :meth:`DMFuseModel.forward`."""
        head = self.head((ir.shape[-2], ir.shape[-1]))
        outs = []
        for b in range(ir.shape[0]):  # the head graph has batch 1
            one = slice(b, b + 1)
            feats: Sequence[torch.Tensor] = (
                self.features(ir[one], levels[0, :, one], noise[0, :, one])
                + self.features(vis[one], levels[1, :, one], noise[1, :, one])
            )
            names = [f"{m}_{lv}" for m in ("ir", "vis") for lv in range(_LEVELS)]
            outs.append(head(**dict(zip(names, feats)))[0])
        return torch.cat(outs)
