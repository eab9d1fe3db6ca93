"""DeFusion inference as the authors ran it (reflect pad, forward, crop), and its TorchScript/``torch.export``
graphs (the CUDA real-time path)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fusion_ros.errors import InputError
from fusion_ros.methods.defusion.network import DeFusionNet

__all__ = ["FuseOnly", "authors_grey", "export_program", "export_torchscript", "run_pipeline"]


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
# TorchScript / torch.export graphs (the CUDA real-time path, fp16/bf16); ONNX is in ``backends``
# --------------------------------------------------------------------------------------------------


class FuseOnly(nn.Module):
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
    g = torch.Generator(device=p.device).manual_seed(0)
    ex = tuple(torch.rand(1, 3, *example_hw, generator=g, device=p.device, dtype=p.dtype).contiguous(memory_format=fmt) for _ in range(2))
    fusion = net.onednn_fusion
    net.set_onednn_fusion(False).eval()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(FuseOnly(net), ex, check_trace=False)
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
    g = torch.Generator(device=p.device).manual_seed(0)
    ex = tuple(torch.rand(1, 3, *example_hw, generator=g, device=p.device, dtype=p.dtype) for _ in range(2))
    fusion = net.onednn_fusion
    net.set_onednn_fusion(False).eval()
    try:
        with torch.no_grad():
            return torch.export.export(FuseOnly(net), ex)
    finally:
        net.set_onednn_fusion(fusion)
