"""The node's parameters file holding an estimated homography (``--params-out``, ``registration.save_path``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import yaml

__all__ = ["NODE_KEY", "params_yaml", "write_params_yaml"]

#: Matches fusion_node in any namespace (a plain ``fusion_node`` key only matches ``/fusion_node``).
NODE_KEY = "/**/fusion_node"


def params_yaml(homography: Sequence[float], comment: str = "") -> str:
    """A ROS 2 parameters file setting ``registration.homography`` (9 numbers, row-major)."""
    values = [float(v) for v in homography]
    if len(values) != 9:
        raise ValueError(f"a homography has 9 numbers, got {len(values)}")
    doc = {NODE_KEY: {"ros__parameters": {"registration": {"homography": values}}}}
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    header += "# ros2 run fusion_ros fusion_node --ros-args --params-file THIS_FILE (or merge into your params file)\n"
    return header + yaml.safe_dump(doc, default_flow_style=None, sort_keys=False, width=200)


def write_params_yaml(path: str | Path, homography: Sequence[float], comment: str = "") -> Path:
    """Write :func:`params_yaml` atomically (a reader never sees half a file); returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(params_yaml(homography, comment))
    os.replace(tmp, path)
    return path
