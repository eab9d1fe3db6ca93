"""fusion_ros: thermal + RGB image fusion for ROS 2, with a fusion core that needs no ROS.

>>> from fusion_ros import Fuser
>>> fused = Fuser("pyramid")(thermal_u16, rgb_u8)   # same shape and dtype as rgb_u8

The public names load on first use (PEP 562): importing a light submodule such as
:mod:`fusion_ros.registration.estimate` (numpy and OpenCV only) does not pull in torch, which keeps the
background registration process small (43 MB after its imports instead of 234 MB).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fusion_ros.errors import (
    ConfigError,
    DependencyError,
    FusionError,
    InputError,
    MethodUnavailableError,
    UnknownMethodError,
    WeightsError,
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ below imports on first use
    from fusion_ros.config import FusionConfig, build_config
    from fusion_ros.fuser import Fuser, create_method
    from fusion_ros.registry import DEFAULT_METHOD, list_methods, method_names
    from fusion_ros.thermal import ThermalConfig

#: Public name → the module that defines it, imported when the name is first used.
_LAZY = {
    "FusionConfig": "fusion_ros.config",
    "build_config": "fusion_ros.config",
    "Fuser": "fusion_ros.fuser",
    "create_method": "fusion_ros.fuser",
    "DEFAULT_METHOD": "fusion_ros.registry",
    "list_methods": "fusion_ros.registry",
    "method_names": "fusion_ros.registry",
    "ThermalConfig": "fusion_ros.thermal",
}

__all__ = [
    "DEFAULT_METHOD",
    "ConfigError",
    "DependencyError",
    "Fuser",
    "FusionConfig",
    "FusionError",
    "InputError",
    "MethodUnavailableError",
    "ThermalConfig",
    "UnknownMethodError",
    "WeightsError",
    "build_config",
    "create_method",
    "list_methods",
    "method_names",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusion_ros' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
