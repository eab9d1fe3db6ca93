"""Small seeded DMFuse models for tests and smoke runs (never the global RNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fusion_ros.methods.dmfuse.method import DMFuse
from fusion_ros.options import build_options

__all__ = ["tiny_method"]


def tiny_method(weights_dir: Path, init_seed: int = 0, **options: Any) -> DMFuse:
    """A CPU fp32 ``dmfuse`` method on the ``test_tiny`` U-Net with weights drawn from a generator seeded with
    ``init_seed``; ``options`` as ``--opt`` values (the noise ``seed`` among them). With a ``weights`` option
    the files are loaded instead."""
    opts = build_options(DMFuse.Options, options, "dmfuse")
    return DMFuse(opts, torch.device("cpu"), torch.float32, Path(weights_dir), random_init="weights" not in options,
                  config="test_tiny", seed=init_seed)
