"""The node's parameters file holding an estimated homography (``--params-out``, ``registration.save_path``)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Sequence

import yaml

from fusion_ros.errors import ConfigError, FusionError

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
    # The launch file, not `ros2 run`: it sets the Fast DDS shared-memory profile without which large
    # images between processes are dropped.
    header += ("# Use: ros2 launch fusion_ros fuse.launch.py params_file:=THIS_FILE\n"
               "# or merge registration.homography into the params file you launch with.\n")
    return header + yaml.safe_dump(doc, default_flow_style=None, sort_keys=False, width=200)


def write_params_yaml(path: str | Path, homography: Sequence[float], comment: str = "") -> Path:
    """Write :func:`params_yaml` atomically (a reader never sees half a file); returns the path.

    The file gets the mode a plain ``open`` would (0666 less the umask), so ROS in a container running
    as another user can read it. Raises :class:`ConfigError` for a folder and :class:`FusionError` when
    the file cannot be written, leaving no temporary file behind.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"parameters file {path} is a folder; give a file name, e.g. {path / 'registration.yaml'}")
    text = params_yaml(homography, comment)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open applies the umask to 0o666 itself (mkstemp would make it 0600).
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as err:  # interrupted too: never leave the temporary file behind
        with contextlib.suppress(OSError):  # e.g. the parent is a file: there is no temporary file either
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise FusionError(f"cannot write parameters file {path}: {err}") from err
        raise
    return path
