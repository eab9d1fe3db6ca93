"""The ``defusion`` method: DeFusion behind the :class:`~fusion_ros.methods.base.FusionMethod` contract
(normalised IR + visible luminance in, fused luminance out; see the package docstring for the colour
handling and the authors' preprocessing option)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fusion_ros.color import luma
from fusion_ros.deploy.backends import BACKENDS, resolve_backend
from fusion_ros.deploy.export import cache_dir, cached_graph
from fusion_ros.errors import WeightsError
from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.methods.defusion.backends import OnnxFuse, export_form, export_fuse_graph, graph_name
from fusion_ros.methods.defusion.loaders import load_defusion_state_dict
from fusion_ros.methods.defusion.network import CONFIGS, DeFusionNet
from fusion_ros.methods.defusion.pipeline import authors_grey, export_torchscript, run_pipeline
from fusion_ros.methods.weight_init import generator_for
from fusion_ros.registry import register_method
from fusion_ros.runtime import tune_malloc

__all__ = ["DeFusion", "DeFusionOptions"]


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
        "torch",
        "torch: PyTorch modules (exact, oneDNN-fused on x86 CPU); torchscript: frozen traced graph per frame size "
        "(the CUDA real-time path); onnxruntime / openvino / tensorrt: the ONNX graph (exported on first use, "
        "cached next to the weights) in that runtime, outputs within 1e-4 of torch's relative to their peak; "
        "auto: the best available for the device",
        choices=("torch", "torchscript", *BACKENDS[1:]),
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
    cost = "~0.5 s / 256x256, ~2.3 s / 640x480 pair on 2 CPU cores (fp32, bit-exact); faster with runtime=openvino"
    seconds_per_pair = 2.3

    def __init__(
        self,
        options: Any,
        device: torch.device,
        dtype: torch.dtype,
        weights_dir: Path,
        *,
        random_init: bool = False,
        config: str = "released",
        seed: int = 0,
    ) -> None:
        """See :class:`FusionMethod`; ``config`` (``"test_tiny"``) and ``seed`` (of the weights' explicit
        generator) only matter with ``random_init``."""
        super().__init__(options, device, dtype, weights_dir, random_init=random_init)
        fmt = options.memory_format
        self.channels_last = fmt == "channels_last" or (fmt == "auto" and device.type == "cuda")
        if options.authors_preprocessing:
            # The authors' output is a 3-channel image whose channels differ: hand it out as RGB.
            self.color_space = "rgb"
        net = DeFusionNet(CONFIGS[config])
        if random_init:
            net.reset_parameters(generator_for(seed))
        else:
            load_defusion_state_dict(net, self.weights_path(options, weights_dir))
        self.net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        cpu_fp32 = device.type == "cpu" and dtype == torch.float32 and options.runtime == "torch"
        self.net.set_onednn_fusion(cpu_fp32)
        if device.type == "cpu" and options.tune_malloc:
            tune_malloc()
        self._scripted: dict[tuple[int, int], torch.jit.ScriptModule] = {}
        #: The runtime that runs: ``torch``, ``torchscript`` or one of the ONNX backends (``auto`` resolved).
        self.backend = options.runtime if options.runtime == "torchscript" else resolve_backend(options.runtime, device)
        self._onnx: OnnxFuse | None = None
        if self.backend not in ("torch", "torchscript"):
            form = export_form(self.backend)
            path = cached_graph(
                cache_dir(weights_dir), graph_name(self.net, None, form), lambda p: export_fuse_graph(self.net, p, options=asdict(options), form=form)
            )
            self._onnx = OnnxFuse(path, self.backend, device, fp16=dtype == torch.float16)

    def export_onnx(self, directory: Path, size: tuple[int, int] | None) -> list[Path]:
        """Write the fused-image graph to ``directory``: for frames of ``(H, W)`` (padded inside the file's
        contract by ``pad``), or for any size with ``None``, in the form the method's runtime runs fastest
        (``runtime=openvino``: OpenVINO's; otherwise the generic form). Returns the written files."""
        padded = None if size is None else (size[0] + 2 * self.options.pad, size[1] + 2 * self.options.pad)
        form = export_form(self.backend)
        path = Path(directory) / graph_name(self.net, padded, form)
        return [export_fuse_graph(self.net, path, size=padded, options=asdict(self.options), form=form)]

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
        fuse = {"torch": None, "torchscript": self._scripted_fuse}.get(self.backend, self._onnx)
        return run_pipeline(self.net, ir, vis, pad=self.options.pad, channels_last=self.channels_last, fuse=fuse)

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
        return luma(self._fused(ir, vis))  # (B, 3, H, W) → (B, 1, H, W)
