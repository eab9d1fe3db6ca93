"""One detection study: every detector on every image source of every labelled pair.

``fusion-ros evaluate --detector`` feeds it pair by pair (:meth:`DetectionStudy.add_pair`) with the
frames it already has — RGB, thermal and each method's fused frame, made once and shared with the
fusion metrics — plus the CLAHE-enhanced RGB baseline made here; at the end it scores each
(detector, source, class) and compares every source with RGB by a paired image bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fusion_ros.detection.ap import ClassScores, evaluate_images
from fusion_ros.detection.bootstrap import Difference, paired_bootstrap
from fusion_ros.detection.boxes import Detections
from fusion_ros.detection.enhance import clahe_rgb
from fusion_ros.detection.labels import ClassMap, GroundTruth, find_label_file, parse_class_map, read_labels
from fusion_ros.detection.runner import Detector
from fusion_ros.errors import ConfigError, InputError

__all__ = ["BASE_SOURCES", "DetectionConfig", "DetectionStudy"]

#: Image sources every study has, before the fused ones: the RGB frame, the enhanced RGB frame
#: (no thermal camera needed) and the thermal frame alone.
BASE_SOURCES: tuple[str, ...] = ("rgb", "rgb+clahe", "thermal")


@dataclass(frozen=True)
class DetectionConfig:
    """Detector side of an evaluation.

    Attributes:
        detectors: ONNX model files.
        format: output layout (``auto`` or an adapter name, :data:`~fusion_ros.detection.adapters.FORMATS`).
        classes: ``--classes`` text (:func:`~fusion_ros.detection.labels.parse_class_map`).
        input_size: network input (h, w) for models with a free input size.
        score_threshold: where recall and precision are read off.
        rounds, seed: paired-bootstrap resamples and generator seed.
    """

    detectors: tuple[Path, ...]
    format: str = "auto"
    classes: str | None = None
    input_size: tuple[int, int] | None = None
    score_threshold: float = 0.3
    rounds: int = 2000
    seed: int = 0


@dataclass
class DetectionStudy:
    """Detections collected pair by pair, scored at the end."""

    config: DetectionConfig
    labels_dir: Path
    detectors: list[Detector]
    classes: ClassMap
    sources: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    truths: list[GroundTruth] = field(default_factory=list)
    #: {(detector name, source): detections per image in ``images`` order}
    detections: dict[tuple[str, str], list[Detections]] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    #: pairs left out because a source had no frame (a --fused-dir folder missing that pair)
    incomplete: list[str] = field(default_factory=list)
    #: label names / YOLO ids outside the detector's classes, with how many files had them
    unknown: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, config: DetectionConfig, data: Path, fused_labels: Sequence[str]) -> "DetectionStudy":
        """Load the detectors and check ``data/labels`` exists, before any image is fused."""
        labels_dir = Path(data) / "labels"
        if not labels_dir.is_dir():
            raise InputError(f"--detector needs ground truth: {labels_dir} (PASCAL VOC .xml or YOLO .txt per pair) is missing")
        clash = sorted(set(BASE_SOURCES) & set(fused_labels))
        if clash:
            raise ConfigError(f"method label(s) {', '.join(clash)} clash with the detection baselines {', '.join(BASE_SOURCES)}")
        classes = parse_class_map(config.classes)
        detectors = [Detector(p, format=config.format, input_size=config.input_size) for p in config.detectors]
        stems = [d.name for d in detectors]
        if len(set(stems)) != len(stems):
            raise ConfigError(f"detector files need distinct names (their stems label the report): {', '.join(stems)}")
        return cls(config, labels_dir, detectors, classes, sources=[*BASE_SOURCES, *fused_labels])

    def skip_unlabelled(self, name: str) -> bool:
        """Count ``name`` as unlabelled and return True when it has no label file (nothing to detect against)."""
        if find_label_file(self.labels_dir, name) is None:
            self.unlabelled.append(name)
            return True
        return False

    def add_pair(self, name: str, rgb: np.ndarray, thermal: np.ndarray, fused: Mapping[str, np.ndarray]) -> bool:
        """Run every detector on this pair's sources; False (and counted) when a label file or a frame is missing."""
        if self.skip_unlabelled(name):
            return False
        path = find_label_file(self.labels_dir, name)
        if any(s not in fused for s in self.sources[len(BASE_SOURCES) :]):
            self.incomplete.append(name)
            return False
        truth, unknown = read_labels(path, rgb.shape[:2], self.classes)
        for u in unknown:
            self.unknown[u] = self.unknown.get(u, 0) + 1
        frames = {"rgb": rgb, "rgb+clahe": clahe_rgb(rgb), "thermal": thermal, **fused}
        for det in self.detectors:
            for source in self.sources:
                self.detections.setdefault((det.name, source), []).append(det.detect(frames[source]))
        self.images.append(name)
        self.truths.append(truth)
        return True

    @property
    def names(self) -> tuple[str, ...]:
        """The detector's class names in id order."""
        return self.classes.names

    def class_ids(self) -> list[int]:
        """Classes present in the ground truth, in id order."""
        return sorted({int(c) for t in self.truths for c in t.classes})

    def scores(self) -> dict[tuple[str, str, int], ClassScores]:
        """{(detector, source, class id): scores} over the labelled images."""
        out: dict[tuple[str, str, int], ClassScores] = {}
        classes = self.class_ids()
        for (det, source), dets in self.detections.items():
            for c, s in evaluate_images(dets, self.truths, classes, self.config.score_threshold).items():
                out[(det, source, c)] = s
        return out

    def differences(self, scores: Mapping[tuple[str, str, int], ClassScores]) -> dict[tuple[str, str, int], Difference]:
        """AP50 of each non-RGB source minus RGB's, per detector and class, with a paired bootstrap interval."""
        out: dict[tuple[str, str, int], Difference] = {}
        for (det, source, c), s in scores.items():
            if source == "rgb":
                continue
            base = scores[(det, "rgb", c)]
            out[(det, source, c)] = paired_bootstrap(base.matches, s.matches, self.config.rounds, self.config.seed)
        return out
