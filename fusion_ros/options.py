"""Method options from loose values (CLI ``key=value`` strings, ROS parameters, YAML) to the
method's typed, validated ``Options`` dataclass — one place, so the node, CLI and UI agree."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from fusion_ros.errors import ConfigError

__all__ = ["build_options", "coerce", "field_default", "options_as_dict"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce(value: Any, default: Any, name: str) -> Any:
    """Convert ``value`` to the type of ``default`` (bool, int, float, str, list/tuple of floats)."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError(value)
                return low in _TRUE
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            return type(default)(float(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name}: {value!r} is not a valid {type(default).__name__}") from None


def field_default(field: dataclasses.Field) -> Any:
    """The default value of an options dataclass field (plain or from its factory)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def _validate(field: dataclasses.Field, value: Any, name: str) -> None:
    choices = field.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"option {name}: {value!r} is not one of {', '.join(map(str, choices))}")
    bounds = field.metadata.get("range")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"option {name}: {value} is outside [{bounds[0]}, {bounds[1]}]")


def build_options(options_cls: type, values: Mapping[str, Any] | None, method: str = "") -> Any:
    """An ``options_cls`` instance from ``values``; unknown names and bad values raise :class:`ConfigError`."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    values = dict(values or {})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {valid}")
    kwargs = {}
    for key, raw in values.items():
        f = fields[key]
        value = coerce(raw, field_default(f), f"{method}.{key}" if method else key)
        _validate(f, value, f"{method}.{key}" if method else key)
        kwargs[key] = value
    return options_cls(**kwargs)


def options_as_dict(options: Any) -> dict[str, Any]:
    """Plain dict of an options instance (for logs, YAML export, diagnostics)."""
    return dataclasses.asdict(options)
