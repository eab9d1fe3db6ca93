"""The method registry: every fusion method by name, with whether it can run here and why not.

Method modules in :mod:`fusion_ros.methods` register their classes on import; the registry
imports them all on first use, so adding a method is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fusion_ros.errors import ConfigError, UnknownMethodError

__all__ = [
    "DEFAULT_METHOD",
    "MethodInfo",
    "get_method_class",
    "list_methods",
    "method_names",
    "method_unavailable_reason",
    "register_method",
]

#: The method the node and CLI use when none is named: weight-free, so it works with no download.
DEFAULT_METHOD = "balanced"

_REGISTRY: dict[str, type] = {}
_LOADED = False


def register_method(cls: type) -> type:
    """Class decorator adding a :class:`~fusion_ros.methods.base.FusionMethod` subclass under ``cls.name``."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ConfigError(f"method name {name!r} registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import fusion_ros.methods as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _LOADED = True


def method_names() -> list[str]:
    """Registered method names, default first, then alphabetical."""
    _load_all()
    return sorted(_REGISTRY, key=lambda n: (n != DEFAULT_METHOD, n))


def get_method_class(name: str) -> type:
    """The class registered as ``name``; :class:`UnknownMethodError` lists the valid names."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}") from None


@dataclass(frozen=True)
class MethodInfo:
    """One row of ``fusion-ros methods``."""

    name: str
    description: str
    needs_weights: bool
    weight_files: tuple[str, ...]
    available: bool
    reason: str
    cost: str
    seconds_per_pair: float | None


def method_unavailable_reason(cls: type, weights_dir: Path, options: Mapping[str, Any] | None = None) -> str | None:
    """Why method ``cls`` cannot be built here with ``options``, or ``None``: the one availability rule of
    the Fuser, the node's parameter checks, ``fusion-ros methods`` and the comparison page.

    An explicit checkpoint file (the ``weights`` option, CLI ``--weights``) replaces the manifest's
    files: the method loads it itself and raises ``WeightsError`` if it is missing or does not match.
    A check that itself fails (a broken manifest entry, a dependency that crashes on import) is a
    reason, not a crash.
    """
    if (options or {}).get("weights"):
        return None
    try:
        return cls.unavailable_reason(weights_dir)
    except Exception as err:  # noqa: BLE001 - one broken method must not take the others down
        return f"its availability cannot be checked ({type(err).__name__}: {err})"


def list_methods(weights_dir: Path | None = None, *, survive_broken: bool = False) -> list[MethodInfo]:
    """Every registered method with its availability under ``weights_dir`` (default: :func:`default_weights_dir`).

    A method whose availability check itself fails raises, unless ``survive_broken``: then it is
    listed as unavailable with that error as the reason (the comparison page must not go down).
    """
    from fusion_ros.weights import default_weights_dir, manifest

    wdir = weights_dir or default_weights_dir()
    rows = []
    for name in method_names():
        cls = _REGISTRY[name]
        reason = method_unavailable_reason(cls, wdir) if survive_broken else cls.unavailable_reason(wdir)
        try:
            files = tuple(manifest()[cls.weights_key]["files"]) if cls.weights_key else ()
        except Exception:  # noqa: BLE001 - only reached with survive_broken: the broken entry is the reason
            if not survive_broken:
                raise
            files = ()
        rows.append(MethodInfo(name, cls.description, cls.weights_key is not None, files, reason is None, reason or "", cls.cost, cls.seconds_per_pair))
    return rows
