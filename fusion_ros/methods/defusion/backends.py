"""DeFusion as an ONNX graph, for the ``runtime`` option's ONNX backends and ``fusion-ros export``.

The graph is :meth:`DeFusionNet.fuse <fusion_ros.methods.defusion.network.DeFusionNet.fuse>` on one
reflect-padded pair, traced in export mode (plain ops, shape-generic resizes), so one file serves every
frame size (dynamic height and width). Padding, cropping and the luma conversion stay outside, in
:func:`~fusion_ros.methods.defusion.pipeline.run_pipeline` and the adapter, exactly as on the torch path.
The graph comes in two forms of the same function (:func:`export_form` picks one per runtime, for the
method's cache and for ``fusion-ros export`` alike): one OpenVINO runs fastest and a generic one (ONNX
Runtime, TensorRT).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fusion_ros.deploy.backends import OnnxRunner
from fusion_ros.deploy.export import export_onnx, state_digest
from fusion_ros.methods.defusion.network import DeFusionNet
from fusion_ros.methods.defusion.pipeline import FuseOnly

__all__ = ["OnnxFuse", "export_form", "export_fuse_graph", "graph_name"]

INPUTS = ("ir", "vis")
OUTPUTS = ("fused",)


def export_form(backend: str) -> str:
    """The export form (:data:`~fusion_ros.methods.defusion.network.EXPORT_FORMS`) that ``backend`` runs fastest."""
    return "openvino" if backend == "openvino" else "generic"


def graph_name(net: DeFusionNet, size: tuple[int, int] | None, form: str = "generic") -> str:
    """File name of the graph of ``net``'s weights for the padded ``(H, W)``, or any size (``None``), in ``form``."""
    prefix = "defusion-fuse" if form == "generic" else f"defusion-fuse-{form}"
    return f"{prefix}-{'dyn' if size is None else f'{size[1]}x{size[0]}'}-{state_digest(net)}.onnx"


def export_fuse_graph(
    net: DeFusionNet, path: Path, *, size: tuple[int, int] | None = None, options: Mapping[str, Any] | None = None, form: str = "generic"
) -> Path:
    """Export the fused-image graph of ``net`` to ``path``.

    Args:
        net: the network (fp32; any device: it is exported from a CPU copy of its weights).
        path: the ``.onnx`` file to write.
        size: padded ``(H, W)`` for a static graph; ``None``: dynamic height and width.
        options: the method's options, recorded in the metadata with the input contract.
        form: the graph's form (:meth:`DeFusionNet.set_export_mode`; :func:`export_form` picks it for a
            backend): ``generic`` for any runtime, ``openvino`` for OpenVINO.
    """
    cpu = DeFusionNet(net.config)
    cpu.load_state_dict({k: v.to("cpu", torch.float32) for k, v in net.state_dict().items()})
    cpu.eval().set_onednn_fusion(False).set_export_mode(True, form)
    h, w = size or (96, 128)
    g = torch.Generator().manual_seed(0)
    example = (torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g))
    pad = int((options or {}).get("pad", 16))
    metadata = {
        "method": "defusion",
        "graph": "fuse",
        "form": form,
        "options": dict(options or {}),
        "weights_digest": state_digest(net),
        "inputs": f"ir, vis: float32 (1,3,H,W) in [0,1], each a grey image replicated to 3 channels (IR is 'ir'), "
        f"reflect-padded by {pad} pixels on every side; H, W {'any (dynamic)' if size is None else f'= {h}, {w}'}",
        "outputs": f"fused: float32 (1,3,H,W) >= 0, unclamped; crop {pad} pixels from every side and clamp to [0,1]; "
        "the fusion_ros adapter takes its BT.601 luminance as the fused luma",
    }
    axes = None if size is not None else {n: {2: "height", 3: "width"} for n in (*INPUTS, *OUTPUTS)}
    return export_onnx(FuseOnly(cpu), example, path, input_names=INPUTS, output_names=OUTPUTS, dynamic_axes=axes, metadata=metadata)


class OnnxFuse:
    """``fuse(ir, vis)`` for :func:`~fusion_ros.methods.defusion.pipeline.run_pipeline` through an ONNX
    backend: padded (B,3,H,W) pairs in, (B,3,H,W) out, one pair per graph call (the graph has batch 1:
    the split-attention MLP runs per image, see the network).

    The dynamic graph is compiled per padded frame size (``OnnxRunner(static_shapes=True)``): a camera
    stream has one size, and the runtimes are faster on a graph with static shapes.
    """

    def __init__(self, path: Path, backend: str, device: torch.device, *, threads: int = 0, fp16: bool = False) -> None:
        self.runner = OnnxRunner(Path(path), backend, device, threads=threads, fp16=fp16, static_shapes=True)

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        outs = [self.runner(ir=ir[i : i + 1], vis=vis[i : i + 1])[0] for i in range(ir.shape[0])]
        return torch.cat(outs).to(ir.dtype)
