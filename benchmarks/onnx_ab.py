"""DeFusion's ONNX graph in the runtimes, variants side by side in one process, interleaved.

For questions of the form "is graph/compilation B faster than A": each variant is one
:class:`~fusion_ros.deploy.backends.OnnxRunner` (the runner the ``runtime`` option uses), every variant
gets the same seeded padded pair, and the timed calls go A, B, C, A, B, C, … so that load from other
processes hits all alike. Prints, per variant, the median and minimum wall time and the largest
difference from the first variant relative to its peak (the parity measure of ``test/test_backends.py``).

Run from the repository root::

    PYTHONPATH=. python benchmarks/onnx_ab.py --graphs G1.onnx[,G2.onnx] --runtimes openvino,onnxruntime \\
        --shapes dynamic,static --size 640x512 --threads 2 --repeats 7

``--graphs``: exported DeFusion graphs (``fusion-ros export --method defusion --format onnx --dynamic``,
or the method's cache); without it, both current forms of the graph (generic and OpenVINO's,
``fusion_ros.methods.defusion.backends.export_form``) of a seeded random released-size network are
written to a temporary folder. ``--shapes``: ``dynamic`` compiles the graph once for every size,
``static`` once for this size (``OnnxRunner(static_shapes=True)``, what the method uses). ``--size`` is
the frame size; the graph gets it reflect-padded by 16 pixels on every side, as in the method.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fusion_ros.deploy.backends import OnnxRunner

PAD = 16


def _default_graphs(directory: Path) -> list[Path]:
    """Both export forms of the released-size network with seeded random weights."""
    from fusion_ros.methods.defusion.backends import export_fuse_graph
    from fusion_ros.methods.defusion.network import EXPORT_FORMS
    from fusion_ros.methods.defusion.testing import tiny_net

    net = tiny_net(0, "released")
    return [export_fuse_graph(net, directory / f"defusion-fuse-{form}.onnx", form=form) for form in EXPORT_FORMS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/onnx_ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", default="", help="comma-separated DeFusion .onnx files (default: the current export)")
    p.add_argument("--runtimes", default="openvino,onnxruntime", help="comma-separated ONNX runtimes")
    p.add_argument("--shapes", default="dynamic,static", help="comma-separated: dynamic and/or static compilation")
    p.add_argument("--size", default="640x512", help="frame WxH before the 16-pixel padding (default 640x512)")
    p.add_argument("--threads", type=int, default=2, help="compute threads of every runtime (default 2)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per variant (default 7)")
    args = p.parse_args(argv)

    w, h = (int(v) for v in args.size.split("x"))
    g = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(1, 3, h + 2 * PAD, w + 2 * PAD, generator=g) for _ in range(2))
    with tempfile.TemporaryDirectory() as tmp:
        graphs = [Path(s) for s in args.graphs.split(",") if s] or _default_graphs(Path(tmp))
        variants = {
            f"{graph.name} {runtime} {shapes}": OnnxRunner(graph, runtime, torch.device("cpu"), threads=args.threads,
                                                           static_shapes=shapes == "static")
            for graph, runtime, shapes in itertools.product(graphs, args.runtimes.split(","), args.shapes.split(","))
        }
        outputs = {name: run(ir=ir, vis=vis)[0].numpy() for name, run in variants.items()}  # warm-up (compiles)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                t0 = time.perf_counter()
                run(ir=ir, vis=vis)
                times[name].append(time.perf_counter() - t0)
    ref = next(iter(outputs.values())).astype(np.float64)
    print(f"{args.size} (padded {w + 2 * PAD}x{h + 2 * PAD}), {args.threads} threads, {args.repeats} calls each, "
          f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print("| variant | median s | min s | max abs diff / max abs (first variant) |\n|---|---:|---:|---:|")
    for name, t in times.items():
        diff = float(np.abs(outputs[name] - ref).max() / np.abs(ref).max())
        print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
