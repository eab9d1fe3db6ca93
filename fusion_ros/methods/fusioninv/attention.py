"""The attention edit of FusionINV: in the injected decoder self-attention layers the fusion branch keeps
its queries and takes the keys/values of the infrared or visible branch, with a sharpened attention map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from fusion_ros.errors import ConfigError

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

__all__ = ["ATTN_CHUNK_ELEMS", "FusionINVAttnProcessor", "InjectionControl", "contrast_attention", "injection_layer_names"]

#: Query chunk of the explicit (contrasted) attention: bounds its matrix to chunk × heads × keys floats.
ATTN_CHUNK_ELEMS = 1 << 25


@dataclass
class InjectionControl:
    """State shared by the pipeline and its attention processors for the current UNet call.

    The UNet batch is laid out ``[fusion×P, visible×P, infrared×P, (rest)]`` with P = ``pairs``; only the
    fusion rows are edited. ``trace``, when a list, receives ``(layer, step, source)`` for every edit
    (used by the tests to check which layers and steps are hit).
    """

    pairs: int = 1
    source: Literal["infrared", "visible", "self"] | None = None
    contrast: float = 1.0
    step: int = -1
    trace: list[tuple[str, int, str]] | None = None


def contrast_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, contrast: float, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale), sharpened and clipped as the authors do, times v; chunked over queries.

    (P, heads, Lq, d) × (P, heads, Lk, d) → (P, heads, Lq, d); computed in float32 (or float64).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    qf, kt, vf = q.to(dtype), k.to(dtype).transpose(-1, -2), v.to(dtype)
    chunk = max(1, ATTN_CHUNK_ELEMS // max(1, q.shape[0] * q.shape[1] * k.shape[-2]))
    out = torch.empty(qf.shape[:-1] + (vf.shape[-1],), dtype=dtype, device=q.device)
    for start in range(0, q.shape[-2], chunk):
        attn = torch.softmax(qf[..., start:start + chunk, :] @ kt * scale, dim=-1)  # (P, heads, c, Lk)
        if contrast != 1.0:
            mean = attn.mean(dim=-1, keepdim=True)
            attn = attn.sub_(mean).mul_(contrast).add_(mean).clamp_(0.0, 1.0)
        out[..., start:start + chunk, :] = attn @ vf
    return out.to(q.dtype)


class FusionINVAttnProcessor:
    """Self-attention processor of the injected layers: the fusion rows keep their queries and attend to
    the keys/values named by :class:`InjectionControl` with the contrasted map; all other rows, and every
    call while ``control.source`` is ``None``, run the standard scaled-dot-product attention."""

    def __init__(self, name: str, control: InjectionControl) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.name = name
        self.control = control
        self._plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        ctl = self.control
        if ctl.source is None or encoder_hidden_states is not None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        pairs = ctl.pairs
        if hidden_states.shape[0] < 3 * pairs:
            raise ConfigError(f"FusionINV attention needs a batch of at least 3×{pairs} rows, got {hidden_states.shape[0]}")
        if ctl.trace is not None:
            ctl.trace.append((self.name, ctl.step, ctl.source))

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, L, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        src = {"infrared": slice(2 * pairs, 3 * pairs), "visible": slice(pairs, 2 * pairs), "self": slice(0, pairs)}[ctl.source]
        rest_mask = None if attention_mask is None else attention_mask[pairs:]
        rest = F.scaled_dot_product_attention(query[pairs:], key[pairs:], value[pairs:], attn_mask=rest_mask)
        q_f, k_f, v_f = query[:pairs], key[src], value[src]
        if attention_mask is None and ctl.contrast == 1.0:
            fused = F.scaled_dot_product_attention(q_f, k_f, v_f)
        else:
            if attention_mask is not None:
                raise ConfigError("FusionINV's contrasted attention does not support attention masks")
            fused = contrast_attention(q_f, k_f, v_f, ctl.contrast, 1.0 / math.sqrt(head_dim))
        hidden_states = torch.cat([fused, rest], dim=0)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def injection_layer_names(unet: UNet2DConditionModel) -> list[str]:
    """Names of the self-attention modules (``…attn1``) in the UNet's two highest-resolution up blocks.

    In SD v1.5 these are ``up_blocks.{2,3}.attentions.{0,1,2}.transformer_blocks.0.attn1`` (the authors'
    "32" and "64" levels at 512²).
    """
    n = len(unet.up_blocks)
    prefixes = tuple(f"up_blocks.{i}.attentions." for i in (n - 2, n - 1))
    names = [
        key[: -len(".processor")]
        for key in unet.attn_processors
        if key.startswith(prefixes) and key.endswith(".attn1.processor")
    ]
    if not any(nm.startswith(prefixes[0]) for nm in names) or not any(nm.startswith(prefixes[1]) for nm in names):
        raise ConfigError("FusionINV needs self-attention in the UNet's two highest-resolution up blocks")
    return names
