"""``fusion-ros bench``: median/p95 ms and peak memory per method and size, as a table and a chart."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from fusion_ros.bench import bench_in_subprocess, markdown_table, plot, results_json
from fusion_ros.commands import at_least, method_options, parse_size
from fusion_ros.errors import ConfigError
from fusion_ros.options import build_options
from fusion_ros.registry import get_method_class, method_names

NAME = "bench"
HELP = "benchmark methods end to end (arrays in, array out) at 640x512 and 1280x1024"


def _sizes(text: str) -> list[tuple[int, int]]:
    """``--sizes``: comma-separated WxH, each within the generated scenes' 16..4096 pixels."""
    try:
        return [parse_size(s, 16, 4096) for s in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"--sizes expects comma-separated {err}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default="", help="comma-separated methods (default: every weight-free method)")
    parser.add_argument("--sizes", default="640x512,1280x1024", help="comma-separated WxH (default 640x512,1280x1024)")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per method and size (after 3 warm-up calls)")
    parser.add_argument("--malloc", default="tuned", choices=["tuned", "default", "both"], help="glibc malloc settings of the child process")
    parser.add_argument("--opt", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="option of one method, e.g. defusion.runtime=openvino (repeatable); NAME=VALUE when one method runs")
    parser.add_argument("--out", type=Path, help="folder for bench.md, bench.png and bench.json")


def run(args: argparse.Namespace) -> int:
    names = [m.strip() for m in args.methods.split(",") if m.strip()] or [
        n for n in method_names() if get_method_class(n).weights_key is None
    ]
    for n in names:
        get_method_class(n)  # unknown names fail before any child starts
    sizes = _sizes(args.sizes)  # so do bad sizes
    repeats = at_least("--repeats", args.repeats, 1)  # and no timed call (no percentile of nothing)
    options = method_options(args.opt, names)
    for method, values in options.items():
        build_options(get_method_class(method).Options, values, method)  # bad options fail before any child starts
    mallocs = ["tuned", "default"] if args.malloc == "both" else [args.malloc]
    results = []
    for name in names:
        for w, h in sizes:
            for malloc in mallocs:
                r = bench_in_subprocess(name, w, h, args.device, repeats, malloc, options=options.get(name))
                print(f"{name:>10} {w}x{h} {malloc:>7}: median {r.median_ms:8.1f} ms  p95 {r.p95_ms:8.1f} ms  peak {r.peak_rss_mib:6.0f} MiB", file=sys.stderr)
                results.append(r)
    table = markdown_table(results)
    header = f"`fusion-ros {' '.join(sys.argv[1:])}` on {platform.node() or 'this machine'} ({platform.processor() or platform.machine()})"
    print(header + "\n\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.md").write_text(header + "\n\n" + table + "\n")
        (args.out / "bench.json").write_text(results_json(results))
        plot(results, args.out / "bench.png")
    return 0
