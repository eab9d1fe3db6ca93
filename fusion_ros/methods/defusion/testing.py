"""Small seeded DeFusion networks for tests and smoke runs (never the global RNG)."""

from __future__ import annotations

from fusion_ros.methods.defusion.network import CONFIGS, DeFusionNet
from fusion_ros.methods.weight_init import generator_for

__all__ = ["tiny_net"]


def tiny_net(seed: int = 0, config: str = "test_tiny") -> DeFusionNet:
    """A :class:`DeFusionNet` of ``config`` in eval mode, weights drawn from a generator seeded with ``seed``
    (the authors' init distribution)."""
    net = DeFusionNet(CONFIGS[config])
    net.reset_parameters(generator_for(seed))
    return net.eval()
