"""``fusion-ros evaluate`` end to end on a tiny generated dataset (no ../shared needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion_ros.cli import main
from fusion_ros.evaluate import find_pairs, parse_fused_dirs
from fusion_ros.metrics import PRESET_NOTES, PRESETS, compute_metrics

NAMES = ("a01", "b02", "c03")


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """ir/ (grey PNG) + vi/ (colour JPEG) with matching names, and a folder of 'published' fused images."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    data = tmp_path / "tiny"
    for sub in ("ir", "vi", "published/ext"):
        (data / sub).mkdir(parents=True)
    for k, name in enumerate(NAMES):
        ir = np.clip(30 + 200 * np.exp(-((xx - 20 - 10 * k) ** 2 + (yy - 24) ** 2) / 60.0) + rng.normal(0, 3, xx.shape), 0, 255)
        vi = np.stack([np.clip(100 + 80 * np.sin(xx / (3.0 + c)) + rng.normal(0, 5, xx.shape), 0, 255) for c in range(3)], -1)
        Image.fromarray(ir.astype(np.uint8)).save(data / "ir" / f"{name}.png")
        Image.fromarray(vi.astype(np.uint8)).save(data / "vi" / f"{name}.jpg", quality=95)
        ext = np.maximum(ir[..., None], vi).astype(np.uint8)
        Image.fromarray(ext).save(data / "published" / "ext" / f"{name}.png")
    (data / "ir" / "unpaired.png").write_bytes((data / "ir" / "a01.png").read_bytes())
    return data


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_evaluate_writes_the_full_report(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code = main([
        "evaluate", "--data", str(dataset), "--methods", "pyramid,average",
        "--fused-dir", str(dataset / "published"), "--preset", "vifb",
        "--metrics", "EN,SD,MI,Qabf,SSIM,Nabf", "--out", str(out), "--save-fused", "--quiet",
    ])  # fmt: skip
    assert code == 0
    rows = _rows(out / "per_image.csv")
    assert [(r["image"], r["method"]) for r in rows] == [(n, m) for n in NAMES for m in ("pyramid", "average", "ext")]
    assert list(rows[0]) == ["image", "method", "EN", "SD", "MI", "Qabf", "SSIM", "Nabf", "fuse_ms"]
    assert all(float(r["fuse_ms"]) > 0 for r in rows if r["method"] != "ext")
    assert all(r["fuse_ms"] == "" for r in rows if r["method"] == "ext")

    # The CSV holds exactly what the metrics module gives for the saved fused images.
    ir = np.asarray(Image.open(dataset / "ir" / "b02.png"))
    vi = np.asarray(Image.open(dataset / "vi" / "b02.jpg"))
    fused = np.asarray(Image.open(out / "fused" / "pyramid" / "b02.png"))
    assert fused.shape == vi.shape
    row = next(r for r in rows if r["image"] == "b02" and r["method"] == "pyramid")
    expected = compute_metrics(ir, vi, fused, "vifb", ["EN", "Qabf", "Nabf"])
    for m, v in expected.items():
        assert float(row[m]) == pytest.approx(v, rel=1e-5)

    summary = (out / "summary.md").read_text()
    assert "| method | EN ↑ | SD ↑ | MI ↑ | Qabf ↑ | SSIM ↑ | Nabf ↓ | ms/pair (median) |" in summary
    assert "`vifb`" in summary and "(3 pairs)" in summary
    for label in ("`pyramid`", "`average`", "`ext`"):
        assert label in summary
    assert summary.count("**") >= 2 * 6  # one best per metric column
    # Best Qabf is bolded for the method with the highest mean in summary.csv.
    means = {r["method"]: float(r["Qabf_mean"]) for r in _rows(out / "summary.csv")}
    best = max(means, key=means.get)
    assert any(line.startswith(f"| `{best}` |") and "| **" in line for line in summary.splitlines())

    for m in ("EN", "SD", "MI", "Qabf", "SSIM", "Nabf"):
        with Image.open(out / "plots" / f"{m}.png") as im:
            assert im.format == "PNG" and im.size[0] > 200
    with Image.open(out / "contact_sheet.png") as im:
        assert im.size[0] > im.size[1]  # 5 columns (ir | vi | 3 methods) × 3 rows
    assert "report:" in capsys.readouterr().out


def test_evaluate_scores_only_given_folders(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "r2"
    assert main(["evaluate", "--data", str(dataset), "--fused-dir", f"mine={dataset / 'published' / 'ext'}",
                 "--preset", "cddfuse", "--metrics", "EN,VIF", "--out", str(out), "--quiet", "--limit", "2",
                 "--contact-pairs", "0"]) == 0  # fmt: skip
    rows = _rows(out / "per_image.csv")
    assert [(r["image"], r["method"]) for r in rows] == [("a01", "mine"), ("b02", "mine")]
    assert not (out / "contact_sheet.png").exists()
    assert "ms/pair" not in (out / "summary.md").read_text()


def test_evaluate_says_when_it_replaces_a_report(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--data", str(dataset), "--fused-dir", str(dataset / "published"), "--metrics", "EN",
            "--out", str(tmp_path / "r"), "--quiet", "--contact-pairs", "0"]  # fmt: skip
    assert main(argv) == 0
    assert "replacing" not in capsys.readouterr().err
    assert main(argv) == 0
    assert f"replacing the report in {tmp_path / 'r'}\n" in capsys.readouterr().err


def test_summary_says_which_convention_its_numbers_follow(dataset: Path, tmp_path: Path) -> None:
    """Under the default vifb preset MSE equals RMSE and SSIM exceeds 1: the footnote says why."""
    assert set(PRESET_NOTES) == set(PRESETS)
    out = tmp_path / "r"
    assert main(["evaluate", "--data", str(dataset), "--fused-dir", str(dataset / "published"), "--metrics", "MSE,RMSE,SSIM",
                 "--out", str(out), "--quiet", "--contact-pairs", "0"]) == 0  # fmt: skip
    note = (out / "summary.md").read_text().splitlines()[-1]
    assert note.startswith("Metric preset `vifb` follows VIFB's MATLAB toolbox") and "so RMSE equals MSE" in note
    assert "SSIM the sum over the two sources (up to 2)" in note and note.endswith("`--preset` canonical, cddfuse, tang.")


def test_evaluate_user_errors(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data", str(tmp_path), "--quiet"]) == 1
    assert "no ir/ subfolder" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--methods", "nosuch", "--quiet"]) == 1
    assert "unknown method 'nosuch'" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--metrics", "EN,XYZ", "--quiet", "--out", str(tmp_path / "x")]) == 1
    assert "unknown metric" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--opt", "average.ir_weight=0.3", "--quiet"]) == 1
    assert "'average' is not a method of this run (balanced)" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--methods", "average", "--opt", "ir_weight=2", "--quiet"]) == 1
    assert "option average.ir_weight: 2.0 is outside [0.0, 1.0]" in capsys.readouterr().err  # NAME=VALUE: the one method's
    assert main(["evaluate", "--data", str(dataset), "--methods", "average,max", "--opt", "ir_weight=0.3", "--quiet"]) == 1
    assert "prefix the option with one of them, METHOD.NAME=VALUE" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--limit", "-1", "--quiet", "--out", str(tmp_path / "l")]) == 1
    assert capsys.readouterr().err == "error: --limit must be at least 0, got -1\n" and not (tmp_path / "l").exists()
    assert main(["evaluate", "--data", str(dataset), "--contact-pairs", "-2", "--quiet", "--out", str(tmp_path / "c")]) == 1
    assert capsys.readouterr().err == "error: --contact-pairs must be at least 0, got -2\n"
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(dataset), "--preset", "matlab"])


def test_pairs_and_fused_folder_parsing(dataset: Path) -> None:
    told: list[str] = []
    assert [p.name for p in find_pairs(dataset, on_unmatched=told.append)] == list(NAMES)  # 'unpaired' has no partner
    assert len(told) == 1 and "1 image(s)" in told[0] and "unpaired" in told[0]
    assert [(f.label, f.folder.name) for f in parse_fused_dirs([str(dataset / "published")])] == [("ext", "ext")]
    assert [f.label for f in parse_fused_dirs([f"x={dataset / 'published' / 'ext'}"])] == ["x"]
