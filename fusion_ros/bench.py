"""Speed and memory of the fusion methods, end to end from arrays to array.

Each (method, size) runs in a fresh child process, so its peak memory is its own and one
method's allocator state cannot speed up or slow down the next.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["BenchResult", "bench_in_subprocess", "markdown_table", "plot", "run_one"]


@dataclass(frozen=True)
class BenchResult:
    """Timing of one method at one size; memory in MiB."""

    method: str
    options: str
    width: int
    height: int
    device: str
    malloc: str
    random_weights: bool
    median_ms: float
    p95_ms: float
    repeats: int
    peak_rss_mib: float
    peak_over_idle_mib: float
    cuda_peak_mib: float | None = None


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(method: str, width: int, height: int, device: str, repeats: int, options: dict | None = None) -> BenchResult:
    """Time ``Fuser(method)`` on a synthetic 16-bit thermal + RGB pair in *this* process."""
    import torch

    from fusion_ros.fuser import Fuser
    from fusion_ros.registry import get_method_class
    from fusion_ros.runtime import tune_malloc
    from fusion_ros.scenes import render_pair
    from fusion_ros.weights import default_weights_dir

    tuned = tune_malloc()
    ir, rgb = render_pair(3.0, height=height, width=width)
    idle = _rss_mib()
    random_weights = get_method_class(method).unavailable_reason(default_weights_dir()) is not None
    fuser = Fuser(method, device=device, options=options, random_init=random_weights)
    cuda = fuser.device.type == "cuda"
    for _ in range(min(3, repeats)):
        fuser(ir, rgb)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fuser(ir, rgb)  # returns a host array, so CUDA work is complete when it returns
        times.append((time.perf_counter() - start) * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(
        method=method, options=",".join(f"{k}={v}" for k, v in (options or {}).items()), width=width, height=height, device=str(fuser.device),
        malloc="tuned" if tuned else "default", random_weights=random_weights,
        median_ms=float(np.median(times)), p95_ms=float(np.percentile(times, 95)), repeats=repeats,
        peak_rss_mib=peak, peak_over_idle_mib=peak - idle,
        cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    )


def bench_in_subprocess(
    method: str, width: int, height: int, device: str, repeats: int, malloc: str = "tuned", timeout: float = 3600,
    options: dict | None = None,
) -> BenchResult:
    """:func:`run_one` in a child process (``malloc='default'`` leaves glibc's malloc untouched)."""
    env = dict(os.environ)
    if malloc == "default":
        env["FUSION_ROS_MALLOC"] = "default"
    code = (
        "import json, dataclasses, sys; from fusion_ros.bench import run_one; "
        f"r = run_one({method!r}, {width}, {height}, {device!r}, {repeats}, {dict(options or {})!r}); "
        "sys.stdout.write('\\n' + json.dumps(dataclasses.asdict(r)))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark of {method} at {width}x{height} failed:\n{out.stderr[-2000:]}")
    return BenchResult(**json.loads(out.stdout.strip().splitlines()[-1]))


def markdown_table(results: Sequence[BenchResult]) -> str:
    """Results as a Markdown table (one row per method, size and allocator)."""
    lines = [
        "| method | options | size | device | malloc | median ms | p95 ms | peak RSS MiB | peak over idle MiB | note |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        note = "random weights (same compute)" if r.random_weights else ""
        if r.cuda_peak_mib is not None:
            note = f"CUDA peak {r.cuda_peak_mib:.0f} MiB " + note
        lines.append(
            f"| {r.method} | {r.options} | {r.width}x{r.height} | {r.device} | {r.malloc} | {r.median_ms:.1f} | {r.p95_ms:.1f} "
            f"| {r.peak_rss_mib:.0f} | {r.peak_over_idle_mib:.0f} | {note} |"
        )
    return "\n".join(lines)


def plot(results: Sequence[BenchResult], path: Path) -> None:
    """Bar chart of median ms per pair, one group per method, one bar per size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r.method for r in results))
    sizes = list(dict.fromkeys(f"{r.width}x{r.height}" for r in results))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 3.6))
    width = 0.8 / max(len(sizes), 1)
    for i, size in enumerate(sizes):
        vals = [next((r.median_ms for r in results if r.method == m and f"{r.width}x{r.height}" == size), np.nan) for m in methods]
        ax.bar(np.arange(len(methods)) + i * width, vals, width, label=size)
    ax.set_xticks(np.arange(len(methods)) + width * (len(sizes) - 1) / 2, methods)
    ax.set_yscale("log")
    ax.set_ylabel("median ms per pair")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_json(results: Sequence[BenchResult]) -> str:
    """Machine-readable copy of the results."""
    return json.dumps([asdict(r) for r in results], indent=1)
