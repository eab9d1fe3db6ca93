"""``fusion-ros params``: the node's parameters file with every default, as shipped in ``config/fusion.yaml``."""

from __future__ import annotations

import argparse
import sys

from fusion_ros.config import render_yaml

NAME = "params"
HELP = "print a parameters file for fusion_node with every parameter, its default and what it does"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-name", default="/**/fusion_node", help="node key of the file (default: the node in any namespace)")


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render_yaml(args.node_name))
    return 0
