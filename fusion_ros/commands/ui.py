"""``fusion-ros ui``: the comparison page (:mod:`fusion_ros.ui.app`) served by Streamlit on localhost."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import fusion_ros
from fusion_ros.commands import WEIGHTS_DIR_HELP
from fusion_ros.errors import DependencyError, InputError

NAME = "ui"
HELP = "open a local web page to compare fusion methods on image pairs and tune their options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8501, help="localhost port (default 8501)")
    parser.add_argument("--data", type=Path, help="folder with ir/ and vi/ image pairs of the same names")
    parser.add_argument("--weights-dir", type=Path, help=WEIGHTS_DIR_HELP)
    parser.add_argument("--detector", type=Path, help="ONNX detector: its boxes are drawn on the RGB and fused frames")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default localhost only)")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (headless: no browser is opened, no telemetry)."""
    app = Path(fusion_ros.__file__).resolve().parent / "ui" / "app.py"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless", "true",
        "--server.address", args.address,
        "--server.port", str(args.port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--",
    ]  # fmt: skip
    if args.data is not None:
        cmd += ["--data", str(args.data.expanduser().resolve())]
    if args.weights_dir is not None:
        cmd += ["--weights-dir", str(args.weights_dir.expanduser().resolve())]
    if args.detector is not None:
        cmd += ["--detector", str(args.detector.expanduser().resolve())]
    return cmd


def streamlit_env() -> dict[str, str]:
    """This environment with ``PYTHONPATH`` led by this fusion_ros's parent folder, so the app
    imports the same copy (a checkout or an install) as the command that starts it."""
    env = dict(os.environ)
    root = str(Path(fusion_ros.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("streamlit") is None:
        raise DependencyError("streamlit is not installed: pip install streamlit==1.67.0 (see requirements.txt)")
    if args.data is not None and not args.data.is_dir():
        raise InputError(f"--data {args.data} is not a folder")
    if args.detector is not None and not args.detector.is_file():
        raise InputError(f"--detector {args.detector} is not a file")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1-65535, got {args.port}")
    print(f"fusion-ros ui: http://{args.address}:{args.port} (Ctrl+C to stop)", file=sys.stderr, flush=True)
    cmd = streamlit_command(args)
    # Become the server (exec, not a child): Ctrl+C, SIGTERM and process managers reach it directly
    # and no orphaned server is left behind when this process is stopped.
    os.execve(cmd[0], cmd, streamlit_env())
    return 0  # not reached
