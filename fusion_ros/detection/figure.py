"""The README's detection picture: a detector's boxes on RGB and on fused frames of the generated
night street (:mod:`fusion_ros.scenes`), one row per detector — made from the project's own scene,
so it can be regenerated anywhere a detector file exists::

    python -m fusion_ros.detection.figure --detector yolox_nano.onnx --detector nanodet_m_416.onnx \\
        --out docs/img/detections.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from fusion_ros.detection.draw import class_counts, counts_text, draw_detections
from fusion_ros.detection.runner import load_detector

__all__ = ["detection_figure", "main"]


def detection_figure(
    detectors: Sequence[Path], methods: Sequence[str], out: Path, t: float = 2.0, size: tuple[int, int] = (512, 640), threshold: float = 0.3
) -> dict[tuple[str, str], str]:
    """Write the picture to ``out``; returns {(detector, image): counts text} as drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fusion_ros.fuser import Fuser
    from fusion_ros.scenes import render_pair

    thermal, rgb = render_pair(t, size[0], size[1], 0)
    images: list[tuple[str, np.ndarray]] = [("RGB", rgb)] + [(m, Fuser(m)(thermal, rgb)) for m in methods]
    fig = Figure(figsize=(3.2 * len(images), 2.75 * len(detectors)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(detectors), len(images), squeeze=False)
    drawn = {}
    for r, path in enumerate(detectors):
        det = load_detector(path)
        for c, (name, image) in enumerate(images):
            found = det.detect(image)
            drawn[(det.name, name)] = counts_text(class_counts(found, threshold))
            ax = axes[r][c]
            ax.imshow(draw_detections(image, found, threshold))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {drawn[(det.name, name)]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(det.name, fontsize=9)
    fig.suptitle(f"generated night street t={t:g} s, boxes with score ≥ {threshold:g}", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    return drawn


def main(argv: Sequence[str] | None = None) -> int:
    from fusion_ros.registry import DEFAULT_METHOD

    parser = argparse.ArgumentParser(prog="python -m fusion_ros.detection.figure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", action="append", required=True, type=Path, help="ONNX detector (repeatable: one row each)")
    parser.add_argument("--methods", default=f"average,{DEFAULT_METHOD}", help="fused columns after RGB (default: average and the default method)")
    parser.add_argument("--t", type=float, default=2.0, help="scene time in seconds (default 2)")
    parser.add_argument("--threshold", type=float, default=0.3, help="score threshold of the drawn boxes (default 0.3)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    for (det, image), text in detection_figure(args.detector, methods, args.out, args.t, threshold=args.threshold).items():
        print(f"{det} on {image}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
