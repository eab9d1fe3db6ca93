"""DeFusion checkpoints: the authors' ``{'state_dict': …}`` file, a bare state dict or a ``.safetensors`` copy,
mapped onto :class:`~fusion_ros.methods.defusion.network.DeFusionNet`'s keys and loaded strictly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from fusion_ros.methods.defusion.network import DeFusionNet

__all__ = ["checkpoint_filter_fn", "load_defusion_state_dict"]


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


def load_defusion_state_dict(model: DeFusionNet, checkpoint: Path | Mapping, source: str | None = None) -> None:
    """Load the authors' checkpoint (``{'state_dict': …}``), a bare state dict or a ``.safetensors``
    copy into ``model`` with ``strict=True``; a file with other keys or shapes raises
    :class:`~fusion_ros.errors.WeightsError` naming them. ``checkpoint`` is a file, or one already read
    (a resumed trainer's, named by ``source``)."""
    from fusion_ros.weights import check_state_dict, load_state_dict, state_dict_from

    if isinstance(checkpoint, Mapping):
        source = source or "checkpoint"
        raw = state_dict_from(checkpoint, source, unwrap=("state_dict",))
    else:
        source = str(checkpoint)
        raw = load_state_dict(Path(checkpoint), unwrap=("state_dict",))
    state = checkpoint_filter_fn(raw, model)
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
