"""``fusion-ros methods``: every method, whether it can run here, and why not."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusion_ros.commands import WEIGHTS_DIR_HELP
from fusion_ros.options import field_default
from fusion_ros.registry import DEFAULT_METHOD, get_method_class, list_methods
from fusion_ros.weights import default_weights_dir

NAME = "methods"
HELP = "list the fusion methods, their weights and availability"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-dir", type=Path, help=WEIGHTS_DIR_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="also list each method's options")


def run(args: argparse.Namespace) -> int:
    weights_dir = args.weights_dir or default_weights_dir()
    print(f"weights folder: {weights_dir}")  # the default depends on where the package runs from
    rows = list_methods(weights_dir)
    width = max(len(r.name) for r in rows) + (len(" (default)"))
    for r in rows:
        label = r.name + (" (default)" if r.name == DEFAULT_METHOD else "")
        state = "ready" if r.available else "unavailable"
        print(f"{label:<{width}}  {state:<11}  {r.description}")
        if r.cost:
            print(f"{'':<{width}}  {'':<11}  cost: {r.cost}")
        if r.needs_weights:
            print(f"{'':<{width}}  {'':<11}  weights: {', '.join(r.weight_files)}")
        if not r.available:
            print(f"{'':<{width}}  {'':<11}  why: {r.reason}")
        if args.verbose:
            for f in get_method_class(r.name).option_fields():
                print(f"{'':<{width}}  {'':<11}  --opt {f.name}={field_default(f)}  {f.metadata.get('help', '')}")
    return 0
