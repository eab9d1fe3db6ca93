"""Typed errors of the fusion core.

Every failure a user can cause (a bad image, an unknown method, a missing weights file) raises a
subclass of :class:`FusionError` with a one-line message that names the problem, so the CLI can
print it without a traceback and the node can count it and keep running.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DependencyError",
    "FusionError",
    "InputError",
    "MethodUnavailableError",
    "UnknownMethodError",
    "WeightsError",
]


class FusionError(Exception):
    """Base class of every error the fusion core raises on purpose."""


class InputError(FusionError, ValueError):
    """An image or message that cannot be fused (wrong dtype, channels, size, encoding)."""


class ConfigError(FusionError, ValueError):
    """An option value outside its allowed set or range."""


class UnknownMethodError(ConfigError):
    """A method name that is not registered; the message lists the valid names."""


class MethodUnavailableError(FusionError):
    """A registered method that cannot run here (weights missing, dependency missing)."""


class WeightsError(FusionError):
    """A weights file that is missing, unreadable, or has the wrong keys or shapes."""


class DependencyError(MethodUnavailableError, ImportError):
    """An optional Python dependency of a method is not installed."""
