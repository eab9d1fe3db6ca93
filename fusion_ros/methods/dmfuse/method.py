"""The ``dmfuse`` method: DMFuse behind the :class:`~fusion_ros.methods.base.FusionMethod` contract
(luminance in [0,1] in, fused luminance out; padding, seeded noise and the authors' uint8 round trip here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fusion_ros.deploy.backends import BACKENDS, resolve_backend
from fusion_ros.errors import ConfigError, InputError
from fusion_ros.methods.base import FusionMethod, option
from fusion_ros.methods.dmfuse.backends import OnnxDMFuse, export_head_graph, export_unet_graph, graph_name
from fusion_ros.methods.dmfuse.head import DMFuseHead
from fusion_ros.methods.dmfuse.loaders import head_state_from_checkpoint, load_strict, read_checkpoint, split_checkpoint, unet_state_from_checkpoint
from fusion_ros.methods.dmfuse.model import DMFuseModel
from fusion_ros.methods.dmfuse.schedule import PAD_MULTIPLE
from fusion_ros.methods.dmfuse.unet import CONFIGS, SR3UNet
from fusion_ros.methods.weight_init import generator_for, init_from_generator
from fusion_ros.registry import register_method

__all__ = ["DMFuse", "DMFuseOptions"]


@dataclass(frozen=True)
class DMFuseOptions:
    """Options of the ``dmfuse`` method."""

    seed: int = option(
        0, "noise seed, re-applied every frame so output is deterministic; -1 = fresh noise per frame (the authors' behaviour)",
        range=(-1, 2**31 - 1),
    )
    unet_batch: str = option(
        "auto", "run the 6 U-Net passes as one batch: auto (CUDA yes; CPU no: ~6x the memory, see docs/RESULTS.md), on, off",
        choices=("auto", "on", "off"),
    )
    channels_last: bool = option(True, "CPU: run the networks in NHWC memory layout (faster with oneDNN; no effect on CUDA)")
    authors_io: bool = option(False, "reproduce the authors' uint8 input quantisation and output rounding exactly (PNG parity)")
    weights: str = option(
        "", "checkpoint file: the head (model.model), the DDPM U-Net (ddpm_gen.pth) or both; the other part from the weights folder"
    )
    unet_weights: str = option("", "U-Net checkpoint file (default: the manifest's, in the weights folder)")
    runtime: str = option(
        "torch",
        "torch: PyTorch modules (exact); onnxruntime / openvino / tensorrt: the ONNX U-Net graph and the head graph "
        "of each padded size (exported on first use, cached next to the weights) in that runtime, outputs within "
        "1e-4 of torch's relative to their peak; auto: the best available for the device",
        choices=BACKENDS,
    )


@register_method
class DMFuse(FusionMethod):
    """DMFuse with the authors' frozen quarter-width diffusion U-Net and released fusion head."""

    name = "dmfuse"
    description = "DMFuse (CJIF 2024): diffusion U-Net features (t=5/50/100) + criss-cross cross-attention head"
    Options = DMFuseOptions
    color_space = "luma"
    weights_key = "dmfuse"
    cost = "~15 s, 1.7 GB peak / 640x512 pair on 2 CPU cores (6 U-Net passes + head); GPU advised"
    seconds_per_pair = 15.4

    #: Files inside the weights folder (as in ``weights/manifest.toml``).
    HEAD_FILE = "dmfuse/model.model"
    UNET_FILE = "dmfuse/ddpm_gen.pth"

    def __init__(
        self,
        options: Any,
        device: torch.device,
        dtype: torch.dtype,
        weights_dir: Path,
        *,
        random_init: bool = False,
        config: str = "quarter",
        seed: int = 0,
    ) -> None:
        """See :class:`FusionMethod`; ``config`` (``"test_tiny"``) and ``seed`` (of the weights' explicit
        generator) only matter with ``random_init``."""
        super().__init__(options, device, dtype, weights_dir, random_init=random_init)
        opts: DMFuseOptions = options
        cfg = CONFIGS[config]
        with torch.device("cpu" if random_init else "meta"):  # meta: no initialisation the weights replace
            unet, head = SR3UNet(cfg), DMFuseHead(cfg.feature_channels())
        if random_init:
            gen = generator_for(seed)
            init_from_generator(unet, gen)
            init_from_generator(head, gen)
        else:
            self._load_weights(unet, head, opts, weights_dir)
        self.model = DMFuseModel(unet, head).to(device=device, dtype=dtype).eval().requires_grad_(False)
        if device.type == "cpu" and opts.channels_last:
            # oneDNN's convolutions run faster in NHWC here, and less memory is reordered.
            self.model.to(memory_format=torch.channels_last)
        self.batched = opts.unet_batch == "on" or (opts.unet_batch == "auto" and device.type == "cuda")
        self.generator = torch.Generator(device=device)
        if opts.seed >= 0:
            self.generator.manual_seed(opts.seed)
        else:
            self.generator.seed()
        self._noise_cache: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None
        #: The runtime that runs: ``torch`` or one of the ONNX backends (``auto`` resolved).
        # auto on CPU: torch. With the node's one thread it is faster than ONNX Runtime (24 against 28 s at
        # 640x512), as steady with a core busy, and needs half the memory (1.6 against 3.1 GB; OpenVINO's head
        # graph more still); docs/RESULTS.md, Deployment.
        self.backend = resolve_backend(opts.runtime, device, cpu_order=())
        self._onnx = None
        if self.backend != "torch":
            self._onnx = OnnxDMFuse(self.model, self.backend, device, weights_dir, options=asdict(opts), fp16=dtype == torch.float16)

    @staticmethod
    def _load_weights(unet: SR3UNet, head: DMFuseHead, opts: DMFuseOptions, weights_dir: Path) -> None:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        sources: dict[str, str] = {}
        if opts.weights:
            parts = split_checkpoint(opts.weights)
            sources = {k: opts.weights for k in parts}
        if opts.unet_weights:
            parts["unet"] = unet_state_from_checkpoint(read_checkpoint(Path(opts.unet_weights)))
            sources["unet"] = opts.unet_weights
        for part, default in (("head", DMFuse.HEAD_FILE), ("unet", DMFuse.UNET_FILE)):
            if part not in parts:
                path = weights_dir / default
                state = read_checkpoint(path)
                parts[part] = head_state_from_checkpoint(state) if part == "head" else unet_state_from_checkpoint(state)
                sources[part] = str(path)
        load_strict(head, parts["head"], sources["head"])
        load_strict(unet, parts["unet"], sources["unet"])

    def export_onnx(self, directory: Path, size: tuple[int, int] | None) -> list[Path]:
        """Write the U-Net feature graph (any size) and the head graph for frames of ``(H, W)`` to
        ``directory``; returns the written files. The head needs a size (see :mod:`.backends`)."""
        if size is None:
            raise ConfigError("dmfuse's head graph is exported per frame size: give --size WxH (its U-Net graph is dynamic anyway)")
        padded = (-(-size[0] // PAD_MULTIPLE) * PAD_MULTIPLE, -(-size[1] // PAD_MULTIPLE) * PAD_MULTIPLE)
        opts = asdict(self.options)
        unet = export_unet_graph(self.model, Path(directory) / graph_name(self.model, "unet", None), options=opts)
        head = export_head_graph(self.model, Path(directory) / graph_name(self.model, "head", padded), padded, options=opts)
        return [unet, head]

    def _levels_and_noise(self, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels and noise for a padded batch; with a fixed seed they are drawn once per shape."""
        shape = (batch, height, width)
        if self.options.seed < 0:
            return self.model.draw(shape, self.generator, self.device)
        if self._noise_cache is None or self._noise_cache[0] != shape:
            self.generator.manual_seed(self.options.seed)
            self._noise_cache = (shape, *self.model.draw(shape, self.generator, self.device))
        return self._noise_cache[1], self._noise_cache[2]

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, *, levels: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Fused luminance (B,1,H,W) in [0,1].

        Args:
            ir, vis: (B,1,H,W) in [0,1].
            levels: optional (2, 3, B) noise levels γ (IR then visible; t = 5, 50, 100), to inject
                saved values instead of drawing them; ``noise`` likewise, (2, 3, B, 3, H', W') at
                the padded size H' = ⌈H/32⌉·32, W' = ⌈W/32⌉·32.
        """
        if ir.shape != vis.shape or ir.ndim != 4 or ir.shape[1] != 1:
            raise InputError(f"dmfuse needs ir and vis of equal shape (B,1,H,W), got {tuple(ir.shape)} and {tuple(vis.shape)}")
        batch, _, height, width = ir.shape
        x_ir, x_vis = self.prepare(ir), self.prepare(vis)
        if levels is None or noise is None:
            drawn_levels, drawn_noise = self._levels_and_noise(batch, x_ir.shape[-2], x_ir.shape[-1])
            levels = drawn_levels if levels is None else levels
            noise = drawn_noise if noise is None else noise
        levels, noise = levels.to(self.device), noise.to(self.device)
        if self._onnx is not None:
            out = self._onnx(x_ir, x_vis, levels, noise)
        else:
            out = self.model(x_ir, x_vis, levels, noise, batched=self.batched)
        out = out[:, :, :height, :width].float()
        if self.options.authors_io:
            # clamp(0,255)·255, then cv2.imwrite's saturating round-half-to-even to uint8.
            return (out.clamp(min=0.0) * 255.0).round().clamp(0.0, 255.0) / 255.0
        return out.clamp(0.0, 1.0)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) in [0,1] → the U-Net's input range [-1,1], float32, padded at the bottom and
        right with white (+1, the authors' 255) to a multiple of 32. With ``authors_io`` the value
        goes through uint8 and float64 as their loader computes it."""
        if self.options.authors_io:
            u8 = (x.double() * 255.0).round().clamp(0.0, 255.0)
            x = (u8 / 255.0 * 2.0 - 1.0).float()
        else:
            x = x.float() * 2.0 - 1.0
        pad_h, pad_w = -x.shape[-2] % PAD_MULTIPLE, -x.shape[-1] % PAD_MULTIPLE
        return F.pad(x, (0, pad_w, 0, pad_h), value=1.0)
