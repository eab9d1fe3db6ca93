"""The comparison page's pure parts: widgets from option metadata, node parameter export/import,
cache keys, pair folders, zoom, timing, and the background jobs (no Streamlit, no browser)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from _tolerance import assert_grey_levels_close
from fusion_ros.cli import main
from fusion_ros.commands import ui as ui_command
from fusion_ros.errors import ConfigError, InputError, UnknownMethodError
from fusion_ros.fuser import Fuser
from fusion_ros.methods.base import option
from fusion_ros.options import build_options, field_default, options_as_dict
from fusion_ros.registry import get_method_class, list_methods, method_names
from fusion_ros.config import build_config, parameter_table, render_yaml
from fusion_ros.scenes import render_pair
from fusion_ros.thermal import ThermalConfig
from fusion_ros.ui import logic
from fusion_ros.ui.jobs import FusionJobs, fuse_pair


@dataclass(frozen=True)
class _AllKinds:
    flag: bool = option(True, "a switch")
    mode: str = option("b", "a choice", choices=("a", "b"))
    path: str = option("", "free text")
    steps: int = option(20, "a small int range", range=(1, 50))
    seed: int = option(0, "a large int range", range=(0, 2**31 - 1))
    count: int = option(3, "an unbounded int")
    gain: float = option(1.0, "a float range", range=(0.0, 4.0))
    scale: float = option(250.0, "an unbounded float")
    bands: list = option([0.5, 1.5], "a list of floats")


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """One rendered pair for the module, read-only so that no test can change it for the next."""
    thermal, visible = render_pair(3.0, 96, 128)
    thermal.setflags(write=False)
    visible.setflags(write=False)
    return thermal, visible


# ------------------------------------------------------------------------------- widgets


def test_widget_kinds_follow_the_option_metadata() -> None:
    specs = {s.name: s for s in logic.option_widgets("demo", _AllKinds)}
    assert [s.name for s in logic.option_widgets("demo", _AllKinds)] == [f.name for f in dataclasses.fields(_AllKinds)]
    assert specs["flag"].kind == "checkbox" and specs["flag"].default is True
    assert specs["mode"].kind == "select" and specs["mode"].choices == ("a", "b") and specs["mode"].default == "b"
    assert specs["path"].kind == "text"
    assert (specs["steps"].kind, specs["steps"].low, specs["steps"].high, specs["steps"].step) == ("slider", 1, 50, 1)
    assert specs["seed"].kind == "number" and specs["seed"].high == 2**31 - 1
    assert specs["count"].kind == "number" and specs["count"].low is None
    assert specs["gain"].kind == "slider" and specs["gain"].step == pytest.approx(0.01)
    assert specs["scale"].kind == "number" and specs["scale"].step == pytest.approx(1.0)
    assert specs["bands"].kind == "floats" and specs["bands"].default == "0.5, 1.5"
    assert specs["gain"].key == "opt__demo__gain" and specs["gain"].help == "a float range"


def test_widget_values_become_valid_options() -> None:
    specs = logic.option_widgets("demo", _AllKinds)
    raw = {"flag": False, "mode": "a", "path": "x.pt", "steps": 7, "seed": 5, "count": 9,
           "gain": 0.1 + 0.2, "scale": 12.5, "bands": "1, 2, 3.5"}  # fmt: skip
    values = {s.name: s.to_option(raw[s.name]) for s in specs}
    assert values["gain"] == 0.3  # the float slider's 0.30000000000000004 is rounded to its step
    opts = build_options(_AllKinds, values, "demo")
    assert opts.bands == [1.0, 2.0, 3.5] and opts.steps == 7 and opts.flag is False


@pytest.mark.parametrize("method", method_names())
def test_every_registered_method_gets_widgets_with_its_defaults(method: str) -> None:
    specs = logic.option_widgets(method)
    fields = dataclasses.fields(get_method_class(method).Options)
    assert [s.name for s in specs] == [f.name for f in fields]
    defaults = {s.name: s.to_option(s.default) for s in specs}
    assert options_as_dict(build_options(get_method_class(method).Options, defaults, method)) == {
        f.name: field_default(f) for f in fields
    }
    for s in specs:
        if s.kind == "slider":
            assert s.low <= s.default <= s.high


def test_pyramid_widgets() -> None:
    specs = {s.name: s for s in logic.option_widgets("pyramid")}
    assert specs["levels"].kind == "slider" and (specs["levels"].low, specs["levels"].high) == (1, 10)
    assert specs["saliency"].kind == "slider" and specs["saliency"].default == 1.0


@pytest.mark.parametrize(
    ("low", "high", "step"), [(0, 1, 0.01), (0, 4, 0.01), (0, 100, 1.0), (50, 100, 0.1), (0, 0.99, 0.001), (3, 3, 0.01)]
)
def test_nice_step(low: float, high: float, step: float) -> None:
    assert logic.nice_step(low, high) == pytest.approx(step)


# ------------------------------------------------------------------------------- thermal + registration


def _node_values(**overrides: object) -> dict:
    return {**{spec.name: spec.default for spec in parameter_table()}, **overrides}


def test_input_widgets_come_from_the_node_parameter_table() -> None:
    table = {spec.name: spec for spec in parameter_table()}
    specs = logic.input_widgets()
    assert [s.name for s in specs] == list(logic.INPUT_PARAMS)
    for s in specs:
        assert s.name in table and s.help == table[s.name].description
        assert s.to_option(s.default) == table[s.name].default or s.kind == "floats"
    kinds = {s.name: s.kind for s in specs}
    assert kinds["thermal.normalization"] == "select" and kinds["thermal.window"] == "floats"
    assert kinds["registration.resize"] == "checkbox"
    assert len({s.key for s in specs} | {logic.HOMOGRAPHY_KEY}) == len(specs) + 1


def test_thermal_widgets_default_to_the_node_thermal_config() -> None:
    values = {s.name: s.to_option(s.default) for s in logic.input_widgets() if s.name.startswith("thermal.")}
    expected = build_config(_node_values(), check_available=False).thermal
    assert logic.thermal_config(values) == expected
    assert logic.thermal_config({}) == expected


def test_thermal_config_from_widget_values() -> None:
    changes = {"thermal.normalization": "fixed", "thermal.invert": True, "thermal.smoothing": 0.5}
    cfg = logic.thermal_config({**changes, "thermal.window": "28000, 31000"})
    node = build_config(_node_values(**changes, **{"thermal.window": [28000, 31000]}), check_available=False)
    assert cfg == node.thermal
    assert cfg.normalization == "fixed" and cfg.window == (28000.0, 31000.0) and cfg.invert and cfg.smoothing == 0.5


@pytest.mark.parametrize(
    "values",
    [
        {"thermal.normalization": "log"},
        {"thermal.window": "5"},
        {"thermal.window": "3, 1"},
        {"thermal.low_percentile": 99.5},
        {"thermal.smoothing": 1.5},
        {"thermal.bogus": 1},
        {"registration.resize": True},
        {"thermal.smoothing": "x"},
    ],
)
def test_bad_thermal_values_raise_config_error(values: dict) -> None:
    with pytest.raises(ConfigError):
        logic.thermal_config({"thermal.high_percentile": 99.0, **values})


def test_parse_homography() -> None:
    assert logic.parse_homography("") is None
    assert logic.parse_homography("  ") is None
    assert logic.parse_homography("[1, 0, 5; 0, 1, -3; 0, 0, 1]") == (1.0, 0.0, 5.0, 0.0, 1.0, -3.0, 0.0, 0.0, 1.0)
    with pytest.raises(ConfigError, match="9 numbers"):
        logic.parse_homography("1 0 0 0 1 0 0 0")
    with pytest.raises(ConfigError, match="9 numbers"):
        logic.parse_homography("1 0 0 0 1 0 0 0 x")


# ------------------------------------------------------------------------------- node parameters


def test_export_is_a_ros_parameters_file_for_the_node() -> None:
    thermal = logic.thermal_config({"thermal.normalization": "fixed", "thermal.window": [1.0, 2.0]})
    params = logic.node_parameters("pyramid", {"pyramid": {"levels": 3, "saliency": 2}}, thermal)
    text = logic.export_yaml(params)
    doc = yaml.safe_load(text)
    section = doc["/**/fusion_node"]["ros__parameters"]  # any namespace: launch's namespace:= must not drop it
    assert section["method"] == "pyramid"
    assert section["pyramid"] == {"levels": 3, "saliency": 2.0, "detail_gain": 1.0}
    # ROS types parameters by their YAML form: a double must be written as one.
    assert isinstance(section["pyramid"]["saliency"], float) and "saliency: 2.0" in text
    assert section["thermal"]["normalization"] == "fixed" and section["thermal"]["window"] == [1.0, 2.0]
    assert section["thermal"]["smoothing"] == thermal.smoothing
    assert section["registration"] == {"homography": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], "resize": False}
    assert text.startswith("#")
    # every name written is one the node declares, with the node's type
    table = {spec.name: spec for spec in parameter_table()}
    for name, value in logic.parse_params_yaml(text).items():
        assert type(value) is type(table[name].default), name


@pytest.mark.parametrize("method", method_names())
def test_export_round_trips_into_the_node_parameters(method: str) -> None:
    homography = (1.0, 0.0, 4.0, 0.0, 1.0, -2.0, 0.0, 0.0, 1.0)
    thermal = logic.thermal_config(
        {"thermal.normalization": "percentile", "thermal.low_percentile": 2.0, "thermal.high_percentile": 98.5, "thermal.invert": True}
    )
    tuned = {"pyramid": {"levels": 4}} if method == "pyramid" else {method: {}, "pyramid": {"levels": 4}}
    params = logic.node_parameters(method, tuned, thermal, homography, resize=True)
    flat = logic.parse_params_yaml(logic.export_yaml(params))
    assert flat == params
    # the node's own validation reads the same settings back
    node = build_config(_node_values(**flat), check_available=False)
    assert node.method == method and node.thermal == thermal and node.registration.homography == homography and node.registration.resize
    settings = logic.settings_from_parameters(flat)
    assert settings.method == method and settings.thermal == thermal and settings.homography == homography and settings.resize
    assert settings.options[method] == node.options
    assert settings.options["pyramid"].levels == 4
    if method != "pyramid":
        assert settings.options[method] == build_options(get_method_class(method).Options, {}, method)


def test_parse_accepts_the_forms_rcl_accepts() -> None:
    flat_keys = "/**:\n  ros__parameters:\n    method: average\n    average.ir_weight: 0.25\n    thermal.invert: true\n"
    assert logic.parse_params_yaml(flat_keys) == {"method": "average", "average.ir_weight": 0.25, "thermal.invert": True}
    namespaced = "/robot/fusion_node:\n  ros__parameters:\n    average:\n      ir_weight: 0.75\n"
    assert logic.parse_params_yaml(namespaced) == {"average.ir_weight": 0.75}
    settings = logic.settings_from_parameters(logic.parse_params_yaml(flat_keys))
    assert settings.method == "average" and settings.options["average"].ir_weight == 0.25 and settings.thermal.invert


def test_the_node_default_parameters_file_imports() -> None:
    settings = logic.settings_from_parameters(logic.parse_params_yaml(render_yaml()))
    assert settings.thermal == build_config(_node_values(), check_available=False).thermal
    assert settings.homography is None and settings.resize is False


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("other_node:\n  ros__parameters: {method: pyramid}\n", "no section for node"),
        ("fusion_node: {method: pyramid}\n", "ros__parameters"),
        ("- a\n- b\n", "mapping"),
        ("fusion_node: [\n", "not valid YAML"),
    ],
)
def test_parse_rejects_files_without_node_parameters(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        logic.parse_params_yaml(text)


def test_settings_validate_like_the_node() -> None:
    # where the node runs is the page's business: a robot's CUDA device still opens on a laptop
    base = {"method": "pyramid", "device": "cuda:7", "precision": "fp16", "sync.slop": 0.05}
    assert logic.settings_from_parameters(base).method == "pyramid"
    with pytest.raises(ConfigError, match="unknown fusion_node parameter"):
        logic.settings_from_parameters({**base, "thermal_topic": "x"})
    with pytest.raises(ConfigError, match="bogus"):
        logic.settings_from_parameters({**base, "pyramid.bogus": 1})
    with pytest.raises(ConfigError, match="outside"):
        logic.settings_from_parameters({**base, "pyramid.levels": 99})
    with pytest.raises(ConfigError, match="outside"):
        logic.settings_from_parameters({**base, "average.ir_weight": 3.0})  # another method's options are checked too
    with pytest.raises(UnknownMethodError):
        logic.settings_from_parameters({"method": "nope"})
    with pytest.raises(ConfigError):
        logic.settings_from_parameters({**base, "thermal.normalization": "log"})
    with pytest.raises(ConfigError):
        logic.settings_from_parameters({**base, "registration.homography": [0, 0, 0, 0, 1, 0, 0, 0, 2]})
    with pytest.raises(ConfigError):
        logic.node_parameters("pyramid", {"pyramid": {"levels": 0}}, ThermalConfig())


def test_widget_state_shows_imported_settings() -> None:
    flat = logic.parse_params_yaml(
        "fusion_node:\n  ros__parameters:\n    method: pyramid\n    pyramid: {levels: 2, saliency: 0.5}\n"
        "    thermal: {normalization: fixed, window: [27000.0, 31000.0]}\n"
        "    registration: {homography: [1, 0, 3, 0, 1, 0, 0, 0, 1], resize: true}\n"
    )
    state = logic.widget_state(logic.settings_from_parameters(flat))
    assert state["opt__pyramid__levels"] == 2 and state["opt__pyramid__saliency"] == 0.5
    assert state["node__thermal_normalization"] == "fixed" and state["node__thermal_window"] == "27000, 31000"
    assert state["node__registration_resize"] is True and state[logic.HOMOGRAPHY_KEY] == "1 0 3 0 1 0 0 0 1"
    specs = {s.key: s for s in (*logic.option_widgets("pyramid"), *logic.input_widgets())}
    assert set(state) - {logic.HOMOGRAPHY_KEY} <= set(specs)
    thermal = logic.thermal_config({specs[k].name: specs[k].to_option(v) for k, v in state.items() if k.startswith("node__thermal")})
    assert thermal.window == (27000.0, 31000.0) and thermal.normalization == "fixed"


# ------------------------------------------------------------------------------- inputs, keys, display


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_find_pairs_matches_stems(tmp_path: Path) -> None:
    grey = np.zeros((4, 4), np.uint8)
    for name in ("b.png", "a.png", "only_ir.png"):
        _write(tmp_path / "ir" / name, grey)
    for name in ("a.jpg", "b.png", "only_vi.png"):
        _write(tmp_path / "vi" / name, grey)
    (tmp_path / "vi" / "notes.txt").write_text("not an image")
    pairs = logic.find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[0].ir == tmp_path / "ir" / "a.png" and pairs[0].vi == tmp_path / "vi" / "a.jpg"
    with pytest.raises(InputError, match="expected ir/ and vi/"):
        logic.find_pairs(tmp_path / "ir")


def test_cache_keys_are_stable_and_sensitive() -> None:
    a = logic.cache_key("pyramid", {"levels": 3}, ThermalConfig(), None)
    assert a == logic.cache_key("pyramid", {"levels": 3}, ThermalConfig(), None)
    assert a != logic.cache_key("pyramid", {"levels": 4}, ThermalConfig(), None)
    assert a != logic.cache_key("pyramid", {"levels": 3}, ThermalConfig(invert=True), None)
    x = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert logic.array_digest(x) == logic.array_digest(x.copy())
    assert logic.array_digest(x) != logic.array_digest(x.reshape(4, 3))
    assert logic.array_digest(x) != logic.array_digest(x.astype(np.int16))
    y = x.copy()
    y[2, 3] += 1
    assert logic.array_digest(x) != logic.array_digest(y)


def test_prepare_thermal_is_what_the_fuser_sees(pair: tuple[np.ndarray, np.ndarray]) -> None:
    thermal, visible = pair
    ir, image = logic.prepare_thermal(thermal, ThermalConfig(), None, visible.shape[:2])
    assert ir.shape == (1, 1, *visible.shape[:2]) and ir.dtype == torch.float32
    assert image.dtype == np.uint8 and image.shape == visible.shape[:2] and image.max() == 255 and image.min() == 0
    shifted, _ = logic.prepare_thermal(thermal, ThermalConfig(), (1, 0, 10, 0, 1, 0, 0, 0, 1), visible.shape[:2])
    assert torch.allclose(shifted[..., 20:, 30:70], ir[..., 20:, 20:60], atol=1e-4)
    assert float(shifted[..., :, :9].abs().max()) == 0.0  # left of the shifted thermal: nothing
    with pytest.warns(UserWarning, match="no homography"):
        half, _ = logic.prepare_thermal(thermal[::2, ::2], ThermalConfig(), None, visible.shape[:2])
    assert half.shape == ir.shape
    with pytest.raises(InputError):
        logic.prepare_thermal(visible, ThermalConfig(), None, visible.shape[:2])


def test_zoom_crop() -> None:
    img = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)
    assert np.array_equal(logic.zoom_crop(img, 0.5, 0.5, 1), img)
    z = logic.zoom_crop(img, 0.5, 0.5, 2)
    assert z.shape == (8, 12)
    assert np.array_equal(z[::2, ::2], img[2:6, 3:9]) and np.array_equal(z[1::2, 1::2], img[2:6, 3:9])
    corner = logic.zoom_crop(img, 0.0, 1.0, 4)  # the window is kept inside the image
    assert np.array_equal(corner[::4, ::4], img[6:8, 0:3])
    rgb = np.zeros((8, 12, 3), np.uint8)
    assert logic.zoom_crop(rgb, 0.3, 0.3, 8).shape == (8, 8, 3)
    with pytest.raises(ConfigError):
        logic.zoom_crop(img, 0.5, 0.5, 0)


@pytest.mark.parametrize(
    ("per_pair", "h", "w", "seconds"),
    [(0.003, 512, 640, 0.003), (0.003, 1024, 1280, 0.012), (15.4, 256, 320, 3.85), (None, 512, 640, None)],
)
def test_expected_seconds_scales_the_640x512_figure_by_pixels(per_pair: float | None, h: int, w: int, seconds: float | None) -> None:
    got = logic.expected_seconds(per_pair, h, w)
    assert got == (None if seconds is None else pytest.approx(seconds))


def test_every_method_has_a_measured_cost_the_page_can_use() -> None:
    infos = logic.method_infos()
    assert set(infos) == set(method_names())
    for name, info in infos.items():
        assert info.seconds_per_pair is not None and info.seconds_per_pair > 0, name
        assert logic.expected_seconds(info.seconds_per_pair, 512, 640) == pytest.approx(info.seconds_per_pair)


def test_timed_fuse_repeats_fast_calls_and_not_slow_ones() -> None:
    calls = []
    out, ms, runs = logic.timed_fuse(lambda: calls.append(1) or len(calls), budget_s=1.0, max_runs=5)
    assert runs == 5 == len(calls) and out == 5 and ms >= 0
    calls.clear()

    def slow() -> int:
        time.sleep(0.05)
        calls.append(1)
        return 7

    out, ms, runs = logic.timed_fuse(slow, budget_s=0.06, max_runs=5)
    assert runs == 1 == len(calls) and out == 7 and ms >= 50


def test_key_metrics(pair: tuple[np.ndarray, np.ndarray]) -> None:
    thermal, visible = pair
    _, ir = logic.prepare_thermal(thermal, ThermalConfig(), None, visible.shape[:2])
    values = logic.key_metrics(ir, visible, Fuser("pyramid")(thermal, visible))
    assert list(values) == list(logic.KEY_METRICS)
    assert all(math.isfinite(v) for v in values.values())


# ------------------------------------------------------------------------------- background jobs


def test_page_fusion_equals_the_fuser(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """What the page shows is what the node's Fuser computes with the exported settings."""
    thermal, visible = pair
    cfg = ThermalConfig(normalization="percentile", low_percentile=5.0, high_percentile=95.0)
    ir, ir_image = logic.prepare_thermal(thermal, cfg, None, visible.shape[:2])
    jobs = FusionJobs()
    try:
        phases: list[str] = []
        result = fuse_pair(jobs, phases.append, method="pyramid", options={"levels": 3}, device="cpu",
                           weights_dir=None, ir=ir, ir_image=ir_image, visible=visible)  # fmt: skip
    finally:
        jobs.shutdown()
    expected = Fuser("pyramid", options={"levels": 3}, thermal=cfg, device="cpu")(thermal, visible)
    assert_grey_levels_close(result.fused, expected, what="page vs Fuser")  # the page fuses on its worker thread
    assert phases == ["waiting for the other method", "loading model", "fusing", "metrics"]
    assert result.device == "cpu" and result.ms > 0 and 1 <= result.runs <= 5 and not result.shared
    assert set(result.metrics) == set(logic.KEY_METRICS) and not result.metrics_error


def test_jobs_deduplicate_cache_and_cancel() -> None:
    jobs = FusionJobs(workers=1)
    gate = threading.Event()
    try:
        first = jobs.submit("a", lambda report: (report("working"), gate.wait(5), "A")[-1])
        assert jobs.submit("a", lambda report: "other") is first
        queued = jobs.submit("b", lambda report: "B")
        deadline = time.monotonic() + 5
        while jobs.phase("a")[0] != "working" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert jobs.phase("a")[0] == "working" and jobs.phase("b")[0] == "queued"
        assert jobs.cancel_queued(["a", "b"], keep=["a"]) == 1
        assert queued.cancelled()
        gate.set()
        assert first.result(5) == "A" and jobs.phase("a")[0] == "done"
        again = jobs.submit("b", lambda report: "B2")
        assert again is not queued and again.result(5) == "B2"
        assert jobs.submit("a", lambda report: "not run").result(5) == "A"  # finished jobs are the cache
    finally:
        gate.set()
        jobs.shutdown()


def test_a_slow_job_does_not_hold_up_a_quick_one() -> None:
    jobs = FusionJobs(workers=2)
    gate, slow_started = threading.Event(), threading.Event()

    def slow_job(report) -> bool:  # noqa: ANN001
        slow_started.set()
        return gate.wait(10)

    try:
        slow = jobs.submit("slow", slow_job)
        assert slow_started.wait(5)  # its worker thread is running it (a thread may start late on a loaded machine)
        quick = jobs.submit("quick", lambda report: jobs.running())
        assert quick.result(5) == 2  # it ran while the slow one was running
        assert not slow.done() and jobs.started("slow") is not None
        gate.set()
        assert slow.result(5) is True
        assert jobs.running() == 0
    finally:
        gate.set()
        jobs.shutdown()


def test_timings_take_turns_but_a_quick_job_does_not_wait_long() -> None:
    jobs = FusionJobs(workers=3)
    holding, release = threading.Event(), threading.Event()

    def hold(report) -> bool:  # noqa: ANN001
        with jobs.measuring(wait_s=5) as alone:
            holding.set()
            release.wait(5)
            return alone

    def measure(wait_s: float):  # noqa: ANN202
        def job(report) -> tuple[bool, int]:  # noqa: ANN001
            with jobs.measuring(wait_s=wait_s) as alone:
                return alone, jobs.busy()

        return job

    try:
        first = jobs.submit("first", hold)
        assert holding.wait(5)
        impatient = jobs.submit("impatient", measure(0.05))
        assert impatient.result(5) == (False, 2)  # measured anyway, beside the holder: flagged
        patient = jobs.submit("patient", measure(5))
        time.sleep(0.1)
        assert not patient.done() and jobs.busy() == 1  # waiting for the slot is not using the cores
        release.set()
        assert first.result(5) is True
        assert patient.result(5) == (True, 1)  # had the slot, alone
    finally:
        release.set()
        jobs.shutdown()


def test_method_infos_survive_a_broken_method(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cls: type, weights_dir: Path) -> str | None:
        raise KeyError("missing manifest table")

    monkeypatch.setattr(get_method_class("average"), "unavailable_reason", classmethod(broken))
    with pytest.raises(KeyError):
        list_methods()
    infos = logic.method_infos()
    assert list(infos) == method_names()
    assert not infos["average"].available and "missing manifest table" in infos["average"].reason
    assert infos["pyramid"].available and infos["max"].available


@pytest.mark.slow
def test_jobs_keep_one_model_per_method() -> None:
    jobs = FusionJobs(max_models=2)
    try:
        built: list[str] = []

        def build(tag: str):  # noqa: ANN202
            return lambda: built.append(tag) or Fuser("average", options={"ir_weight": 0.5}, warmup=False)

        f1, t1 = jobs.fuser("average", "k1", build("k1"))
        f1b, t1b = jobs.fuser("average", "k1", build("k1 again"))
        assert f1b is f1 and t1b == 0.0 and t1 >= 0
        f2, _ = jobs.fuser("average", "k2", build("k2"))
        assert f2 is not f1
        jobs.fuser("max", "m", build("m"))
        jobs.fuser("pyramid", "p", build("p"))  # a third method evicts the least recently used
        jobs.fuser("average", "k2", build("k2 rebuilt"))
        assert built == ["k1", "k2", "m", "p", "k2 rebuilt"]
    finally:
        jobs.shutdown()


# ------------------------------------------------------------------------------- fusion-ros ui


def test_ui_command_line() -> None:
    args = argparse.Namespace(port=8600, address="127.0.0.1", data=Path("pairs"), weights_dir=None, detector=None)
    cmd = ui_command.streamlit_command(args)
    app = Path(cmd[cmd.index("run") + 1])
    assert app.name == "app.py" and app.is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--data") + 1] == str(Path("pairs").resolve())
    assert "--weights-dir" not in cmd
    pythonpath = ui_command.streamlit_env()["PYTHONPATH"].split(":")
    assert (Path(pythonpath[0]) / "fusion_ros" / "ui" / "app.py").is_file()


def test_ui_command_rejects_a_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ui", "--data", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err
