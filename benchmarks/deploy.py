"""The network methods on this CPU, side by side: the authors' code, the exact torch path and each ONNX
runtime, idle and with one core saturated by another process; plus the weight-free default method with
1 and 2 torch threads under the same contention. One command, one Markdown table.

Run from the repository root::

    PYTHONPATH=. python benchmarks/deploy.py --authors-repo /tmp/dfref

``--authors-repo`` is a checkout of erfect2020/DecompositionForFusion (its ``models/`` is imported from
there; nothing of it lives in this repository); without it the authors' row is left out. DMFuse's
authors' code is not run: it hard-codes CUDA and peaks at 11-13 GB at 640x512 (see docs/RESULTS.md).

Each (method, implementation, size, threads) runs in a fresh child process, so its peak RSS (``ru_maxrss``,
over both phases) is its own: one warm-up call (which compiles the ONNX graph), ``--repeats`` timed calls
idle, then a busy-loop process is started (one core saturated) and the same calls are timed again. The
ONNX graphs are exported before, in another child (into a temporary cache shared by the run), so the peak
RSS is the steady state's; the export's own peak (a one-time cost on first use) is its own column.
``--ort-config`` / ``--ov-config`` override the runtimes' settings (``fusion_ros.deploy.backends``'s
``ORT_SESSION_CONFIG`` / ``OPENVINO_CONFIG``), e.g. ``--ort-config session.intra_op.allow_spinning=1`` to
measure spinning worker threads. Inputs are random grey pairs from a seeded
generator; the networks have random weights from a seeded generator (same compute as the released ones).

The "% conv peak" column divides the network's floating-point work per pair (counted by
``torch.utils.flop_counter`` on the meta device: convolutions, matrix products, attention) by the idle
median time and by the best fp32 throughput of one large convolution on this machine (measured first,
``benchmarks/defusion.py --conv-peak``'s 256->256 3x3 conv on 72x72): how far each implementation is
from what any fp32 implementation could reach here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defusion import authors_run, conv_peak, load_authors_class  # noqa: E402

NETWORKS = ("defusion", "dmfuse")
RUNTIMES = ("torch", "onnxruntime", "openvino")
ONNX_RUNTIMES = RUNTIMES[1:]
BURNER = "while True: pass"


def _pair(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)


def _network_call(spec: dict[str, Any]) -> Any:
    """A zero-argument callable doing one fused pair of ``spec``'s method/implementation/size."""
    from fusion_ros.options import build_options
    from fusion_ros.registry import get_method_class

    w, h = spec["size"]
    ir, vis = _pair(h, w)
    if spec["impl"] == "authors":
        from fusion_ros.methods.defusion.testing import tiny_net

        net = tiny_net(0, "released")
        theirs = load_authors_class(Path(spec["authors_repo"]))().eval()
        theirs.load_state_dict(net.state_dict(), strict=True)
        a, b = ir.expand(-1, 3, -1, -1).contiguous(), vis.expand(-1, 3, -1, -1).contiguous()
        return lambda: authors_run(theirs, a, b)
    cls = get_method_class(spec["method"])
    opts = build_options(cls.Options, {"runtime": spec["impl"]}, spec["method"])
    method = cls(opts, torch.device("cpu"), torch.float32, Path(spec["cache"]), random_init=True)
    return lambda: method.fuse(ir, vis)


def _default_call(spec: dict[str, Any]) -> Any:
    """One end-to-end frame of the weight-free default method (arrays in, array out)."""
    from fusion_ros.fuser import Fuser
    from fusion_ros.registry import DEFAULT_METHOD
    from fusion_ros.scenes import render_pair

    w, h = spec["size"]
    ir, rgb = render_pair(3.0, height=h, width=w)
    fuser = Fuser(DEFAULT_METHOD, device="cpu")
    return lambda: fuser(ir, rgb)


def _timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn()
        times.append(time.perf_counter() - t0)
    return times


def _configure(spec: dict[str, Any]) -> None:
    """Apply the run's runtime-setting overrides in this (child) process."""
    from fusion_ros.deploy import backends

    backends.ORT_SESSION_CONFIG.update(spec.get("ort_config", {}))
    backends.OPENVINO_CONFIG.update(spec.get("ov_config", {}))


def export_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Export the ONNX graphs the spec's row runs into the run's cache; returns the peak RSS. DeFusion's
    method exports the graph of its runtime's form when it is built; DMFuse's head is per size."""
    from fusion_ros.options import build_options
    from fusion_ros.registry import get_method_class

    cls = get_method_class(spec["method"])
    runtime = {"runtime": spec["impl"]} if spec["method"] == "defusion" else {}
    method = cls(build_options(cls.Options, runtime, spec["method"]), torch.device("cpu"), torch.float32, Path(spec["cache"]), random_init=True)
    if spec["method"] == "dmfuse":
        w, h = spec["size"]
        method.export_onnx(Path(spec["cache"]), (h, w))
    return {"export_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, time idle, start the burner, time again; returns the row."""
    from fusion_ros.runtime import tune_malloc

    tune_malloc()
    _configure(spec)
    torch.set_num_threads(spec["threads"])
    fn = _default_call(spec) if spec["method"] == "default" else _network_call(spec)
    with torch.inference_mode():
        fn()
    idle = _timed(fn, spec["repeats"])
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        time.sleep(0.5)
        busy = _timed(fn, spec["repeats"])
    finally:
        burner.kill()
        burner.wait()
    return {**spec, "idle": idle, "busy": busy, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run_child(flag: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run this script with ``flag`` on ``spec`` in a fresh process; its JSON answer."""
    out = subprocess.run([sys.executable, __file__, flag, json.dumps(spec)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{spec['method']} {spec['impl']} {spec['size']} ({flag}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ov_value(text: str) -> Any:
    """An OpenVINO property value from the command line: true/false, an int, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else text


def _settings(text: str, parse: Any) -> dict[str, Any]:
    """``KEY=VALUE,...`` → a dict, values through ``parse``."""
    pairs = [item.split("=", 1) for item in filter(None, text.split(","))]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"settings must be KEY=VALUE,...: {text!r}")
    return {key: parse(value) for key, value in pairs}


def flops_per_pair(method: str, size: tuple[int, int]) -> float:
    """Floating-point operations of one fused pair (counted on the meta device, nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    w, h = size
    counter = FlopCounterMode(display=False)
    with torch.device("meta"), torch.inference_mode():
        if method == "defusion":
            from fusion_ros.methods.defusion import DeFusionNet

            net, pad = DeFusionNet().eval(), 16
            x = torch.empty(1, 3, h + 2 * pad, w + 2 * pad)
            with counter:
                net.fuse(x, x)
        else:
            from fusion_ros.methods.dmfuse import CONFIGS, DMFuseHead, DMFuseModel, SR3UNet

            cfg = CONFIGS["quarter"]
            model = DMFuseModel(SR3UNet(cfg), DMFuseHead(cfg.feature_channels())).eval()
            ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
            x = torch.empty(1, 1, ph, pw)
            with counter:
                model(x, x, torch.empty(2, 3, 1), torch.empty(2, 3, 1, 3, ph, pw))
    return float(counter.get_total_flops())


def _p95(v: list[float]) -> float:
    return float(np.percentile(v, 95))


def table(rows: list[dict[str, Any]], peak_gflops: float) -> str:
    lines = [
        "| method | implementation | size | threads | n | idle median s | idle p95 s | 1 core busy median s | busy p95 s "
        "| busy/idle | peak RSS MiB | export peak MiB | GFLOP/pair | % conv peak |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mi, mb = statistics.median(r["idle"]), statistics.median(r["busy"])
        gflop = r.get("gflop")
        frac = f"{100 * gflop / mi / peak_gflops:.0f}" if gflop else "—"
        export = f"{r['export_rss_mib']:.0f}" if r.get("export_rss_mib") else "—"
        lines.append(
            f"| {r['method']} | {r['impl']} | {r['size'][0]}x{r['size'][1]} | {r['threads']} | {len(r['idle'])} | {mi:.3f} | "
            f"{_p95(r['idle']):.3f} | {mb:.3f} | {_p95(r['busy']):.3f} | {mb / mi:.2f} | {r['peak_rss_mib']:.0f} | {export} | "
            f"{f'{gflop:.1f}' if gflop else '—'} | {frac} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/deploy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--authors-repo", type=Path, help="checkout of erfect2020/DecompositionForFusion")
    p.add_argument("--sizes", default="256x256,640x512", help="comma-separated WxH (default 256x256,640x512)")
    p.add_argument("--methods", default="defusion,dmfuse,default", help="networks and/or 'default' (the weight-free default)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"implementations besides the authors' (default {','.join(RUNTIMES)})")
    p.add_argument("--repeats", type=int, default=5, help="timed DeFusion calls per phase (default 5)")
    p.add_argument("--dmfuse-repeats", type=int, default=2, help="timed DMFuse calls per phase (default 2)")
    p.add_argument("--default-repeats", type=int, default=30, help="timed calls of the default method per phase (default 30)")
    p.add_argument("--threads", default="2", help="comma-separated compute threads of the networks, one row each (default 2)")
    p.add_argument("--ort-config", default="", help="comma-separated KEY=VALUE ONNX Runtime session config entries over the defaults")
    p.add_argument("--ov-config", default="", help="comma-separated KEY=VALUE OpenVINO properties over the defaults (true/false/ints parsed)")
    p.add_argument("--skip", default="", help="comma-separated METHOD:IMPL:WxH rows to leave out (default: none)")
    p.add_argument("--out", type=Path, help="also write the table here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--export-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child or args.export_child:
        run = child if args.child else export_child
        sys.stdout.write("\n" + json.dumps(run(json.loads(args.child or args.export_child))))
        return 0

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    skip = set(filter(None, args.skip.split(",")))
    start, load_before = time.time(), Path("/proc/loadavg").read_text().split()[:3]
    thread_counts = [int(t) for t in args.threads.split(",")]
    ort_config, ov_config = _settings(args.ort_config, str), _settings(args.ov_config, _ov_value)
    torch.set_num_threads(max(thread_counts))
    peak = conv_peak(20)["best_gflops"]
    specs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as cache:
        for method in (m for m in methods if m in NETWORKS):
            impls = (["authors"] if method == "defusion" and args.authors_repo else []) + args.runtimes.split(",")
            for size in sizes:
                for impl in impls:
                    if f"{method}:{impl}:{size[0]}x{size[1]}" in skip:
                        continue
                    repeats = args.dmfuse_repeats if method == "dmfuse" else args.repeats
                    specs += [{"method": method, "impl": impl, "size": size, "threads": threads, "repeats": repeats, "cache": cache,
                               "authors_repo": str(args.authors_repo or ""), "ort_config": ort_config, "ov_config": ov_config}
                              for threads in thread_counts]
        if "default" in methods:
            for threads in (1, 2):
                specs.append({"method": "default", "impl": "torch (Fuser end to end)", "size": (640, 512), "threads": threads,
                              "repeats": args.default_repeats})
        rows = []
        exported: dict[tuple[Any, ...], float] = {}
        for spec in specs:
            env = dict(os.environ, FUSION_ROS_ONNX_CACHE=cache, OMP_NUM_THREADS=str(spec["threads"]))
            # DeFusion: one dynamic graph per runtime's form; DMFuse: its head per size, for every runtime.
            key = (spec["method"], spec["impl"]) if spec["method"] == "defusion" else (spec["method"], tuple(spec["size"]))
            if spec["impl"] in ONNX_RUNTIMES and key not in exported:
                exported[key] = _run_child("--export-child", spec, env)["export_rss_mib"]
            row = _run_child("--child", spec, env)
            if spec["impl"] in ONNX_RUNTIMES:
                row["export_rss_mib"] = exported[key]
            if row["method"] in NETWORKS:
                row["gflop"] = flops_per_pair(row["method"], tuple(row["size"])) / 1e9
            print(f"{row['method']:>8} {row['impl']:>12} {row['size']} {row['threads']} threads: idle {statistics.median(row['idle']):.3f} s, "
                  f"busy {statistics.median(row['busy']):.3f} s, {row['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
            rows.append(row)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    header = (
        f"`PYTHONPATH=. python {' '.join(['benchmarks/deploy.py', *sys.argv[1:]])}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; fp32 conv peak {peak:.0f} GFLOP/s; load average "
        f"{' '.join(load_before)} before, {' '.join(load_after)} after; {time.time() - start:.0f} s"
        + (f"; rows left out: {', '.join(sorted(skip))}" if skip else "")
    )
    text = header + "\n\n" + table(rows, peak) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
