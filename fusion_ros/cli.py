"""``fusion-ros``: the command-line shell over the fusion core.

Subcommands are the modules of :mod:`fusion_ros.commands`; each defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. User errors (:class:`FusionError`) print one
line and exit 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from typing import Sequence

from fusion_ros.errors import FusionError
from fusion_ros.runtime import tune_malloc

__all__ = ["Parser", "build_parser", "main"]


class Parser(argparse.ArgumentParser):
    """argparse's parser, taking a negative number in scientific notation for a value, not an option.

    Before Python 3.14 argparse reads ``-1.3e-05`` (a homography's perspective term, as printed by numpy
    or pasted from a parameters file) as an unknown option, and ``--homography`` then "expected 9 arguments".
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand module registered."""
    import fusion_ros.commands as commands

    parser = Parser(prog="fusion-ros", description="Thermal + RGB image fusion for ROS 2 and offline use.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fusion-ros`` console script; returns the exit code."""
    tune_malloc()
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except FusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
