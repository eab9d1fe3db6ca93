"""DMFuse checkpoints: the authors' DDPM U-Net file, the released head pickle, ``.safetensors`` copies and
combined files, loaded strictly onto modules built on the meta device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from fusion_ros.errors import WeightsError
from fusion_ros.methods.dmfuse.head import DMFuseHead
from fusion_ros.methods.dmfuse.schedule import SCHEDULE_BUFFERS
from fusion_ros.methods.dmfuse.unet import CONFIGS, SR3UNet, UNetConfig

__all__ = ["head_state_from_checkpoint", "load_head", "load_unet", "read_checkpoint", "split_checkpoint", "unet_state_from_checkpoint"]


def unet_state_from_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """U-Net keys from the authors' DDPM file (``denoise_fn.*`` + 12 schedule buffers) or a plain U-Net state.

    The schedule buffers are dropped: the authors' ``feats`` draws its levels from a numpy copy of
    the schedule built from the config, never from the buffers, and so does this module.
    """
    if not any(k.startswith("denoise_fn.") for k in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        if key.startswith("denoise_fn."):
            out[key[len("denoise_fn."):]] = value
        elif key not in SCHEDULE_BUFFERS:
            out[key] = value  # reported as unexpected by the strict check
    return out


def head_state_from_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Head keys from a head-only file (the released ``model.model``) or a combined file (``head.*``)."""
    if any(k.startswith("head.") for k in state):
        return {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    return dict(state)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    from fusion_ros.weights import load_state_dict

    return load_state_dict(Path(path), unwrap=("state_dict",))


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load with a one-line explanation of any mismatch; ``assign`` so a module built on
    the meta device (no wasted random initialisation) takes the file's tensors."""
    from fusion_ros.weights import check_state_dict

    check_state_dict(module, state, source)
    # Fresh copies: tensors read from a file may be views into it, unaligned for the kernels.
    module.load_state_dict({k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()}, strict=True, assign=True)


def load_unet(path: str | Path, config: UNetConfig = CONFIGS["quarter"]) -> SR3UNet:
    """An :class:`SR3UNet` with weights from ``path`` (``.pth`` DDPM/plain, ``.safetensors``), strictly checked."""
    with torch.device("meta"):
        unet = SR3UNet(config)
    load_strict(unet, unet_state_from_checkpoint(read_checkpoint(Path(path))), str(path))
    return unet.eval().requires_grad_(False)


def load_head(path: str | Path, feature_channels: Sequence[int] = (96, 192, 384, 768)) -> DMFuseHead:
    """A :class:`DMFuseHead` with weights from ``path`` (the released ``.model`` pickle or ``.safetensors``)."""
    with torch.device("meta"):
        head = DMFuseHead(feature_channels)
    load_strict(head, head_state_from_checkpoint(read_checkpoint(Path(path))), str(path))
    return head.eval()


#: Key prefixes that mark U-Net tensors in a file given with ``--weights`` (bare, as the authors'
#: DDPM file, or under ``unet.`` in a combined file); every other key belongs to the head.
_UNET_PREFIXES = ("denoise_fn.", "unet.", "noise_level_mlp.", "init_conv.", "downs.", "mid.", "ups.", "final_conv.")


def split_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The parts (``"head"``, ``"unet"``) of one checkpoint file: a head, a U-Net, or both.

    A combined file holds the head's keys bare or under ``head.`` and the U-Net's under
    ``denoise_fn.`` or ``unet.``. Keys of neither end up in the head and fail its strict check.
    """
    state = read_checkpoint(Path(path))
    unet = {k: v for k, v in state.items() if k.startswith(_UNET_PREFIXES) or k in SCHEDULE_BUFFERS}
    head = {k: v for k, v in state.items() if k not in unet}
    parts = {}
    if head:
        parts["head"] = head_state_from_checkpoint(head)
    if unet:
        parts["unet"] = unet_state_from_checkpoint({k.removeprefix("unet."): v for k, v in unet.items()})
    if not parts:
        raise WeightsError(f"{path} holds no tensors")
    return parts
