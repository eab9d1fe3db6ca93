"""Resolve the ``device`` and ``precision`` settings once, with errors that say what is possible here."""

from __future__ import annotations

import numpy as np
import torch

from fusion_ros.errors import ConfigError

__all__ = ["DTYPES", "PRECISION_CHOICES", "array_to_device", "precision_name", "resolve_device", "resolve_dtype"]

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
#: Precision names of the `precision` option and their torch dtypes.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → first CUDA device when there is one, else CPU; ``cuda``/``cuda:N`` must exist."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
    return dev


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` → fp16 on CUDA, fp32 on CPU. Half precision on CPU is refused: slower there and inexact."""
    name = precision.strip().lower()
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, not {precision!r}")
    if name != "fp32" and device.type == "cpu":
        raise ConfigError(f"precision {name} needs a CUDA device; use fp32 (or auto) on CPU")
    return DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    """The ``precision`` name of a torch dtype (``torch.float16`` → ``fp16``)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ConfigError(f"no precision name for {dtype}; supported: {', '.join(DTYPES)}")


def array_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on ``device``, sharing memory on CPU where it can.

    Read-only arrays (decoded ROS messages, Pillow images) are copied once first (tens of
    microseconds for a frame): torch would otherwise share memory it may not write.
    """
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C", copy=True)
    return torch.from_numpy(array).to(device)
