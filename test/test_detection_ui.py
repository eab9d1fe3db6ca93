"""The comparison page with a detector: boxes and counts on RGB and on each fused frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detection_graphs import constant_model

from fusion_ros.ui import logic

pytest.importorskip("streamlit", reason="streamlit is not installed (pip install -r requirements.txt)")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(logic.__file__).with_name("app.py")


def _texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]


@pytest.mark.slow
def test_detector_boxes_and_counts_for_rgb_and_each_method(tmp_path: Path) -> None:
    model = constant_model(
        tmp_path / "two_people.onnx",
        {
            "boxes": np.array([[[10, 20, 40, 60], [50, 10, 60, 30], [0, 0, 5, 5]]], np.float32),
            "scores": np.array([[0.9, 0.5, 0.2]], np.float32),
            "classes": np.array([[0, 0, 2]], np.int64),
        },
        (1, 3, 64, 64),
    )
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["scene_size"] = "320x256"
    at.session_state["methods"] = ["pyramid", "average"]
    at.session_state["detector_path"] = str(model)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, _texts(at.error)
    assert "Detector" in _texts(at.subheader)
    counts = at.get("dataframe")
    table = next(d.value for d in counts if "image" in d.value.columns)
    assert table["image"].tolist() == ["RGB", "pyramid", "average"]
    assert table["person"].tolist() == [2, 2, 2] and "car" not in table.columns  # the 0.2 car is under 0.3
    at.slider(key="detector_threshold").set_value(0.1).run()
    table = next(d.value for d in at.get("dataframe") if "image" in d.value.columns)
    assert table["car"].tolist() == [1, 1, 1]


def test_bad_detector_path_is_an_error_on_the_page(tmp_path: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["scene_size"] = "320x256"
    at.session_state["detector_path"] = str(tmp_path / "missing.onnx")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("detector file not found" in e for e in _texts(at.error))
    assert "Detector" not in _texts(at.subheader)


def test_ui_command_passes_the_detector_to_the_page(tmp_path: Path) -> None:
    import argparse

    from fusion_ros.commands import ui as ui_command

    model = tmp_path / "m.onnx"
    args = argparse.Namespace(port=8600, address="127.0.0.1", data=None, weights_dir=None, detector=model)
    cmd = ui_command.streamlit_command(args)
    assert cmd[cmd.index("--detector") + 1] == str(model.resolve())
    assert cmd.index("--detector") > cmd.index("--")  # an argument of the page, not of streamlit
