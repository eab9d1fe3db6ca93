"""Small helpers shared by DMFuse's U-Net and head."""

from __future__ import annotations

import torch

__all__ = ["inplace_ok"]


def inplace_ok() -> bool:
    """In-place activations save a large allocation per op at inference; autograd needs the inputs, and an
    ONNX export traces out-of-place ops only (its graphs have no in-place semantics)."""
    return not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export()
