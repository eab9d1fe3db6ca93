"""`fusion-ros` CLI: fuse files, list methods, one-line errors with exit code 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusion_ros.cli import build_parser, main
from fusion_ros.commands import WEIGHTS_DIR_HELP, method_options
from fusion_ros.errors import ConfigError
from fusion_ros.imageio import read_image, write_image
from fusion_ros.registry import list_methods


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ir = tmp_path / "ir.png"
    vis = tmp_path / "vis.png"
    write_image(ir, rng.integers(20000, 30000, (37, 53), dtype=np.uint16))
    write_image(vis, rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    return ir, vis


def test_fuse_writes_image_like_visible(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "fused.png"
    assert main(["fuse", "--ir", str(pair[0]), "--vis", str(pair[1]), "-o", str(out), "--device", "cpu", "--opt", "levels=3"]) == 0
    fused = read_image(out)
    assert fused.shape == (37, 53, 3) and fused.dtype == np.uint8
    assert "balanced on cpu" in capsys.readouterr().out


def test_sixteen_bit_thermal_file_round_trips(tmp_path: Path) -> None:
    data = np.array([[0, 1000], [40000, 65535]], np.uint16)
    write_image(tmp_path / "t.png", data)
    np.testing.assert_array_equal(read_image(tmp_path / "t.png"), data)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "bogus"], "unknown method 'bogus'; valid methods: balanced"),
        (["--opt", "levels"], "--opt expects NAME=VALUE"),
        (["--opt", "nope=1"], "unknown option(s) nope for method 'balanced'; valid: levels"),
        (["--opt", "levels=99"], "option balanced.levels: 99 is outside [1, 10]"),
        (["--opt", "levels=abc"], "option balanced.levels: 'abc' is not a valid int"),
        (["--opt", "balanced.levels=99"], "option balanced.levels: 99 is outside [1, 10]"),
        (["--opt", "pyramid.levels=3"], "--opt pyramid.levels=3: 'pyramid' is not a method of this run (balanced)"),
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
        (["--precision", "fp16", "--device", "cpu"], "precision fp16 needs a CUDA device"),
    ],
)
def test_errors_are_one_line(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code = main(["fuse", "--ir", str(pair[0]), "--vis", str(pair[1]), "-o", str(tmp_path / "o.png"), *argv])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_opt_takes_both_forms_in_every_command() -> None:
    assert method_options(["levels=3", "pyramid.ir_weight= 0.4"], ["pyramid"]) == {"pyramid": {"levels": "3", "ir_weight": "0.4"}}
    assert method_options(["average.ir_weight=0.3", "max.x=1"], ["average", "max"]) == {"average": {"ir_weight": "0.3"}, "max": {"x": "1"}}
    with pytest.raises(ConfigError, match=r"2 methods run \(average, max\); prefix the option with one of them"):
        method_options(["ir_weight=0.3"], ["average", "max"])
    with pytest.raises(ConfigError, match="'pyramid' is not a method of this run"):
        method_options(["pyramid.levels=3"], ["average", "max"])
    for bad in ("levels", "=3", ".levels=3", "pyramid.=3"):
        with pytest.raises(ConfigError, match="--opt expects NAME=VALUE or METHOD.NAME=VALUE"):
            method_options([bad], ["pyramid"])


@pytest.mark.parametrize("sizes", ["640", "640x", "axb", "640x512,8x8"])
def test_bench_sizes_are_checked_before_any_run(sizes: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--methods", "max", "--sizes", sizes, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: --sizes expects comma-separated WIDTHxHEIGHT within 16..4096")
    assert "Traceback" not in err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("repeats", ["0", "-2"])
def test_bench_repeats_are_checked_before_any_run(repeats: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--methods", "max", "--sizes", "64x64", "--repeats", repeats, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err == f"error: --repeats must be at least 1, got {repeats}\n" and not any(tmp_path.iterdir())


def test_missing_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["fuse", "--ir", str(tmp_path / "none.png"), "--vis", str(bad), "-o", str(tmp_path / "o.png")]) == 1
    assert "image file not found" in capsys.readouterr().err
    assert main(["fuse", "--ir", str(bad), "--vis", str(bad), "-o", str(tmp_path / "o.png")]) == 1
    assert "cannot read image" in capsys.readouterr().err


def test_methods_table_lists_default_and_availability(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["methods", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"weights folder: {tmp_path}"
    assert out.splitlines()[1].startswith("balanced (default)")
    for row in list_methods(tmp_path):
        assert row.name in out
        if row.needs_weights:
            # an empty weights folder: every network method says which file to put where
            assert not row.available and str(tmp_path) in row.reason
            assert row.reason in out
        else:
            assert row.available


def test_methods_header_names_the_default_weights_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSION_ROS_WEIGHTS_DIR", str(tmp_path))
    assert main(["methods"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"weights folder: {tmp_path}"


def test_every_weights_dir_flag_states_the_default_rule() -> None:
    """One help text, the rule of default_weights_dir (not "the package's weights/", wrong once installed)."""
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    helps = {name: action.help for name, sub in commands.items() for action in sub._actions if "--weights-dir" in action.option_strings}
    assert set(helps) == {"bag", "evaluate", "export", "fuse", "methods", "ui"}
    assert set(helps.values()) == {WEIGHTS_DIR_HELP} and "$FUSION_ROS_WEIGHTS_DIR" in WEIGHTS_DIR_HELP


def test_unavailable_method_error_names_the_file(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needing = [r for r in list_methods(tmp_path) if r.needs_weights]
    assert needing, "the network methods need weights"
    row = needing[0]
    code = main(["fuse", "--ir", str(pair[0]), "--vis", str(pair[1]), "-o", str(tmp_path / "o.png"), "--method", row.name, "--weights-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and f"method {row.name!r} is unavailable" in err and str(tmp_path) in err
