"""Local weight files: where they are looked for, the manifest that says what goes where, and
checkpoint loading that explains a mismatch instead of dumping a stack trace.

Nothing here downloads: robots run offline, so a missing file is an error that names the file,
the folder it belongs in, and where its authors publish it (``weights/manifest.toml``).
"""

from __future__ import annotations

import os
import sys
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from fusion_ros.errors import WeightsError

__all__ = [
    "default_weights_dir",
    "load_state_dict",
    "manifest",
    "missing_weights_message",
    "check_state_dict",
    "read_checkpoint",
    "state_dict_from",
]

_PACKAGE = "fusion_ros"
_SOURCE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def _share_dirs() -> list[Path]:
    """``share/fusion_ros`` folders of the install prefixes (pip venv, colcon install, ROS underlay)."""
    # The prefix this copy of the package is installed in comes first (…/lib/pythonX.Y/site-packages/fusion_ros).
    here = Path(__file__).resolve().parent
    prefixes = [here.parents[3]] if here.parent.name == "site-packages" else []
    prefixes.append(Path(sys.prefix))
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [p / "share" / _PACKAGE for p in prefixes]


def default_weights_dir() -> Path:
    """The weights folder used when none is given.

    ``$FUSION_ROS_WEIGHTS_DIR`` if set, else the checkout's ``weights/`` when running from source,
    else ``./weights`` when the current folder is a fusion_ros checkout (``make`` installs the package
    into ``.venv`` as a regular install, and its users put the files in the checkout's ``weights/`` as
    the README says), else ``share/fusion_ros/weights`` of the install prefix.
    """
    env = os.environ.get("FUSION_ROS_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    if (_SOURCE_WEIGHTS / "manifest.toml").is_file():
        return _SOURCE_WEIGHTS
    here = Path.cwd() / "weights"
    if (here / "manifest.toml").is_file() and (Path.cwd() / "package.xml").is_file():
        return here
    for share in _share_dirs():
        if (share / "weights").is_dir():
            return share / "weights"
    return _SOURCE_WEIGHTS


@lru_cache(maxsize=1)
def manifest() -> Mapping[str, Mapping[str, Any]]:
    """The parsed ``weights/manifest.toml`` (source checkout or installed copy)."""
    for candidate in [_SOURCE_WEIGHTS / "manifest.toml"] + [s / "weights" / "manifest.toml" for s in _share_dirs()]:
        if candidate.is_file():
            with candidate.open("rb") as f:
                return tomllib.load(f)
    raise WeightsError("weights/manifest.toml not found: the fusion_ros install is incomplete")


def missing_weights_message(key: str, weights_dir: Path) -> str | None:
    """``None`` if every file of manifest entry ``key`` exists under ``weights_dir``, else a message
    naming each missing file, the folder it belongs in, and where to get it."""
    entry = manifest()[key]
    missing = [f for f in entry["files"] if not (weights_dir / f).exists()]
    if not missing:
        return None
    names = ", ".join(str(weights_dir / f) for f in missing)
    return f"missing weights {names} (get it from {entry['source']}; see weights/README.md)"


def read_checkpoint(path: Path) -> Any:
    """Read a ``.safetensors`` or torch pickle file, on CPU, without executing pickled code; a missing or
    unreadable file raises :class:`WeightsError`."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is the same user problem
        raise WeightsError(f"cannot read weights file {path}: {err}") from None


def load_state_dict(path: Path, *, unwrap: tuple[str, ...] = ("state_dict",), strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """Load a checkpoint as a flat ``{name: tensor}`` dict.

    Args:
        path: ``.safetensors``, ``.pth``/``.pt``/``.model`` (torch pickle, loaded with ``weights_only``).
        unwrap: keys of a wrapping dict to descend into when present (``{'state_dict': …}``).
        strip_prefix: a key prefix to remove where present (e.g. ``"denoise_fn."``).
    """
    return state_dict_from(read_checkpoint(path), str(path), unwrap=unwrap, strip_prefix=strip_prefix)


def state_dict_from(obj: Any, source: str, *, unwrap: tuple[str, ...] = ("state_dict",), strip_prefix: str = ""
                    ) -> dict[str, torch.Tensor]:
    """:func:`load_state_dict` of a checkpoint already read (``source`` names it in errors): a trainer's
    resume file holds the weights beside its epoch and optimiser state, and is read once."""
    for key in unwrap:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source} does not hold a state_dict (found {type(obj).__name__})")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k[len(strip_prefix):] if strip_prefix and k.startswith(strip_prefix) else k] = v
    return out


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`WeightsError` listing missing, unexpected and mis-shaped keys, so a wrong file
    is explained in one message instead of failing inside ``load_state_dict``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if not (missing or unexpected or shapes):
        return
    parts = []

    def _few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" … (+{len(keys) - 5})" if len(keys) > 5 else "")

    if missing:
        parts.append(f"{len(missing)} missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    if shapes:
        parts.append("wrong shapes: " + _few([f"{k} {got[k]} != {expected[k]}" for k in shapes]))
    raise WeightsError(f"{source} does not match {type(model).__name__}: " + "; ".join(parts))
