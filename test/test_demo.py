"""`fusion-ros demo` end to end: scene → bag → fusion_node over DDS → fused bag, contact sheet, stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import fusion_ros
from fusion_ros.bag import DEFAULT_FUSED_TOPIC, DEFAULT_RGB_TOPIC, DEFAULT_THERMAL_TOPIC, IMAGE_MSGTYPE, bag_topics
from fusion_ros.cli import main


@pytest.mark.slow
def test_demo_short_run(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    out = tmp_path / "demo"
    # Its own process, as a user runs it (the demo sets the ROS environment of its process), on this checkout.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(fusion_ros.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        # -p: a whole number for a double parameter reaches the node as rcl's INTEGER, which the node must take
        [sys.executable, "-m", "fusion_ros", "demo", "-o", str(out), "--duration", "2", "--size", "160x128", "--rows", "3",
         "-p", "diagnostics.silent_warn=5"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + (out / "node.log").read_text(errors="replace")
    assert f"contact sheet: {out / 'contact_sheet.png'}" in proc.stdout
    assert "| pairs fused on every loop" in proc.stdout

    stats = json.loads((out / "stats.json").read_text())
    assert (stats["thermal_frames"], stats["rgb_frames"], stats["expected_pairs_per_loop"]) == (60, 20, 20)
    node = stats["node"]
    assert node["state"] == "ready" and node["pairs"] == "20"
    # Every pair the node made was published, or superseded by a newer one while the model was busy
    # (latest-wins; only on a heavily loaded machine at this size), and everything published arrived.
    superseded = int(node["dropped superseded"].split()[0])
    assert stats["fused_received"] == int(node["fused"]) == 20 - superseded == 20 - stats["missing"]
    assert stats["fused_received"] >= 10
    assert stats["unexpected"] == 0 and stats["wrong_header"] == 0
    assert stats["latency_ms_p50"] is not None and stats["latency_ms_p50"] > 0
    assert (out / "stats.md").read_text().startswith("| quantity")

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (3 * 160 + 4 * 6, 28 + 3 * (128 + 6) + 6)
    assert bag_topics(out / "scene_bag") == {DEFAULT_THERMAL_TOPIC: (IMAGE_MSGTYPE, 60), DEFAULT_RGB_TOPIC: (IMAGE_MSGTYPE, 20)}
    assert bag_topics(out / "fused_bag") == {DEFAULT_FUSED_TOPIC: (IMAGE_MSGTYPE, stats["fused_received"])}


def test_demo_params_are_checked_against_the_node_and_parsed_as_yaml() -> None:
    from fusion_ros.commands.demo import _node_params
    from fusion_ros.errors import ConfigError

    params = _node_params(["registration.auto=true", "registration.auto_interval=2", "torch_threads=2",
                           "registration.homography=[1, 0, 3, 0, 1, 0, 0, 0, 1]"])
    assert params == {"registration.auto": True, "registration.auto_interval": 2, "torch_threads": 2,
                      "registration.homography": [1, 0, 3, 0, 1, 0, 0, 0, 1]}
    with pytest.raises(ConfigError, match="no parameter 'registration.autoo'"):
        _node_params(["registration.autoo=true"])  # a typo the node would ignore silently
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        _node_params(["registration.auto"])


@pytest.mark.parametrize("choice", [["--method", "defusion"], ["-p", "method=defusion"]])
def test_demo_refuses_an_unavailable_method_before_the_node_starts(
    choice: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The node would fall back to the default method while the stats and the sheet named this one."""
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-p", f"weights_dir={tmp_path}", *choice]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: method 'defusion' is unavailable: ") and str(tmp_path) in err
    assert not out.exists()  # nothing rendered, no node started
