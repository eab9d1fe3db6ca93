"""Rank fusion methods on a folder of registered infrared/visible pairs: metrics, tables, plots.

The logic behind ``fusion-ros evaluate``. A dataset folder holds ``ir/`` and ``vi/`` with
matching file names (the layout of TNO, RoadScene, LLVIP and VIFB as distributed). Each pair is
fused with every requested method through the :class:`~fusion_ros.fuser.Fuser` — the same code
path the node runs — and, optionally, fused images produced elsewhere (``--fused-dir``, e.g. the
published outputs stored with a benchmark) are scored beside them, so our methods and published
ones land in one table computed under one metric convention (:mod:`fusion_ros.metrics`).

Outputs in the report folder:

- ``per_image.csv``: one row per (image, method) with every metric and the fusion time;
- ``summary.md`` / ``summary.csv``: mean ± std per method, best value per column in bold;
- ``plots/<metric>.png``: a box plot per metric across methods;
- ``contact_sheet.png``: ir | vi | each method for a few pairs.

With detectors (:class:`~fusion_ros.detection.study.DetectionConfig`) and ``labels/`` beside
``ir/`` and ``vi/``, every detector also runs on the RGB frame, the CLAHE-enhanced RGB frame, the
thermal frame and each method's fused frame — the same fused array the metrics score — and
``detection.md`` / ``detection.csv`` / ``plots/pr_*.png`` are added
(:mod:`fusion_ros.detection.report`). ``metrics=()`` skips the fusion metrics.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fusion_ros.detection.study import DetectionConfig, DetectionStudy
from fusion_ros.errors import ConfigError, InputError
from fusion_ros.imageio import read_image, read_thermal
from fusion_ros.metrics import HIGHER_IS_BETTER, METRICS, PRESET_NOTES, SourcePair, get_convention

__all__ = [
    "DEFAULT_METRICS",
    "EvaluationConfig",
    "EvaluationResult",
    "IMAGE_SUFFIXES",
    "FusedSource",
    "ImagePair",
    "evaluate",
    "find_pairs",
    "load_source",
    "parse_fused_dirs",
    "write_report",
]

#: Metrics computed unless asked otherwise: all but FMI, which costs ~3 s per 768×576 image.
DEFAULT_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m != "FMI")

#: Image files a dataset folder may hold (lower-case suffixes).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImagePair:
    """One registered pair of a dataset folder."""

    name: str
    ir: Path
    vi: Path


@dataclass(frozen=True)
class FusedSource:
    """Fused images made elsewhere, scored as method ``label``: ``<folder>/<pair name>.<any image suffix>``."""

    label: str
    folder: Path


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how.

    Attributes:
        data: dataset folder with ``ir/`` and ``vi/``.
        methods: registered method names to fuse with.
        fused: published/external fused-image folders to score beside them.
        preset: metric convention (:data:`fusion_ros.metrics.PRESETS`).
        metrics: metric names, in table order.
        device: device for the Fuser.
        options: per-method option overrides ``{method: {name: value}}``.
        weights_dir: weights folder for network methods (default: the package's).
        limit: evaluate only the first ``limit`` pairs (0 = all).
        contact_pairs: how many pairs go on the contact sheet.
        save_fused: also write every fused image to ``<out>/fused/<method>/``.
        detection: detectors to run on every source (needs ``data/labels``); None: none.
    """

    data: Path
    methods: tuple[str, ...] = ()
    fused: tuple[FusedSource, ...] = ()
    preset: str = "vifb"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    device: str = "cpu"
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    weights_dir: Path | None = None
    limit: int = 0
    contact_pairs: int = 3
    save_fused: bool = False
    detection: DetectionConfig | None = None


@dataclass
class EvaluationResult:
    """Per-image rows and what the report needs beyond them."""

    config: EvaluationConfig
    labels: list[str]
    rows: list[dict[str, Any]]
    #: {label: fusion time per pair in ms} for the methods fused here.
    fuse_ms: dict[str, list[float]]
    #: [(pair name, ir, vi, {label: fused})] for the contact sheet.
    sheet: list[tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]]
    missing: dict[str, list[str]]
    #: detections of every detector on every source, when detectors were given
    detection: DetectionStudy | None = None

    def summary(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        """{label: {metric: (mean, std, n)}}, NaN-free values only (population std)."""
        out: dict[str, dict[str, tuple[float, float, int]]] = {}
        for label in self.labels:
            per = {}
            for metric in self.config.metrics:
                vals = [r[metric] for r in self.rows if r["method"] == label and math.isfinite(r[metric])]
                if vals:
                    per[metric] = (statistics.fmean(vals), statistics.pstdev(vals), len(vals))
                else:
                    per[metric] = (math.nan, math.nan, 0)
            out[label] = per
        return out


def find_pairs(data: str | Path, on_unmatched: Callable[[str], None] | None = None) -> list[ImagePair]:
    """The pairs of ``data/ir`` and ``data/vi`` whose file stems match, sorted by name.

    ``on_unmatched`` is told (one line) about images that have no partner of the same name, which are
    skipped: a typo in a file name should not silently shrink a dataset.
    """
    root = Path(data).expanduser()
    ir_dir, vi_dir = root / "ir", root / "vi"
    for d in (ir_dir, vi_dir):
        if not d.is_dir():
            raise InputError(f"folder {root} has no {d.name}/ subfolder (expected ir/ and vi/ with matching names)")

    def images(d: Path) -> dict[str, Path]:
        return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}

    ir, vi = images(ir_dir), images(vi_dir)
    names = sorted(ir.keys() & vi.keys())
    if not names:
        raise InputError(f"no matching image names in {ir_dir} and {vi_dir}")
    unmatched = sorted(ir.keys() ^ vi.keys())
    if unmatched and on_unmatched is not None:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        on_unmatched(f"{len(unmatched)} image(s) in {ir_dir} or {vi_dir} have no partner of the same name, skipped: {shown}")
    return [ImagePair(n, ir[n], vi[n]) for n in names]


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".PNG", ".JPG"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def parse_fused_dirs(specs: Sequence[str]) -> list[FusedSource]:
    """``[LABEL=]DIR`` strings to :class:`FusedSource`.

    A folder holding images is one method (labelled by its name); a folder holding only
    subfolders (like ``vifb/fused``) is one method per subfolder.
    """
    out: list[FusedSource] = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        folder = Path(path if sep else spec)
        if not folder.is_dir():
            raise InputError(f"--fused-dir {folder} is not a folder")
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
        if sep or has_images:
            out.append(FusedSource(label if sep else folder.name, folder))
        else:
            subs = sorted(p for p in folder.iterdir() if p.is_dir())
            if not subs:
                raise InputError(f"--fused-dir {folder} holds neither images nor method subfolders")
            out.extend(FusedSource(p.name, p) for p in subs)
    return out


def _squeeze_grey(img: np.ndarray) -> np.ndarray:
    """(H,W,3) with three equal channels → (H,W): grey data stored as RGB is grey."""
    if img.ndim == 3 and np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]):
        return img[..., 0]
    return img


def load_source(path: Path, thermal: bool) -> np.ndarray:
    """A dataset image as uint8: grey-stored-as-RGB becomes (H,W); colour thermal becomes its BT.601 grey."""
    img = read_thermal(path) if thermal else read_image(path)
    if img.dtype != np.uint8:
        raise InputError(f"{path} is {img.dtype}; evaluate expects 8-bit dataset images")
    return _squeeze_grey(img)


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``."""
    if k <= 0 or n == 0:
        return []
    k = min(k, n)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def evaluate(config: EvaluationConfig, progress: bool = True, out_dir: Path | None = None) -> EvaluationResult:
    """Fuse and score every pair; see the module docstring.

    Args:
        config: what to evaluate.
        progress: show a tqdm bar on stderr.
        out_dir: report folder (only needed with ``config.save_fused``).
    """
    from tqdm import tqdm

    from fusion_ros.config import FusionConfig
    from fusion_ros.fuser import Fuser
    from fusion_ros.thermal import INDEPENDENT_FRAMES

    get_convention(config.preset)  # an unknown preset fails here, before any work
    bad = [m for m in config.metrics if m not in METRICS]
    if bad:
        raise ConfigError(f"unknown metric(s) {', '.join(bad)}; valid metrics: {', '.join(METRICS)}")
    labels = list(config.methods) + [f.label for f in config.fused]
    if not labels and config.detection is None:
        raise ConfigError("nothing to evaluate: give --methods and/or --fused-dir")
    if not config.metrics and config.detection is None:
        raise ConfigError("nothing to score: give metrics and/or detectors")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"method label(s) used twice: {', '.join(dupes)} (name fused folders with LABEL=DIR)")
    pairs = find_pairs(config.data)
    if config.limit > 0:
        pairs = pairs[: config.limit]
    study = DetectionStudy.open(config.detection, config.data, labels) if config.detection else None

    # The pairs are unrelated images, not a stream.
    fusers = {
        m: Fuser.from_config(FusionConfig.create(
            m, device=config.device, options=dict(config.options.get(m, {})), weights_dir=config.weights_dir,
            thermal=INDEPENDENT_FRAMES,
        ))  # fmt: skip
        for m in config.methods
    }
    sheet_idx = set(_spread(len(pairs), config.contact_pairs))
    rows: list[dict[str, Any]] = []
    fuse_ms: dict[str, list[float]] = {m: [] for m in config.methods}
    missing: dict[str, list[str]] = {f.label: [] for f in config.fused}
    sheet = []
    bar = tqdm(total=len(pairs) * len(labels), desc="evaluate", unit="img", file=sys.stderr, disable=not progress)
    try:
        for i, pair in enumerate(pairs):
            if study is not None and not config.metrics and study.skip_unlabelled(pair.name):
                bar.update(len(labels))  # detection only: nothing to fuse this pair for
                continue
            ir = load_source(pair.ir, thermal=True)
            vi = load_source(pair.vi, thermal=False)
            if ir.shape[:2] != vi.shape[:2]:
                sizes = f"infrared is {ir.shape[1]}x{ir.shape[0]}, visible {vi.shape[1]}x{vi.shape[0]}"
                raise InputError(f"pair {pair.name}: {sizes}")
            scorer = SourcePair(ir, vi, config.preset) if config.metrics else None
            fused_here: dict[str, np.ndarray] = {}
            for label in labels:
                bar.set_postfix_str(f"{pair.name} {label}", refresh=False)
                ms = math.nan
                if label in fusers:
                    start = time.perf_counter()
                    fused = fusers[label](ir, vi)
                    ms = (time.perf_counter() - start) * 1000.0
                    fuse_ms[label].append(ms)
                    if config.save_fused and out_dir is not None:
                        from fusion_ros.imageio import write_image

                        write_image(Path(out_dir) / "fused" / label / f"{pair.name}.png", fused)
                else:
                    src = next(f for f in config.fused if f.label == label)
                    path = _find_image(src.folder, pair.name)
                    if path is None:
                        missing[label].append(pair.name)
                        bar.update()
                        continue
                    fused = read_image(path)
                    if fused.dtype != np.uint8:
                        raise InputError(f"{path} is {fused.dtype}; fused images must be 8-bit")
                scores = scorer.score(fused, config.metrics) if scorer is not None else {}
                rows.append({"image": pair.name, "method": label, **scores, "fuse_ms": ms})
                fused_here[label] = fused
                bar.update()
            if study is not None:
                bar.set_postfix_str(f"{pair.name} detectors", refresh=False)
                study.add_pair(pair.name, vi, ir, fused_here)
            if i in sheet_idx:
                sheet.append((pair.name, ir, vi, fused_here))
    finally:
        bar.close()
    return EvaluationResult(config, labels, rows, fuse_ms, sheet, missing, study)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "–" if math.isnan(value) else "∞"
    mag = abs(value)
    if mag >= 100:
        return f"{value:.1f}"
    if mag >= 10:
        return f"{value:.2f}"
    if mag >= 0.01 or mag == 0:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _best(summary: Mapping[str, Mapping[str, tuple[float, float, int]]], metric: str) -> float | None:
    vals = [s[metric][0] for s in summary.values() if math.isfinite(s[metric][0])]
    if not vals:
        return None
    return max(vals) if HIGHER_IS_BETTER[metric] else min(vals)


def _markdown(result: EvaluationResult, command: str | None) -> str:
    cfg = result.config
    summary = result.summary()
    n_pairs = len({r["image"] for r in result.rows}) or (len(result.detection.images) if result.detection else 0)
    lines = [
        f"# {'Fusion quality' if cfg.metrics else 'Detection'}: {Path(cfg.data).name}",
        "",
        f"- data: `{cfg.data}` ({n_pairs} pairs)",
    ]
    if cfg.metrics:
        lines += [
            f"- metric preset: `{cfg.preset}` (see `fusion_ros/metrics.py`)",
            "- cells: mean ± std over images; **bold** = best in the column (↑ higher is better, ↓ lower is better)",
        ]
    if command:
        lines.append(f"- command: `{command}`")
    for label, names in result.missing.items():
        if names:
            shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
            lines.append(f"- `{label}`: no fused image for {len(names)} pair(s): {shown}")
    lines.append("")
    if not cfg.metrics or not result.labels:
        return "\n".join(lines)
    arrows = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in cfg.metrics}
    header = ["method", *(f"{m} {arrows[m]}" for m in cfg.metrics)]
    has_ms = any(result.fuse_ms.values())
    if has_ms:
        header.append("ms/pair (median)")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    best = {m: _best(summary, m) for m in cfg.metrics}
    for label in result.labels:
        cells = [f"`{label}`"]
        for m in cfg.metrics:
            mean, std, _ = summary[label][m]
            text = f"{_fmt(mean)} ± {_fmt(std)}" if math.isfinite(mean) else "–"
            if best[m] is not None and math.isfinite(mean) and _fmt(mean) == _fmt(best[m]):
                text = f"**{text}**"
            cells.append(text)
        if has_ms:
            ms = result.fuse_ms.get(label) or []
            cells.append(f"{statistics.median(ms):.1f}" if ms else "(given)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _preset_note(cfg.preset), ""]
    return "\n".join(lines)


def _preset_note(preset: str) -> str:
    """The footnote under the table: a preset's numbers (VIFB's MSE equal to RMSE, SSIM above 1) look like
    bugs to a reader who does not know which toolbox they reproduce."""
    others = ", ".join(p for p in PRESET_NOTES if p != preset)
    return f"Metric preset `{preset}` follows {PRESET_NOTES[preset]}; other conventions: `--preset` {others}."


def _write_csvs(result: EvaluationResult, out: Path) -> None:
    metrics = list(result.config.metrics)
    with open(out / "per_image.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", *metrics, "fuse_ms"])
        for r in result.rows:
            ms = "" if math.isnan(r["fuse_ms"]) else f"{r['fuse_ms']:.3f}"
            w.writerow([r["image"], r["method"], *(f"{r[m]:.6g}" for m in metrics), ms])
    summary = result.summary()
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
        for label in result.labels:
            n = max((summary[label][m][2] for m in metrics), default=0)
            w.writerow([label, n, *(f"{summary[label][m][k]:.6g}" for m in metrics for k in (0, 1))])


def _plots(result: EvaluationResult, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    labels = result.labels
    for m in result.config.metrics:
        data = [[r[m] for r in result.rows if r["method"] == label and math.isfinite(r[m])] for label in labels]
        fig = Figure(figsize=(max(4.0, 0.8 * len(labels) + 2.0), 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.boxplot([d if d else [math.nan] for d in data], showmeans=True, meanprops={"marker": "D", "markersize": 4})
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        arrow = "higher is better" if HIGHER_IS_BETTER[m] else "lower is better"
        ax.set_title(f"{m} ({result.config.preset}; {arrow})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        fig.savefig(plots / f"{m}.png", dpi=100)


def _contact_sheet(result: EvaluationResult, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not result.sheet:
        return
    columns = ["ir", "vi", *result.labels]
    h, w = result.sheet[0][1].shape[:2]
    tile_w = 2.0
    tile_h = tile_w * h / w + 0.25
    fig = Figure(figsize=(tile_w * len(columns), tile_h * len(result.sheet)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(result.sheet), len(columns), squeeze=False)
    for r, (name, ir, vi, fused) in enumerate(result.sheet):
        images = [ir, vi, *(fused.get(label) for label in result.labels)]
        for c, (title, img) in enumerate(zip(columns, images)):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.savefig(out / "contact_sheet.png", dpi=100)


def write_report(result: EvaluationResult, out: Path, command: str | None = None) -> dict[str, Path]:
    """Write the CSVs, the Markdown summary, the plots and the contact sheet into ``out``.

    With detectors, the detection section is also appended to ``summary.md``.
    """
    from fusion_ros.detection.report import write_detection_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_csvs(result, out)
    text = _markdown(result, command)
    paths = {
        "per_image": out / "per_image.csv",
        "summary_csv": out / "summary.csv",
        "summary_md": out / "summary.md",
        "plots": out / "plots",
    }
    if result.detection is not None:
        detection_text, detection_paths = write_detection_report(result.detection, out)
        text = f"{text}\n{detection_text}"
        paths.update(detection_paths)
    (out / "summary.md").write_text(text)
    _plots(result, out)
    _contact_sheet(result, out)
    if result.sheet:
        paths["contact_sheet"] = out / "contact_sheet.png"
    return paths
