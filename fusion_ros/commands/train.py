"""``fusion-ros train TARGET …``: the training recipes of :mod:`fusion_ros.training`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

NAME = "train"
HELP = "train a method's network (self-supervised / two-stage recipes of the papers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    import fusion_ros.training as training

    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for info in sorted(pkgutil.iter_modules(training.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not a target
            continue
        mod = importlib.import_module(f"{training.__name__}.{info.name}")
        p = sub.add_parser(mod.TARGET, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_train=mod.run)


def run(args: argparse.Namespace) -> int:
    return int(args._train(args) or 0)
