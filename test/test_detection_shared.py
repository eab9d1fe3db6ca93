"""The two shared COCO detectors on real LLVIP night pairs (skips without ../shared): decoding is
consistent — people found where they are labelled, boxes that scale with the image — never tuned AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion_ros import Fuser
from fusion_ros.detection import average_precision, iou_matrix, load_detector, read_labels
from fusion_ros.imageio import read_image, read_thermal

pytestmark = pytest.mark.slow

DETECTORS = ("yolox_nano", "nanodet_m_416")
PAIRS = ("010001", "010002", "010003", "010004", "010005")


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request: pytest.FixtureRequest, shared_dir: Path):
    return load_detector(shared_dir / "detectors" / f"{request.param}.onnx", threads=1)


def _pair(shared_dir: Path, name: str):
    root = shared_dir / "data" / "llvip"
    vi = read_image(root / "vi" / f"{name}.jpg")
    return vi, read_thermal(root / "ir" / f"{name}.jpg"), read_labels(root / "labels" / f"{name}.xml", vi.shape[:2])[0]


def test_finds_labelled_people_on_rgb_and_fused(detector, shared_dir: Path) -> None:
    vi, ir, truth = _pair(shared_dir, "010001")
    assert len(truth.boxes) == 6
    for image in (vi, Fuser("average")(ir, vi)):
        found = detector.detect(image).above(0.3).of_class(0)
        hits = (iou_matrix(truth.boxes, found.boxes) >= 0.5).any(axis=1)
        assert hits.sum() >= 3, f"{detector.name} matched {hits.sum()} of 6 labelled people"


def test_boxes_follow_the_image_scale(detector, shared_dir: Path) -> None:
    vi, _, _ = _pair(shared_dir, "010001")
    half = np.asarray(Image.fromarray(vi).resize((vi.shape[1] // 2, vi.shape[0] // 2), Image.BILINEAR))
    full = detector.detect(vi).above(0.3).of_class(0)
    small = detector.detect(half).above(0.3).of_class(0)
    assert len(full) >= 3 and len(small) >= 3
    overlap = iou_matrix(full.boxes[:3], small.boxes * 2).max(axis=1)
    assert (overlap > 0.8).all(), overlap


def test_ap_on_a_few_pairs_is_in_a_sane_range(detector, shared_dir: Path) -> None:
    vis, truths = [], []
    for name in PAIRS:
        vi, _, truth = _pair(shared_dir, name)
        vis.append(vi)
        truths.append(truth)
    dets = [detector.detect(v) for v in vis]
    ap = average_precision(dets, truths)
    assert 0.3 < ap <= 1.0
    assert average_precision(dets, truths, interpolation="11") == pytest.approx(ap, abs=0.1)
