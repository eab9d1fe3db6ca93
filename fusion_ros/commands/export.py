"""``fusion-ros export``: a network method's inference as ONNX graphs, for ONNX Runtime, OpenVINO or TensorRT."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusion_ros.commands import WEIGHTS_DIR_HELP, method_options, parse_size
from fusion_ros.deploy.export import read_metadata
from fusion_ros.errors import ConfigError
from fusion_ros.fuser import create_method
from fusion_ros.registry import get_method_class, method_names

NAME = "export"
HELP = "export a network method's inference graphs to ONNX (checked, with options and input contract as metadata)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    networks = [n for n in method_names() if hasattr(get_method_class(n), "export_onnx")]
    parser.add_argument("--method", required=True, choices=networks, help="network method to export")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="graph format (default onnx)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--size", help="frame size WxH the graphs are fixed to")
    size.add_argument("--dynamic", action="store_true", help="graphs for any frame size (where the network allows it)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder to write the .onnx files to")
    parser.add_argument("--weights-dir", type=Path, help=WEIGHTS_DIR_HELP)
    parser.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE",
                        help="method option recorded in the graphs (repeatable); METHOD.NAME=VALUE is taken too")
    parser.add_argument("--random-weights", action="store_true", help="export with random weights (same graph; for trying the runtimes)")


def run(args: argparse.Namespace) -> int:
    size = None
    if args.size:
        try:
            width, height = parse_size(args.size, 16, 8192)
        except ValueError as err:
            raise ConfigError(f"--size expects {err}") from None
        size = (height, width)
    options = method_options(args.opt, [args.method]).get(args.method, {})
    method = create_method(args.method, device=torch.device("cpu"), dtype=torch.float32, weights_dir=args.weights_dir,
                           options=options, random_init=args.random_weights)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in method.export_onnx(args.output, size):
        meta = read_metadata(path)
        print(f"{path}  ({path.stat().st_size / 2**20:.1f} MiB, checked)\n  inputs: {meta['inputs']}\n  outputs: {meta['outputs']}")
    return 0
