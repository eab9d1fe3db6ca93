"""``fusion-ros evaluate``: fuse a dataset folder with several methods and rank them by the
standard fusion metrics (CSV per image, Markdown summary, a plot per metric, a contact sheet) and,
with ``--detector``, by what unchanged detectors find on each fused frame against RGB, enhanced
RGB and thermal alone (AP tables with paired bootstrap intervals, PR curves)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fusion_ros.commands import WEIGHTS_DIR_HELP, at_least, method_options, parse_size
from fusion_ros.detection.adapters import FORMATS
from fusion_ros.detection.study import DetectionConfig
from fusion_ros.errors import ConfigError
from fusion_ros.evaluate import DEFAULT_METRICS, EvaluationConfig, evaluate, parse_fused_dirs, write_report
from fusion_ros.metrics import METRICS, PRESETS
from fusion_ros.registry import DEFAULT_METHOD, get_method_class

NAME = "evaluate"
HELP = "score fusion methods on a folder of ir/ + vi/ pairs: metrics table, plots, contact sheet, detector AP"


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _metrics(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_METRICS
    return () if text.strip().lower() == "none" else tuple(_split(text))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="dataset folder with ir/ and vi/ (matching file names)")
    parser.add_argument(
        "--methods",
        help=f"comma-separated methods to fuse with (default {DEFAULT_METHOD}, or none when --fused-dir is given)",
    )
    parser.add_argument(
        "--fused-dir",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="score fused images made elsewhere (DIR/<pair name>.*); a folder of method subfolders adds each (repeatable)",
    )
    parser.add_argument(
        "--preset",
        default="vifb",
        choices=sorted(PRESETS),
        help="metric convention: vifb (per-RGB-channel, VIFB MATLAB; default), cddfuse (CDDFuse/DDFM/EMMA Python "
        "evaluator), tang (Tang-lab MATLAB 2022, artefacts included), canonical (textbook)",
    )
    parser.add_argument(
        "--metrics",
        help=f"comma-separated metrics (default: {','.join(DEFAULT_METRICS)}; also available: "
        f"{','.join(m for m in METRICS if m not in DEFAULT_METRICS)}; 'none' for detection only)",
    )
    det = parser.add_argument_group("detection (needs DIR/labels: PASCAL VOC .xml or YOLO .txt per pair)")
    det.add_argument(
        "--detector",
        action="append",
        default=[],
        type=Path,
        metavar="MODEL.onnx",
        help="run this ONNX detector on RGB, CLAHE-enhanced RGB, thermal and each fused frame (repeatable)",
    )
    det.add_argument(
        "--detector-format",
        default="auto",
        choices=FORMATS,
        help="detector output layout (default: detected from the model's outputs)",
    )
    det.add_argument(
        "--detector-size",
        metavar="WxH",
        help="network input size for models whose input size is free (default: the model's own, else 640x640)",
    )
    det.add_argument(
        "--classes",
        help="the detector's class names in id order (default: COCO's 80), or label mappings onto COCO classes: "
        "YOLO ids '0=person,1=car' and/or VOC names 'pedestrian=person'",
    )
    det.add_argument("--score-threshold", type=float, default=0.3, help="score where recall/precision are read (default 0.3)")
    det.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    det.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--out", type=Path, help="report folder (default: ./evaluation/<data folder name>); a report already there is replaced")
    parser.add_argument("--device", default="cpu", help="device for fusion: cpu (default) | auto | cuda | cuda:N")
    parser.add_argument("--weights-dir", type=Path, help=WEIGHTS_DIR_HELP)
    parser.add_argument("--opt", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="option of one method (repeatable); NAME=VALUE when one method runs")
    parser.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all)")
    parser.add_argument("--contact-pairs", type=int, default=3, help="pairs shown on the contact sheet (default 3)")
    parser.add_argument("--save-fused", action="store_true", help="also write every fused image to <out>/fused/<method>/")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    fused = parse_fused_dirs(args.fused_dir)
    methods = _split(args.methods) if args.methods is not None else ([] if fused else [DEFAULT_METHOD])
    for m in methods:
        get_method_class(m)  # an unknown name fails before any image is read
    options = method_options(args.opt, methods)
    detection = None
    if args.detector:
        try:
            size = parse_size(args.detector_size, 32, 4096) if args.detector_size else None
        except ValueError as err:
            raise ConfigError(f"--detector-size: {err}") from None
        detection = DetectionConfig(
            detectors=tuple(args.detector),
            format=args.detector_format,
            classes=args.classes,
            input_size=(size[1], size[0]) if size else None,
            score_threshold=args.score_threshold,
            rounds=at_least("--bootstrap", args.bootstrap, 1),
            seed=args.seed,
        )
    elif args.classes or args.detector_size:
        raise ConfigError("--classes and --detector-size need --detector")
    config = EvaluationConfig(
        data=args.data,
        methods=tuple(methods),
        fused=tuple(fused),
        preset=args.preset,
        metrics=_metrics(args.metrics),
        device=args.device,
        options=options,
        weights_dir=args.weights_dir,
        limit=at_least("--limit", args.limit, 0),
        contact_pairs=at_least("--contact-pairs", args.contact_pairs, 0),
        save_fused=args.save_fused,
        detection=detection,
    )
    out = args.out or Path("evaluation") / Path(args.data).resolve().name
    if (out / "summary.md").exists():  # replaced like bench's and demo's outputs; said, so it is not a surprise
        print(f"replacing the report in {out}", file=sys.stderr)
    result = evaluate(config, progress=not args.quiet, out_dir=out)
    command = "fusion-ros " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == [NAME] else None
    paths = write_report(result, out, command=command)
    print((out / "summary.md").read_text())
    print(f"report: {out} ({', '.join(p.name for p in paths.values())})")
    return 0
