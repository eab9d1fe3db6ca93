"""The comparison page's script in Streamlit's in-process test runner (no browser): the paths the
browser test does not walk — folder input, size mismatch, unavailable methods, bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_ros.imageio import write_image
from fusion_ros.registry import get_method_class
from fusion_ros.scenes import render_pair
from fusion_ros.ui import logic

pytest.importorskip("streamlit", reason="streamlit is not installed (pip install -r requirements.txt)")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(logic.__file__).with_name("app.py")
TIMEOUT_S = 120


def _app(**state: object) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.session_state["scene_size"] = "320x256"
    for key, value in state.items():
        at.session_state[key] = value
    return at


def _texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]


@pytest.mark.slow
def test_default_page_fuses_and_exports() -> None:
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, _texts(at.error)
    assert any("ms / pair" in c for c in _texts(at.caption))
    export = at.get("code")[0].value
    settings = logic.settings_from_parameters(logic.parse_params_yaml(export))
    assert settings.method == "balanced"


def test_unavailable_method_says_why_and_is_not_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "missing weights /nowhere/average.safetensors (get it from the authors; see weights/README.md)"
    monkeypatch.setattr(get_method_class("average"), "unavailable_reason", classmethod(lambda cls, wdir: reason))
    at = _app(methods=["pyramid", "average"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("average" in w and reason in w for w in _texts(at.warning))
    assert at.selectbox(key="export_method").options == ["pyramid"]
    assert any("ms / pair" in c for c in _texts(at.caption))  # the available one still runs


def test_bad_settings_are_shown_not_raised() -> None:
    at = _app()
    at.session_state[logic.HOMOGRAPHY_KEY] = "1 0 0 0 1"
    at.run()
    assert not at.exception
    assert any("9 numbers" in e for e in _texts(at.error))
    at.session_state[logic.HOMOGRAPHY_KEY] = ""
    at.session_state["node__thermal_window"] = "31000, 27000"
    at.run()
    assert any("window" in e for e in _texts(at.error))


def test_folder_pairs_and_size_mismatch(tmp_path: Path) -> None:
    thermal, visible = render_pair(2.0, 128, 160)
    write_image(tmp_path / "ir" / "same.png", thermal)
    write_image(tmp_path / "vi" / "same.png", visible)
    write_image(tmp_path / "ir" / "small.png", thermal[::2, ::2].copy())
    write_image(tmp_path / "vi" / "small.png", visible)
    at = _app(source="folder (ir/ + vi/)", folder=str(tmp_path)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="pair").options == ["same", "small"]
    assert any("input: same" in c for c in _texts(at.caption))
    assert any("ms / pair" in c for c in _texts(at.caption))

    at.selectbox(key="pair").set_value("small").run()
    assert any("differ and registration.homography is the identity" in e and "refuse such pairs" in e for e in _texts(at.error))  # the node's rule
    at.checkbox(key="node__registration_resize").check().run()
    assert not at.error, _texts(at.error)
    assert any("stretched" in w for w in _texts(at.warning))
    assert "resize: true" in at.get("code")[0].value
