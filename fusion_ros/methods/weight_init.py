"""Random weights drawn from an explicit generator, for the network methods' test configs and
``random_init`` benchmarks: the same seed gives the same network whatever else used the global RNG."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["generator_for", "init_from_generator"]


def generator_for(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (weights are drawn on the CPU, then moved)."""
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def init_from_generator(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every parameter of ``module`` from ``generator``, in ``named_parameters`` order.

    Conv and linear weights and their biases get PyTorch's default ranges, U(±1/√fan_in); normalisation
    scales 1 and shifts 0; any other parameter (e.g. an attention gate initialised to zero) U(±0.5), so
    the path it gates is exercised by tests instead of multiplied by zero.
    """
    for m in module.modules():
        own = dict(m.named_parameters(recurse=False))
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            for p in own.values():
                p.uniform_(-bound, bound, generator=generator)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)):
            if m.weight is not None:
                m.weight.fill_(1.0)
            if m.bias is not None:
                m.bias.zero_()
        else:
            for p in own.values():
                p.uniform_(-0.5, 0.5, generator=generator)
    return module
