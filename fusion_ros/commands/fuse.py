"""``fusion-ros fuse``: fuse one thermal + visible image pair into an image file."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterator

from fusion_ros.commands import WEIGHTS_DIR_HELP, method_options
from fusion_ros.config import FusionConfig, build_config, parse_params_yaml
from fusion_ros.errors import ConfigError
from fusion_ros.fuser import Fuser
from fusion_ros.imageio import read_thermal, read_visible, write_image
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.thermal import ThermalConfig

NAME = "fuse"
HELP = "fuse one thermal + visible image pair"


def add_fuser_arguments(parser: argparse.ArgumentParser) -> None:
    """The Fuser's settings, the same in every command that builds one (``fuse``, ``bag``); each flag
    is a node parameter (:func:`~fusion_ros.config.parameter_table`), read by :func:`config_from_args`."""
    parser.add_argument("--method", default=DEFAULT_METHOD, help=f"fusion method (default {DEFAULT_METHOD}; see `fusion-ros methods`)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | fp16 | bf16")
    parser.add_argument("--weights-dir", type=Path, help=WEIGHTS_DIR_HELP)
    parser.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE",
                        help="option of the method (repeatable); METHOD.NAME=VALUE is taken too")
    parser.add_argument("--thermal-window", nargs=2, type=float, metavar=("LOW", "HIGH"), help="fixed thermal window instead of percentiles")
    parser.add_argument("--thermal-smoothing", type=float,
                        help="weight of the previous frame's thermal window (0: every frame on its own; default "
                        f"{ThermalConfig().smoothing}, as the node; no effect on a single pair)")
    parser.add_argument("--homography", nargs="+", metavar="H",
                        help="thermal→visible homography: 9 numbers row-major, or a parameters file holding "
                        "registration.homography (what `fusion-ros register --params-out` and the node's "
                        "registration.save_path write)")
    parser.add_argument("--resize", action="store_true",
                        help="with no homography, stretch a thermal image of another size over the visible one "
                        "(co-aligned cameras with the same field of view; otherwise such a pair is refused)")


def config_from_args(args: argparse.Namespace, **extra: Any) -> FusionConfig:
    """The validated config of :func:`add_fuser_arguments`' flags (plus ``extra`` parameter values),
    through the node's own :func:`~fusion_ros.config.build_config`."""
    values: dict[str, Any] = {
        "method": args.method,
        "device": args.device,
        "precision": args.precision,
        "weights_dir": str(args.weights_dir or ""),
        **{f"{args.method}.{k}": v for k, v in method_options(args.opt, [args.method]).get(args.method, {}).items()},
        "registration.resize": args.resize,
    }
    if args.thermal_window:
        values["thermal.normalization"] = "fixed"
        values["thermal.window"] = list(args.thermal_window)
    if args.thermal_smoothing is not None:
        values["thermal.smoothing"] = args.thermal_smoothing
    if args.homography:
        values["registration.homography"] = homography_argument(args.homography)
    return build_config({**values, **extra})


def homography_argument(tokens: list[str]) -> list[Any]:
    """``--homography``: 9 numbers, or one parameters file's ``registration.homography`` (checked by build_config)."""
    if len(tokens) == 1:
        path = Path(tokens[0]).expanduser()
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"--homography: give 9 numbers or a parameters file; cannot read {path}: {err.strerror}") from None
        values = parse_params_yaml(text)
        if "registration.homography" not in values:
            raise ConfigError(f"--homography: {path} sets no registration.homography")
        return list(values["registration.homography"])
    if len(tokens) != 9:
        raise ConfigError(f"--homography takes 9 numbers or one parameters file, got {len(tokens)} values")
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise ConfigError(f"--homography: {' '.join(tokens)} are not 9 numbers") from None


@contextlib.contextmanager
def step_progress(method: Any, desc: str, file: IO[str] | None = None) -> Iterator[None]:
    """While the block runs, feed a tqdm bar on ``file`` (default stderr) from ``method.progress(done, total)``.

    Only methods that report their steps have a ``progress`` attribute (the diffusion methods, whose one
    pair takes minutes); others are left alone. As tqdm's ``disable=None``, the bar is drawn only on a
    terminal, so logs and captured output stay clean. The method's previous callback is restored after.
    """
    if not hasattr(method, "progress"):
        yield
        return
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, unit="step", file=file or sys.stderr, disable=None, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    previous = method.progress
    method.progress = update
    try:
        yield
    finally:
        method.progress = previous
        bar.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ir", required=True, type=Path, help="thermal image (8/16-bit PNG/TIFF, or float TIFF)")
    parser.add_argument("--vis", required=True, type=Path, help="visible image (RGB or grey)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="fused image file to write")
    add_fuser_arguments(parser)
    parser.add_argument("--weights", type=Path, help="a checkpoint file for the method (sets its `weights` option)")


def run(args: argparse.Namespace) -> int:
    # validated before any file is read
    config = config_from_args(args, **({f"{args.method}.weights": str(args.weights)} if args.weights is not None else {}))
    ir = read_thermal(args.ir)
    vis = read_visible(args.vis)
    fuser = Fuser.from_config(config)
    start = time.perf_counter()
    with step_progress(fuser.method, f"{args.method} steps"):
        fused = fuser(ir, vis)
    ms = (time.perf_counter() - start) * 1000
    write_image(args.output, fused)
    print(f"{args.output} ({fused.shape[1]}x{fused.shape[0]}, {args.method} on {fuser.device}, {ms:.1f} ms)")
    return 0
