"""Subcommands of ``fusion-ros``, one module each (auto-discovered by :mod:`fusion_ros.cli`), and the
argument parsers they share."""

from __future__ import annotations

from typing import Sequence

from fusion_ros.errors import ConfigError


#: ``--weights-dir`` of every command that has it: the rule of :func:`fusion_ros.weights.default_weights_dir`,
#: which depends on where the package runs from, so "the package's weights/" misled installed users.
WEIGHTS_DIR_HELP = (
    "folder with the weight files (default: $FUSION_ROS_WEIGHTS_DIR if set, else the weights/ of the fusion_ros "
    "checkout the package runs from or that is the current folder, else share/fusion_ros/weights of the install; "
    "`fusion-ros methods` prints the one in use)"
)


def parse_size(text: str, low: int, high: int) -> tuple[int, int]:
    """``"640x512"`` → ``(640, 512)``; ``ValueError`` unless it is WIDTHxHEIGHT with both sides in [low, high]."""
    w, sep, h = text.strip().lower().partition("x")
    try:
        width, height = int(w), int(h)
    except ValueError:
        width = height = 0
    if not sep or not (low <= width <= high and low <= height <= high):
        raise ValueError(f"WIDTHxHEIGHT within {low}..{high}, got {text!r}")
    return width, height


def at_least(flag: str, value: int, low: int) -> int:
    """``value``, or a one-line :class:`ConfigError` naming ``flag`` when it is below ``low``: argparse's
    ``int`` takes any sign, and a count out of range would otherwise crash deep in a run or be read as
    another setting (a negative ``--limit`` as "all")."""
    if value < low:
        raise ConfigError(f"{flag} must be at least {low}, got {value}")
    return value


def method_options(pairs: list[str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--opt`` values → ``{method: {name: value}}`` (typed later by the method), for every command alike.

    ``METHOD.NAME=VALUE`` names one of ``methods``; a plain ``NAME=VALUE`` applies when only one method
    runs. So a line copied from ``fuse`` works in ``evaluate`` and the other way round, and a prefix
    of a method that does not run is an error instead of an option silently not applied.
    """
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        method, dot, name = key.strip().rpartition(".")
        if not sep or not name or (dot and not method):
            raise ConfigError(f"--opt expects NAME=VALUE or METHOD.NAME=VALUE, got {pair!r}")
        if not dot:
            if len(methods) != 1:
                raise ConfigError(f"--opt {pair}: {len(methods)} methods run ({', '.join(methods) or 'none'}); "
                                  "prefix the option with one of them, METHOD.NAME=VALUE")
            method = methods[0]
        elif method not in methods:
            raise ConfigError(f"--opt {pair}: {method!r} is not a method of this run ({', '.join(methods) or 'none'})")
        out.setdefault(method, {})[name] = value.strip()
    return out
