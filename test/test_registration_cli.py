"""``fusion-ros register``: image pair, folder and rosbag2 inputs, the parameters file and the overlay."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from _bags import numbered_bag
from fusion_ros.cli import main
from fusion_ros.imageio import read_image, write_image
from fusion_ros.registration import RegistrationResult
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair

RGB_WH = (320, 256)
THERMAL_WH = (160, 128)


def _truth() -> np.ndarray:
    return random_rig_homography(np.random.default_rng(7), RGB_WH, THERMAL_WH, rotation_deg=2.0,
                                 scale_range=(0.9, 1.15), translation=0.05, perspective=0.005)


def _frames(times: tuple[float, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for t in times:
        th, rgb = render_pair(t, RGB_WH[1], RGB_WH[0], seed=2)
        out.append((thermal_view(th, _truth(), THERMAL_WH), rgb))
    return out


def _yaml_homography(path: Path) -> np.ndarray:
    import yaml

    doc = yaml.safe_load(path.read_text())
    return np.array(doc["/**/fusion_node"]["ros__parameters"]["registration"]["homography"]).reshape(3, 3)


@pytest.mark.slow
def test_register_a_pair_writes_params_and_overlay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (thermal, rgb), = _frames((1.0,))
    write_image(tmp_path / "t.png", thermal)
    write_image(tmp_path / "v.png", rgb)
    out, overlay = tmp_path / "reg.yaml", tmp_path / "overlay.png"
    code = main(["register", str(tmp_path / "t.png"), str(tmp_path / "v.png"), "--params-out", str(out),
                 "--overlay", str(overlay), "--min-confidence", "0"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "registration.homography: [" in printed and "confidence" in printed and "residual" in printed
    assert read_image(overlay).shape == (RGB_WH[1], 2 * RGB_WH[0], 3)
    from fusion_ros.registration import corner_error

    assert corner_error(_yaml_homography(out), _truth(), THERMAL_WH) < 5.0


@pytest.mark.slow
def test_register_a_folder_spreads_frames_over_the_matching_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
    for i, (thermal, rgb) in enumerate(_frames((0.5, 1.5, 2.5))):
        write_image(tmp_path / "ir" / f"{i:03d}.png", thermal)
        write_image(tmp_path / "vi" / f"{i:03d}.png", rgb)
    write_image(tmp_path / "ir" / "unmatched.png", np.zeros((8, 8), np.uint8))  # no visible partner: never read
    out = tmp_path / "reg.yaml"
    assert main(["register", str(tmp_path), "--frames", "2", "--params-out", str(out), "--min-confidence", "0"]) == 0
    assert "2 frame(s)" in capsys.readouterr().out
    from fusion_ros.registration import corner_error

    assert corner_error(_yaml_homography(out), _truth(), THERMAL_WH) < 5.0


@pytest.mark.slow
def test_register_a_bag_uses_synchronized_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fusion_ros.bag import BagMessage, IMAGE_MSGTYPE, serialize_image, write_bag

    messages = []
    for i, (thermal, rgb) in enumerate(_frames((0.5, 1.5, 2.5))):
        stamp = 1_700_000_000_000_000_000 + i * 100_000_000
        messages.append(BagMessage("/thermal/image_raw", IMAGE_MSGTYPE, stamp, serialize_image(thermal, stamp, "thermal")))
        messages.append(BagMessage("/rgb/image_raw", IMAGE_MSGTYPE, stamp + 1000, serialize_image(rgb, stamp + 1000, "rgb")))
    write_bag(tmp_path / "bag", messages)
    out = tmp_path / "reg.yaml"
    assert main(["register", str(tmp_path / "bag"), "--params-out", str(out), "--min-confidence", "0"]) == 0
    used = int(re.search(r"(\d+) frame\(s\)", capsys.readouterr().out).group(1))
    assert 2 <= used <= 3  # the synchronizer may hold the last pair open, as in the node
    assert out.is_file()


def test_register_refuses_a_featureless_pair_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "t.png", np.full((128, 160), 120, np.uint8))
    write_image(tmp_path / "v.png", np.full((256, 320, 3), 60, np.uint8))
    assert main(["register", str(tmp_path / "t.png"), str(tmp_path / "v.png")]) == 1
    assert "too little structure" in capsys.readouterr().err


def test_register_refusal_says_how_to_get_or_accept_an_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thermal, _ = render_pair(1.0, 128, 160, seed=1)
    rng = np.random.default_rng(5)
    blocks = (rng.random((32, 40, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)  # structure unrelated to the thermal
    write_image(tmp_path / "t.png", thermal)
    write_image(tmp_path / "v.png", blocks)
    assert main(["register", str(tmp_path / "t.png"), str(tmp_path / "v.png")]) == 1
    err = capsys.readouterr().err
    assert "no confident alignment" in err and "--min-confidence below 0.5" in err and "--frames" in err


def test_register_rejects_a_folder_without_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", str(tmp_path)]) == 1
    assert "ir/ and vi/" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--scale", "1.4", "0.7"], "--scale LOW HIGH must satisfy 0.1 <= LOW <= HIGH <= 10, got 1.4 0.7"),
    (["--rotation", "-5"], "--rotation must be in [0, 45] degrees, got -5"),
    (["--min-confidence", "2"], "--min-confidence must be in [0, 1], got 2"),
    (["--translation", "0.6"], "--translation must be in [0, 0.5] of the RGB width, got 0.6"),
    (["--frames", "0"], "--frames must be at least 1, got 0"),
])
def test_register_names_the_flag_that_is_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                                     message: str) -> None:
    assert main(["register", str(tmp_path / "t.png"), str(tmp_path / "v.png"), *flags]) == 1
    assert message in capsys.readouterr().err


def _result(confidence: float = 0.9) -> RegistrationResult:
    """An estimate with perspective terms that ``%g`` prints in scientific notation."""
    hm = np.array([[2.23913048123, 0.00170992553, -31.179718], [-0.00470216864, 2.26440499, -2.08613056],
                   [-7.86775972e-05, -1.30095817e-05, 1.0]])
    return RegistrationResult(hm, confidence, 0.8, 0.4, 0.3, 1, 0.1, 12)


@pytest.fixture
def small_pair(tmp_path: Path) -> list[str]:
    """A thermal and an RGB file (what the estimator, replaced by a fixed result, would read)."""
    (thermal, rgb), = _frames((1.0,))
    write_image(tmp_path / "t.png", thermal)
    write_image(tmp_path / "v.png", rgb)
    return [str(tmp_path / "t.png"), str(tmp_path / "v.png")]


@pytest.fixture
def estimated(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs register hands the estimator, which is replaced by one returning :func:`_result`."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def estimate(pairs: list[tuple[np.ndarray, np.ndarray]], config: object) -> RegistrationResult:
        seen.extend(pairs)
        return _result()

    monkeypatch.setattr("fusion_ros.commands.register.estimate_homography", estimate)
    return seen


def test_printed_homography_pastes_into_a_float_option(small_pair: list[str], estimated: list,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """-1.30095817e-05 after --homography was taken for an option by argparse: positional notation, 10 digits."""
    import argparse

    from fusion_ros.registration import corner_error

    assert main(["register", *small_pair]) == 0
    printed = capsys.readouterr().out
    line = re.search(r"registration\.homography: \[(.*)\]", printed).group(1)
    matrix = printed.split("RGB):\n", 1)[1].split("registration.homography")[0]
    assert "e" not in line.lower() and "e" not in matrix.lower()
    parser = argparse.ArgumentParser()
    parser.add_argument("--homography", type=float, nargs=9)
    parsed = np.array(parser.parse_args(["--homography", *line.split(", ")]).homography).reshape(3, 3)
    np.testing.assert_allclose(parsed, _result().homography, rtol=1e-9)
    np.testing.assert_allclose(np.array(matrix.split(), float).reshape(3, 3), _result().homography, rtol=1e-9)
    assert corner_error(parsed, _result().homography, THERMAL_WH) < 1e-6


def test_register_says_a_missing_input_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", str(tmp_path / "nodir")]) == 1
    assert f"{tmp_path / 'nodir'} does not exist" in capsys.readouterr().err


def test_register_names_the_files_of_pairs_with_different_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
    for name, (w, h) in (("a", (496, 301)), ("b", (505, 351))):
        write_image(tmp_path / "ir" / f"{name}.png", np.zeros((h, w), np.uint8))
        write_image(tmp_path / "vi" / f"{name}.png", np.zeros((h, w, 3), np.uint8))
    assert main(["register", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    ir, vi = tmp_path / "ir", tmp_path / "vi"
    assert (f"{ir / 'b.png'} + {vi / 'b.png'} has sizes (W, H) thermal (505, 351), RGB (505, 351), but "
            f"{ir / 'a.png'} + {vi / 'a.png'} has thermal (496, 301), RGB (496, 301)") in err


def _refuse(pairs: list, config: object) -> RegistrationResult:
    """Stands in for the estimator refusing an estimate below --min-confidence."""
    from fusion_ros.registration import RegistrationError

    raise RegistrationError("no confident alignment found (confidence 0.20)", refused=_result(0.2))


def _labelled(panel: np.ndarray) -> bool:
    """A white label in the panel's top-left corner (the dimmed frame and the red edges are never white)."""
    return bool((panel[:40, :200] == 255).all(axis=2).any())


def test_a_refused_estimate_still_writes_its_labelled_overlay(small_pair: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal said "check the --overlay" but no overlay was written."""
    monkeypatch.setattr("fusion_ros.commands.register.estimate_homography", _refuse)
    path = tmp_path / "refused.png"
    assert main(["register", *small_pair, "--overlay", str(path)]) == 1
    assert f"wrote the overlay of this refused estimate to {path}" in capsys.readouterr().err
    image = read_image(path)
    assert image.shape == (RGB_WH[1], 2 * RGB_WH[0], 3)
    assert _labelled(image[:, : RGB_WH[0]]) and _labelled(image[:, RGB_WH[0]:])
    monkeypatch.setattr("fusion_ros.commands.register.estimate_homography", lambda pairs, config: _result())  # accepted
    assert main(["register", *small_pair, "--overlay", str(tmp_path / "accepted.png")]) == 0
    accepted = read_image(tmp_path / "accepted.png")
    assert _labelled(accepted[:, RGB_WH[0]:])
    assert not np.array_equal(accepted[:40, RGB_WH[0]:], image[:40, RGB_WH[0]:])  # "registered", not "refused estimate"


def test_a_refusal_without_overlay_says_how_to_get_one(small_pair: list[str], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("fusion_ros.commands.register.estimate_homography", _refuse)
    assert main(["register", *small_pair]) == 1
    assert "check it with --overlay first" in capsys.readouterr().err


def test_register_decodes_a_compressed_rgb_topic_as_the_node_does(tmp_path: Path, estimated: list) -> None:
    """It crashed: 'sensor_msgs__msg__CompressedImage' object has no attribute 'encoding'."""
    frames = numbered_bag(tmp_path / "bag", 3, compressed="rgb")
    assert main(["register", str(tmp_path / "bag"), "--rgb-topic", "/rgb/image_raw/compressed"]) == 0
    assert len(estimated) >= 2
    for thermal, rgb in estimated:
        i = int(thermal[0, 0])
        np.testing.assert_array_equal(thermal, frames[i][0])
        np.testing.assert_array_equal(rgb, frames[i][1])


def test_register_refuses_a_compressed_thermal_topic_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numbered_bag(tmp_path / "bag", 2, compressed="thermal")
    assert main(["register", str(tmp_path / "bag"), "--thermal-topic", "/thermal/image_raw/compressed"]) == 1
    assert ("thermal topic /thermal/image_raw/compressed holds sensor_msgs/msg/CompressedImage; thermal frames are "
            "read as sensor_msgs/msg/Image") in capsys.readouterr().err


def test_register_decodes_only_the_bag_pairs_it_uses(tmp_path: Path, estimated: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message was decoded and every pair kept before choosing --frames of them (450-750 MB for short
    640x512 bags): now pairs come from the header stamps and only the chosen ones are decoded."""
    from fusion_ros.bag import BagMessage, expected_pairs

    numbered_bag(tmp_path / "bag", 40)
    decoded = []
    original = BagMessage.decode
    monkeypatch.setattr(BagMessage, "decode", lambda self: decoded.append(self.topic) or original(self))
    assert main(["register", str(tmp_path / "bag"), "--frames", "3"]) == 0
    assert len(decoded) == 6
    stamps = expected_pairs(tmp_path / "bag")  # the node's pairing rule, stamps only
    first = stamps[0][0]
    spread = [stamps[i] for i in np.linspace(0, len(stamps) - 1, 3).round().astype(int)]
    assert [int(t[0, 0]) for t, _ in estimated] == [round((ts - first) / 100_000_000) for ts, _ in spread]
    assert all(int(r[0, 0, 1]) == 2 * int(t[0, 0]) for t, r in estimated)  # each RGB frame with its own thermal


@pytest.mark.parametrize("patches", [0, 40])
def test_register_says_when_the_estimate_is_the_global_one(small_pair: list[str], capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch, patches: int) -> None:
    """Where the thermal patches disagreed (most real pairs), the printout says what that means for the accuracy."""
    result = dataclasses.replace(_result(), patches=patches)
    monkeypatch.setattr("fusion_ros.commands.register.estimate_homography", lambda pairs, config: result)
    assert main(["register", *small_pair]) == 0
    printed = capsys.readouterr().out
    assert ("did not agree" in printed and "6 px" in printed) == (patches == 0)
