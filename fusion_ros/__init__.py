"""fusion_ros: thermal + RGB image fusion for ROS 2, with a fusion core that needs no ROS.

>>> from fusion_ros import Fuser
>>> fused = Fuser("pyramid")(thermal_u16, rgb_u8)   # same shape and dtype as rgb_u8
"""

from fusion_ros.config import FusionConfig, build_config
from fusion_ros.errors import (
    ConfigError,
    DependencyError,
    FusionError,
    InputError,
    MethodUnavailableError,
    UnknownMethodError,
    WeightsError,
)
from fusion_ros.fuser import Fuser, create_method
from fusion_ros.registry import DEFAULT_METHOD, list_methods, method_names
from fusion_ros.thermal import ThermalConfig

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
