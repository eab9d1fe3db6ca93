"""``fusion-ros evaluate --detector`` end to end with a constant detector, whose AP is known exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from detection_graphs import constant_model
from PIL import Image

from fusion_ros.cli import main


@pytest.fixture()
def labelled(tmp_path: Path) -> Path:
    """Three 64x64 pairs: ``a`` labelled in VOC xml, ``b`` in YOLO txt, ``c`` unlabelled."""
    rng = np.random.default_rng(0)
    data = tmp_path / "labelled"
    for sub in ("ir", "vi", "labels"):
        (data / sub).mkdir(parents=True)
    for name in "abc":
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(data / "ir" / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / "vi" / f"{name}.png")
    (data / "labels" / "a.xml").write_text(
        "<annotation><object><name>person</name><bndbox><xmin>10</xmin><ymin>10</ymin>"
        "<xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>"
    )
    (data / "labels" / "b.txt").write_text("0 0.78125 0.78125 0.3125 0.3125\n")  # (40, 40, 60, 60)
    return data


@pytest.fixture()
def constant_detector(tmp_path: Path) -> Path:
    """A 64x64 'boxes' model that reports the same two people in every image."""
    boxes = np.array([[[10, 10, 30, 30], [40, 40, 60, 60]]], np.float32)
    scores = np.array([[0.9, 0.4]], np.float32)
    classes = np.array([[0, 0]], np.int64)
    return constant_model(tmp_path / "const.onnx", {"boxes": boxes, "scores": scores, "classes": classes}, (1, 3, 64, 64))


def test_detection_report_has_every_source_with_the_worked_ap(labelled: Path, constant_detector: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code = main([
        "evaluate", "--data", str(labelled), "--methods", "average", "--metrics", "none",
        "--detector", str(constant_detector), "--bootstrap", "50", "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert code == 0
    with open(out / "detection.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source"] for r in rows] == ["rgb", "rgb+clahe", "thermal", "average"]
    # Sorted: .9 TP (a), .9 FP (b), .4 FP (a), .4 TP (b) over 2 boxes → AP 1·½ + ½·½; at score ≥ 0.3: R 1, P ½.
    for r in rows:
        assert (r["detector"], r["class"], r["n_images"], r["n_gt"], r["n_det"]) == ("const", "person", "2", "2", "4")
        assert float(r["ap50"]) == pytest.approx(0.75)
        assert (float(r["recall"]), float(r["precision"])) == (pytest.approx(1.0), pytest.approx(0.5))
    assert all(float(r["delta_ap50_vs_rgb"]) == 0.0 for r in rows)
    with open(out / "detection_per_image.csv") as fh:
        per_image = [r for r in csv.DictReader(fh) if r["source"] == "average"]
    # a: the 0.9 box is its person, the 0.4 box a false alarm; b: the other way round.
    assert [(r["image"], r["n_gt"], r["tp"], r["fp"], r["missed"]) for r in per_image] == [("a", "1", "1", "1", "0"), ("b", "1", "1", "1", "0")]
    text = (out / "summary.md").read_text()
    assert "1 pair(s) without a label file left out: c" in text and "`rgb+clahe`" in text
    assert (out / "plots" / "pr_const_person.png").is_file()


def test_detection_inputs_fail_clearly(labelled: Path, constant_detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_labels = tmp_path / "nolabels"
    (no_labels / "ir").mkdir(parents=True)
    (no_labels / "vi").mkdir()
    for sub in ("ir", "vi"):
        (no_labels / sub / "a.png").write_bytes((labelled / sub / "a.png").read_bytes())
    assert main(["evaluate", "--data", str(no_labels), "--detector", str(constant_detector), "--quiet", "--out", str(tmp_path / "o")]) == 1
    assert "labels" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(labelled), "--classes", "0=person", "--quiet", "--out", str(tmp_path / "o")]) == 1
    assert "need --detector" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_figure_draws_each_detector_on_rgb_and_fused(constant_detector: Path, tmp_path: Path) -> None:
    from fusion_ros.detection.figure import detection_figure

    out = tmp_path / "fig.png"
    drawn = detection_figure([constant_detector], ["average"], out, size=(128, 160))
    assert drawn == {("const", "RGB"): "2 person", ("const", "average"): "2 person"}
    assert Image.open(out).size[0] > 100


def test_pairs_missing_a_fused_image_are_left_out_and_counted(labelled: Path, constant_detector: Path, tmp_path: Path) -> None:
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "a.png").write_bytes((labelled / "vi" / "a.png").read_bytes())  # no fused image for b
    out = tmp_path / "report"
    code = main([
        "evaluate", "--data", str(labelled), "--fused-dir", f"published={ext}", "--metrics", "none",
        "--detector", str(constant_detector), "--bootstrap", "20", "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert code == 0
    with open(out / "detection.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source"] for r in rows] == ["rgb", "rgb+clahe", "thermal", "published"]
    assert {r["n_images"] for r in rows} == {"1"}
    assert "1 pair(s) missing a fused image left out: b" in (out / "detection.md").read_text()
