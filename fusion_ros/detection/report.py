"""The detection part of an evaluation report: Markdown table, CSV and precision–recall plots.

- ``detection.md``: per detector and class, one row per image source: AP50 (all-point and
  11-point), AP50:95, recall and precision at the score threshold, and ΔAP50 vs RGB with its paired
  bootstrap 95 % interval (bold when the interval excludes 0);
- ``detection.csv``: the same numbers, unrounded;
- ``detection_per_image.csv``: per detector, class, source and image, the true positives, false
  positives and misses at the score threshold (IoU 0.5) — where a source wins or loses;
- ``plots/pr_<detector>_<class>.png``: PR curves at IoU 0.5, one line per source.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from fusion_ros.detection.ap import ClassScores, pr_curve
from fusion_ros.detection.bootstrap import Difference
from fusion_ros.detection.study import DetectionStudy

__all__ = ["write_detection_report"]

Key = tuple[str, str, int]


def _num(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3f}"


def _delta(d: Difference | None) -> str:
    if d is None:
        return "(reference)"
    text = d.describe() if math.isfinite(d.low) else f"{d.delta:+.3f}"
    return f"**{text}**" if math.isfinite(d.low) and (d.low > 0 or d.high < 0) else text


def _markdown(study: DetectionStudy, scores: dict[Key, ClassScores], diffs: dict[Key, Difference]) -> str:
    cfg = study.config
    lines = [
        "## Detection",
        "",
        f"- labelled pairs: {len(study.images)} (`{study.labels_dir}`)",
        f"- recall / precision at score ≥ {cfg.score_threshold:g}, IoU 0.5; AP50:95 = mean all-point AP over IoU 0.50:0.05:0.95",
        f"- ΔAP50 vs RGB: paired image bootstrap, {cfg.rounds} resamples, seed {cfg.seed}, 95 % percentile "
        "interval; **bold** = interval excludes 0",
        "- `rgb+clahe`: CLAHE on the RGB frame's luminance (clip 3, 8×8 tiles): the baseline without a thermal camera",
    ]
    for det in study.detectors:
        lines.append(f"- detector {det.describe()}")
    if study.unlabelled:
        lines.append(f"- {len(study.unlabelled)} pair(s) without a label file left out: {', '.join(study.unlabelled[:5])}")
    if study.incomplete:
        lines.append(f"- {len(study.incomplete)} pair(s) missing a fused image left out: {', '.join(study.incomplete[:5])}")
    if study.unknown:
        shown = ", ".join(f"{k!r} ({v} files)" for k, v in sorted(study.unknown.items()))
        lines.append(f"- labels not among the detector's classes (ignored; map them with --classes): {shown}")
    for det in study.detectors:
        for c in study.class_ids():
            name = study.names[c] if c < len(study.names) else str(c)
            n_gt = scores[(det.name, "rgb", c)].n_gt
            lines += ["", f"### `{det.name}`: {name} ({n_gt} boxes)", ""]
            lines.append(
                "| image given to the detector | AP50 | AP50 (11-pt) | AP50:95 | recall | precision | "
                f"detections ≥ {cfg.score_threshold:g} | ΔAP50 vs RGB [95 % CI] |"
            )
            lines.append("|---|---|---|---|---|---|---|---|")
            for source in study.sources:
                s = scores[(det.name, source, c)]
                lines.append(
                    f"| `{source}` | {_num(s.ap50)} | {_num(s.ap50_11pt)} | {_num(s.ap50_95)} | {_num(s.recall)} | "
                    f"{_num(s.precision)} | {s.n_det} | {_delta(diffs.get((det.name, source, c)))} |"
                )
    lines.append("")
    return "\n".join(lines)


def _csv(study: DetectionStudy, scores: dict[Key, ClassScores], diffs: dict[Key, Difference], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["detector", "class", "source", "n_images", "n_gt", "n_det", "ap50", "ap50_11pt", "ap50_95",
                    "recall", "precision", "delta_ap50_vs_rgb", "delta_low", "delta_high"])  # fmt: skip
        for (det, source, c), s in scores.items():
            d = diffs.get((det, source, c))
            name = study.names[c] if c < len(study.names) else str(c)
            extra = [f"{d.delta:.6g}", f"{d.low:.6g}", f"{d.high:.6g}"] if d else ["0", "", ""]
            w.writerow([det, name, source, len(study.images), s.n_gt, s.n_det,
                        *(f"{v:.6g}" for v in (s.ap50, s.ap50_11pt, s.ap50_95, s.recall, s.precision)), *extra])  # fmt: skip


def _per_image_csv(study: DetectionStudy, scores: dict[Key, ClassScores], path: Path) -> None:
    thr = study.config.score_threshold
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["detector", "class", "source", "image", "n_gt", "tp", "fp", "missed"])
        for (det, source, c), s in scores.items():
            name = study.names[c] if c < len(study.names) else str(c)
            for image, m in zip(study.images, s.matches):
                above = (m.scores >= thr) & ~m.ignored[0]
                tp = int((m.tp[0] & above).sum())
                w.writerow([det, name, source, image, m.npos, tp, int(above.sum()) - tp, m.npos - tp])


def _plots(study: DetectionStudy, scores: dict[Key, ClassScores], folder: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for det in study.detectors:
        for c in study.class_ids():
            name = study.names[c] if c < len(study.names) else str(c)
            fig = Figure(figsize=(5.0, 4.0), layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            for source in study.sources:
                s = scores[(det.name, source, c)]
                recall, precision, _ = pr_curve(s.matches)
                style = "--" if source in ("rgb", "rgb+clahe", "thermal") else "-"
                ax.plot(recall, precision, style, label=f"{source} (AP50 {_num(s.ap50)})", linewidth=1.2)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_title(f"{det.name}: {name}, IoU 0.5", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
            path = folder / f"pr_{re.sub(r'[^A-Za-z0-9_.-]+', '_', det.name)}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
            fig.savefig(path, dpi=100)
            paths.append(path)
    return paths


def write_detection_report(study: DetectionStudy, out: Path) -> tuple[str, dict[str, Path]]:
    """Score the study and write ``detection.md``, ``detection.csv`` and the PR plots into ``out``.

    Returns the Markdown text and the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scores = study.scores()
    diffs = study.differences(scores)
    text = _markdown(study, scores, diffs)
    (out / "detection.md").write_text(text)
    _csv(study, scores, diffs, out / "detection.csv")
    _per_image_csv(study, scores, out / "detection_per_image.csv")
    _plots(study, scores, out / "plots")
    return text, {
        "detection_md": out / "detection.md",
        "detection_csv": out / "detection.csv",
        "detection_per_image": out / "detection_per_image.csv",
    }
