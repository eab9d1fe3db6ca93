"""ONNX graphs of the network methods: export, validation, metadata, and the on-disk cache.

Graphs are exported with PyTorch's TorchScript-based exporter (``dynamo=False``, opset 17: the one that
handles these networks' shape arithmetic for dynamic sizes), checked with ``onnx.checker``, and carry the
method's options and input contract as metadata (``onnx.load(f).metadata_props``), so a file says how to
feed it without this package. The cache key is a digest of the weights, the graph's name and size and the
exporter's versions, so a new checkpoint or torch never reuses a stale graph.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["OPSET", "cache_dir", "cached_graph", "export_onnx", "read_metadata", "state_digest"]

OPSET = 17


def state_digest(*modules: nn.Module) -> str:
    """16 hex digits identifying the modules' weights (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{name}{tuple(tensor.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def cache_dir(weights_dir: Path | None) -> Path:
    """Where exported graphs are kept: ``$FUSION_ROS_ONNX_CACHE``, else ``<weights_dir>/onnx`` (next to the
    weights) when that folder is writable, else ``~/.cache/fusion_ros/onnx``."""
    env = os.environ.get("FUSION_ROS_ONNX_CACHE")
    if env:
        return Path(env).expanduser()
    if weights_dir is not None and Path(weights_dir).is_dir() and os.access(weights_dir, os.W_OK):
        return Path(weights_dir) / "onnx"
    return Path.home() / ".cache" / "fusion_ros" / "onnx"


def export_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``module(*args)`` to ``path``, validate it with ``onnx.checker`` and attach ``metadata``
    (values that are not strings are stored as JSON). Written to a temporary file and renamed, so a
    reader never sees half a graph."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Expected and harmless here: the legacy exporter's deprecation notice, shape reads frozen at trace
            # time (batch 1, chunk counts: by design), and constant-folding notes.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            torch.onnx.export(
                module.eval(), args, str(tmp), opset_version=OPSET, dynamo=False,
                input_names=list(input_names), output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()} or None,
            )
        model = onnx.load(str(tmp))
        meta = {"producer": "fusion_ros", "torch": torch.__version__, "opset": str(OPSET), **(metadata or {})}
        onnx.helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata properties of an ONNX file (without loading its weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def cached_graph(directory: Path, name: str, build: Callable[[Path], Path]) -> Path:
    """``directory/name``, exported by ``build(path)`` on first use."""
    path = Path(directory) / name
    if not path.is_file():
        build(path)
    return path
