"""DeFusion speed and memory benchmark: this package's network against the authors' class, same inputs.

Run ``PYTHONPATH=. python benchmarks/defusion.py --authors-repo DIR`` (from the repository root) where ``DIR`` is a checkout of
erfect2020/DecompositionForFusion (its ``models/`` package is imported from there at run time; nothing
of it lives in this repository). Without ``--authors-repo`` only this package's network is timed.

Timing: both networks get the same random weights and the same random [0,1] grey pairs, run
interleaved in one process (so machine load hits both alike), ``--repeats`` times after a warm-up;
the median and minimum wall time per pair are printed, the median process CPU time (all threads; on a
loaded machine it is steadier than wall time, more so with ``OMP_WAIT_POLICY=PASSIVE`` so that waiting
threads sleep instead of spinning), plus the maximum absolute difference of the
fused outputs from the authors' (0.0 means bit-identical). The authors' side is their ``test.py`` loop:
reflect-pad 16, forward (all four outputs), crop. Ours is timed three ways: the method's default path
(fused image only), the same four outputs as the authors', and the ``memory_format=channels_last`` path.

Memory (``--memory``): each implementation runs alone in a fresh subprocess; the peak resident set
size (``ru_maxrss``) of that process and its growth over the loaded-model baseline are reported.

``--malloc-tuning`` applies :func:`~fusion_ros.runtime.tune_malloc` first (process-wide,
so to both networks; the ``defusion`` method applies it by default, option ``tune_malloc``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from fusion_ros.methods.defusion import DeFusionNet, run_pipeline
from fusion_ros.methods.weight_init import generator_for
from fusion_ros.runtime import tune_malloc

__all__ = ["authors_run", "conv_peak", "load_authors_class", "main"]


def load_authors_class(repo: Path) -> type:
    """``UCTestSharedNetPro`` from a checkout of the authors' repository (imported from ``repo``)."""
    sys.path.insert(0, str(repo))
    from models.UCTestShareModelProCommon import UCTestSharedNetPro  # type: ignore[import-not-found]

    return UCTestSharedNetPro


def authors_run(net: torch.nn.Module, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """The authors' ``test.py`` loop body for one pair; returns the cropped fused output."""
    p = 16
    a = F.pad(ir, (p, p, p, p), mode="reflect")
    b = F.pad(vis, (p, p, p, p), mode="reflect")
    outs = [o[:, :, p:-p, p:-p] for o in net(a, b)]
    return outs[3]


def _pair(h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ir = torch.rand(1, 1, h, w, generator=g).expand(-1, 3, -1, -1).contiguous()
    vis = torch.rand(1, 1, h, w, generator=g).expand(-1, 3, -1, -1).contiguous()
    return ir, vis


def _build(authors_repo: Path | None) -> tuple[DeFusionNet, DeFusionNet, torch.nn.Module | None]:
    """(ours, ours in channels_last, authors' or None), all with the same seeded random weights."""
    ours = DeFusionNet()
    ours.reset_parameters(generator_for(0))
    ours.eval().set_onednn_fusion(True)
    nhwc = DeFusionNet().eval().set_onednn_fusion(True)
    nhwc.load_state_dict(ours.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    theirs = None
    if authors_repo is not None:
        theirs = load_authors_class(authors_repo)().eval()
        theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, nhwc, theirs


def _time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, *, warmup: bool = True
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and process-CPU milliseconds per call, ``repeats`` rounds over all ``fns`` (after a warm-up
    call of each unless the caller has just made one)."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[k][0].append((time.perf_counter() - t0) * 1000)
            times[k][1].append((time.process_time() - c0) * 1000)
    return times


def _speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    ours, nhwc, theirs = _build(args.authors_repo)
    rows = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        ir, vis = _pair(h, w, 1)
        fns: dict[str, Callable[[], Any]] = {
            "ours_fused_only": lambda: run_pipeline(ours, ir, vis),
            "ours_all_outputs": lambda: run_pipeline(ours, ir, vis, all_outputs=True),
            "ours_channels_last": lambda: run_pipeline(nhwc, ir, vis, channels_last=True),
        }
        if theirs is not None:
            fns["authors"] = lambda: authors_run(theirs, ir, vis)
        with torch.inference_mode():
            outs = {k: fn() for k, fn in fns.items()}  # also the warm-up of the timing below
            ref = outs["authors"] if theirs is not None else outs["ours_fused_only"]
            fused = {k: out[3] if k == "ours_all_outputs" else out for k, out in outs.items()}
            diffs = {k: out.sub(ref).abs().max().item() for k, out in fused.items()}
            times = _time_interleaved(fns, args.repeats, warmup=False)
        for k, (wall, cpu) in times.items():
            rows.append(
                {"size": size, "impl": k, "median_ms": round(statistics.median(wall), 1), "min_ms": round(min(wall), 1),
                 "median_cpu_ms": round(statistics.median(cpu), 1), "repeats": args.repeats,
                 "threads": torch.get_num_threads(), "max_abs_diff": diffs[k], "max_abs_ref": ref.abs().max().item()}
            )
    return rows


def conv_peak(repeats: int) -> dict[str, Any]:
    """fp32 throughput of one large, well-shaped convolution (256→256 3x3 on 72x72): a ceiling for
    what any fp32 implementation of this network can reach on the machine."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 256, 72, 72, generator=g)
    w = torch.randn(256, 256, 3, 3, generator=g)
    flop = 2 * 256 * 256 * 9 * 72 * 72
    with torch.inference_mode():
        times = _time_interleaved({"conv": lambda: F.conv2d(x, w, padding=1)}, max(repeats, 10))["conv"][0]
    return {"impl": "conv_256x256_3x3_72x72", "best_gflops": round(flop / (min(times) / 1000) / 1e9, 1),
            "median_gflops": round(flop / (statistics.median(times) / 1000) / 1e9, 1), "threads": torch.get_num_threads()}


def _memory_child(args: argparse.Namespace) -> dict[str, Any]:
    ours, nhwc, theirs = _build(args.authors_repo if args.impl == "authors" else None)
    w, h = (int(v) for v in args.sizes[0].split("x"))
    ir, vis = _pair(h, w, 1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.inference_mode():
        for _ in range(args.repeats):
            if args.impl == "authors":
                authors_run(theirs, ir, vis)
            elif args.impl == "ours_channels_last":
                run_pipeline(nhwc, ir, vis, channels_last=True)
            else:
                run_pipeline(ours, ir, vis)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": args.sizes[0], "impl": args.impl, "peak_rss_mib": round(peak), "growth_mib": round(peak - base)}


def _memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    impls = ["ours", "ours_channels_last"] + (["authors"] if args.authors_repo else [])
    for size in args.sizes:
        for impl in impls:
            cmd = [sys.executable, __file__, "--impl", impl, "--sizes", size,
                   "--repeats", "2", "--threads", str(args.threads)]
            if args.authors_repo:
                cmd += ["--authors-repo", str(args.authors_repo)]
            if args.malloc_tuning:
                cmd.append("--malloc-tuning")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one JSON object per line."""
    p = argparse.ArgumentParser(prog="benchmarks/defusion.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--authors-repo", type=Path, default=None, help="checkout of erfect2020/DecompositionForFusion")
    p.add_argument("--sizes", type=lambda s: s.split(","), default=["256x256", "640x480", "640x512"],
                   help="comma-separated WxH list (default 256x256,640x480,640x512)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="peak RSS per implementation, each in a fresh process")
    p.add_argument("--malloc-tuning", action="store_true", help="apply fusion_ros.runtime.tune_malloc() first")
    p.add_argument("--conv-peak", action="store_true", help="only measure a large fp32 conv's GFLOP/s (a ceiling)")
    p.add_argument("--impl", choices=("ours", "ours_channels_last", "authors"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.malloc_tuning:
        tune_malloc()
    if args.conv_peak:
        rows = [conv_peak(args.repeats)]
    elif args.impl:
        rows = [_memory_child(args)]
    else:
        rows = _memory(args) if args.memory else _speed(args)
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
