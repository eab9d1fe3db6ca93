"""FusionINV's optional dependencies (diffusers, transformers): imported only when a pipeline is built,
so the method module and the registry import without them."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any, Iterator

from fusion_ros.errors import DependencyError

__all__ = ["INSTALL_HINT", "hub_offline", "missing_packages", "require_diffusers"]

INSTALL_HINT = "pip install diffusers==0.42.1 transformers==5.23.0"


def missing_packages() -> list[str]:
    """The packages among diffusers and transformers that are not installed."""
    return [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]


def require_diffusers() -> Any:
    """Import diffusers (and check transformers) or raise :class:`DependencyError`; the hub is never used."""
    missing = missing_packages()
    if missing:
        raise DependencyError(f"method 'fusioninv' needs the Python package(s) {', '.join(missing)} ({INSTALL_HINT})")
    import diffusers

    return diffusers


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` for the duration of a load, so a loader that would reach for the hub
    fails at once instead of hanging on a robot with no network; every call also passes
    ``local_files_only=True``."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
