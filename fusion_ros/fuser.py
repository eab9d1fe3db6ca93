"""The one fusion API: arrays in, fused array out, for the node, the CLI, the UI and the tests.

A :class:`Fuser` owns everything that is the same for every method — input checks, thermal
normalisation, registration, the visible-style colour path, device and dtype — so a method
implements only its algorithm on clean tensors. What it is built from is one validated
:class:`~fusion_ros.config.FusionConfig`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fusion_ros.color import luma, replace_luma
from fusion_ros.config import FusionConfig, RegistrationConfig
from fusion_ros.device import array_to_device, precision_name
from fusion_ros.errors import InputError
from fusion_ros.methods.base import FusionMethod
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.thermal import THERMAL_DTYPES, ThermalConfig, ThermalNormalizer

__all__ = ["Fuser", "build_method", "check_visible", "create_method", "fused_arrays", "visible_planes"]


def build_method(config: FusionConfig, *, random_init: bool = False) -> FusionMethod:
    """The method ``config`` describes, built on its device (nothing is validated again)."""
    cls = config.method_class
    return cls(config.options, config.torch_device, config.dtype, config.weights_path, random_init=random_init)


def create_method(
    name: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    weights_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
    random_init: bool = False,
) -> FusionMethod:
    """Build method ``name`` alone: unknown → :class:`UnknownMethodError`, unavailable → :class:`MethodUnavailableError`."""
    config = FusionConfig.create(
        name, device=device, precision=precision_name(dtype), weights_dir=weights_dir, options=options,
        check_available=not random_init,
    )  # fmt: skip
    return build_method(config, random_init=random_init)


def check_visible(visible: np.ndarray) -> None:
    """Raise :class:`InputError` unless ``visible`` is a non-empty uint8 (H,W), (H,W,1) or (H,W,3) array."""
    if not isinstance(visible, np.ndarray):
        raise InputError(f"visible image must be a numpy array, not {type(visible).__name__}")
    if visible.dtype != np.uint8:
        raise InputError(f"visible image must be uint8, not {visible.dtype}")
    if visible.ndim not in (2, 3) or (visible.ndim == 3 and visible.shape[2] not in (1, 3)):
        raise InputError(f"visible image must be HxW (grey) or HxWx3 (RGB), got shape {visible.shape}")
    if visible.shape[0] == 0 or visible.shape[1] == 0:
        raise InputError(f"visible image is empty (shape {visible.shape})")


def _check_thermal(thermal: np.ndarray) -> np.ndarray:
    if not isinstance(thermal, np.ndarray):
        raise InputError(f"thermal image must be a numpy array, not {type(thermal).__name__}")
    if thermal.ndim == 3 and thermal.shape[2] == 1:
        thermal = thermal[..., 0]
    if thermal.ndim != 2:
        raise InputError(f"thermal image must be HxW (one channel), got shape {thermal.shape}")
    if thermal.dtype not in THERMAL_DTYPES:
        raise InputError(f"thermal image must be uint8, uint16 or float32/float64 temperatures, not {thermal.dtype}")
    if thermal.size == 0:
        raise InputError(f"thermal image is empty (shape {thermal.shape})")
    return thermal


def visible_planes(visibles: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Same-size uint8 frames, (H,W,3) RGB or (H,W) / (H,W,1) grey → (B,C,H,W) in [0,1] on ``device``.

    Planar before any float work: the per-channel maths then runs on contiguous planes, ~3× faster
    than on the interleaved layout (transposing the uint8 bytes costs ~0.1 ms).
    """
    arr = visibles[0][None] if len(visibles) == 1 else np.stack(visibles)  # one frame: a view, no copy
    vis = array_to_device(arr, device)
    vis = vis.reshape(*vis.shape[:3], -1).permute(0, 3, 1, 2).contiguous()
    return vis.to(dtype).div_(255.0)


@torch.inference_mode()
def fused_arrays(fused: torch.Tensor) -> np.ndarray:
    """(B,C,H,W) in [0,1] (an output of :meth:`Fuser.fuse_tensor`, overwritten) → (B,H,W,C) uint8 on the host."""
    out = fused.mul_(255.0).round_().to(torch.uint8)
    return torch.stack(out.unbind(1), dim=-1).cpu().numpy()  # faster than permute().contiguous()


class Fuser:
    """Fuses thermal + visible frames with one method on one device.

    Build it from a validated :class:`~fusion_ros.config.FusionConfig` with :meth:`from_config` (the
    node, the CLI, bag fusion, the page), or from Python values with the constructor:

    Args:
        method: registered method name (``fusion-ros methods``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        precision: ``auto`` | ``fp32`` | ``fp16`` | ``bf16`` (auto: fp16 on CUDA, fp32 on CPU).
        weights_dir: folder with the weight files (default :func:`~fusion_ros.weights.default_weights_dir`).
        options: the method's options by name (strings are converted).
        thermal: thermal normalisation; with ``smoothing > 0`` (the default) the window is smoothed
            across calls, as a camera stream needs; use 0 for unrelated images.
        homography: 9 row-major numbers mapping thermal pixels to visible pixels.
        resize: with no homography, stretch a thermal frame of another size over the visible one
            (otherwise such a pair raises :class:`InputError`).
        random_init: build network methods with random weights (tests only; availability is not checked).
        warmup: run the method once on a small dummy pair now, not on the first frame.
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        weights_dir: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
        thermal: ThermalConfig | None = None,
        homography: Sequence[float] | None = None,
        resize: bool = False,
        random_init: bool = False,
        warmup: bool = True,
    ) -> None:
        config = FusionConfig.create(
            method, device=device, precision=precision, weights_dir=weights_dir, options=options, thermal=thermal,
            registration=RegistrationConfig(tuple(homography) if homography is not None else None, resize),
            check_available=not random_init,
        )  # fmt: skip
        self._build(config, random_init=random_init, warmup=warmup)

    @classmethod
    def from_config(cls, config: FusionConfig, *, random_init: bool = False, warmup: bool = True) -> Fuser:
        """The Fuser ``config`` describes; it was validated when it was built, so nothing is checked again."""
        fuser = cls.__new__(cls)
        fuser._build(config, random_init=random_init, warmup=warmup)
        return fuser

    def _build(self, config: FusionConfig, *, random_init: bool, warmup: bool) -> None:
        self.config = config
        self.device = config.torch_device
        self.dtype = config.dtype
        self.method_name = config.method
        self.method = build_method(config, random_init=random_init)
        self.thermal = ThermalNormalizer(config.thermal)
        self.registration = config.registration.build()
        if warmup:
            self.method.warmup()

    def reconfigure(self, thermal: ThermalConfig, registration: RegistrationConfig) -> None:
        """Use other thermal and registration settings from the next frame on (the model stays); a
        changed thermal setting restarts the smoothed window."""
        if thermal != self.config.thermal:
            self.thermal = ThermalNormalizer(thermal)
        if registration != self.config.registration:
            self.registration = registration.build()
        self.config = dataclasses.replace(self.config, thermal=thermal, registration=registration)

    @torch.inference_mode()
    def fuse_tensor(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Batched fusion of prepared tensors.

        Args:
            ir: (B,1,h,w) thermal in [0,1] (registered to the visible grid by this Fuser's homography;
                another size than ``vis`` without one raises :class:`InputError` unless ``resize``).
            vis: (B,3,H,W) RGB or (B,1,H,W) grey, in [0,1].

        Returns:
            (B,C,H,W) like ``vis``, in [0,1], float32.
        """
        if ir.ndim != 4 or ir.shape[1] != 1 or vis.ndim != 4 or vis.shape[1] not in (1, 3) or ir.shape[0] != vis.shape[0]:
            raise InputError(f"fuse_tensor needs ir (B,1,h,w) and vis (B,1|3,H,W), got {tuple(ir.shape)} and {tuple(vis.shape)}")
        self.config.registration.check(ir.shape[-2:], vis.shape[-2:])
        ir = self.registration(ir.to(self.device, self.dtype), (vis.shape[-2], vis.shape[-1]))
        vis = vis.to(self.device, self.dtype)
        method = self.method
        if method.color_space == "luma":
            y = vis if vis.shape[1] == 1 else luma(vis)
            fused_y = method.fuse(ir, y).clamp_(0.0, 1.0)
            out = fused_y if vis.shape[1] == 1 else replace_luma(vis, y, fused_y)
        else:
            rgb = vis if vis.shape[1] == 3 else vis.expand(-1, 3, -1, -1)
            out = method.fuse(ir, rgb).clamp_(0.0, 1.0)
            if vis.shape[1] == 1:
                out = luma(out)
        return out.float()

    @torch.inference_mode()
    def __call__(self, thermal: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Fuse one pair of arrays.

        Args:
            thermal: (H',W') uint8, uint16 counts or float32 temperatures (NaN allowed).
            visible: (H,W,3) uint8 RGB, or (H,W) / (H,W,1) uint8 grey.

        Returns:
            The fused image with ``visible``'s shape and dtype.
        """
        return self.fuse_arrays([thermal], [visible])[0]

    @torch.inference_mode()
    def fuse_arrays(self, thermals: Sequence[np.ndarray], visibles: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Fuse several pairs of one size in one model call (offline bag fusion); as :meth:`__call__`
        per pair. The thermal frames are normalised in order, so a smoothed window runs as frame by frame."""
        if len(thermals) != len(visibles) or not visibles:
            raise InputError(f"fuse_arrays needs as many thermal as visible frames (at least one), got {len(thermals)} and {len(visibles)}")
        thermals = [_check_thermal(t) for t in thermals]
        for visible in visibles:
            check_visible(visible)
        if len({t.shape for t in thermals}) > 1 or len({v.shape for v in visibles}) > 1:
            raise InputError("fuse_arrays needs frames of one size per camera; fuse other sizes in another call")
        irs = [self.thermal(t, self.device, self.dtype) for t in thermals]
        ir = irs[0] if len(irs) == 1 else torch.cat(irs)  # a frame at a time (the node) copies nothing
        out = fused_arrays(self.fuse_tensor(ir, visible_planes(visibles, self.device, self.dtype)))
        return [o.reshape(v.shape) for o, v in zip(out, visibles)]
