"""The comparison page: thermal | RGB | fused side by side for several methods, with each method's
options as widgets, per-pair timings, the key metrics, a zoom view, and an export of the settings
as the node's parameters file. Given a detector (``fusion-ros ui --detector MODEL.onnx``, a path
in the sidebar, or an uploaded file), a "Detector" section draws its boxes on the RGB frame and
on each fused frame with the counts per class — the question the page answers is whether the
detector finds more on the fused frame (the node itself never runs a detector).

Run it with ``fusion-ros ui`` (or ``streamlit run fusion_ros/ui/app.py -- --data DIR``). Streamlit
reruns this script on every widget change; fusion runs in :class:`~fusion_ros.ui.jobs.FusionJobs`
off the script thread and is cached by content, so only what changed is fused again and a slow
method never freezes the page. The tuning widgets are bound to the URL's query parameters, so a
page state can be bookmarked or shared.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from fusion_ros.detection import Detections, Detector, load_detector
from fusion_ros.detection.draw import class_counts, counts_text, draw_detections
from fusion_ros.errors import ConfigError, FusionError
from fusion_ros.imageio import read_thermal, read_visible
from fusion_ros.options import build_options
from fusion_ros.config import RegistrationConfig
from fusion_ros.registry import DEFAULT_METHOD, MethodInfo, get_method_class
from fusion_ros.scenes import render_pair
from fusion_ros.thermal import ThermalConfig
from fusion_ros.ui import logic
from fusion_ros.ui.jobs import FusionJobs, FusionResult, fuse_pair

SOURCES = ("generated night street", "folder (ir/ + vi/)", "upload")
SCENE_SIZES = ("320x256", "640x512", "1280x1024")
ZOOMS = (1, 2, 4, 8)
_POLL_S = 0.2


def _app_args() -> argparse.Namespace:
    """Arguments after ``--`` of ``streamlit run app.py -- …`` (what ``fusion-ros ui`` passes)."""
    parser = argparse.ArgumentParser(prog="fusion-ros ui")
    parser.add_argument("--data", type=Path, help="folder with ir/ and vi/ image pairs")
    parser.add_argument("--weights-dir", type=Path, help="folder with the weight files")
    parser.add_argument("--detector", type=Path, help="ONNX detector whose boxes are drawn on RGB and fused frames")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


@st.cache_resource
def _jobs() -> FusionJobs:
    """One job runner for the server process: models and results are shared by every browser tab."""
    return FusionJobs()


@st.cache_data(max_entries=32, show_spinner="rendering the scene…")
def _scene(t: float, size: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    width, height = (int(v) for v in size.split("x"))
    return render_pair(t, height, width, seed)


@st.cache_data(max_entries=32)
def _read_pair(ir_path: str, vi_path: str, _mtimes: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    return read_thermal(ir_path), read_visible(vi_path)


@st.cache_data(max_entries=16)
def _decode_upload(name: str, data: bytes, thermal: bool) -> np.ndarray:
    # imageio reads paths (16-bit PNG/TIFF handling lives there), so an upload goes through a file.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        return read_thermal(path) if thermal else read_visible(path)


@st.cache_data(max_entries=16)
def _prepared(
    key: str, _thermal: np.ndarray, _config: ThermalConfig, _homography: Any, size: tuple[int, int]
) -> tuple[torch.Tensor, np.ndarray]:
    with warnings.catch_warnings():
        # a size mismatch is shown on the page (with what the node would do), not in the server log
        warnings.simplefilter("ignore", UserWarning)
        return logic.prepare_thermal(_thermal, _config, _homography, size)


@st.cache_resource(max_entries=4, show_spinner="loading the detector…")
def _detector(path: str, _mtime: float) -> Detector:
    return load_detector(path)


@st.cache_resource(max_entries=4, show_spinner="loading the detector…")
def _uploaded_detector(name: str, data: bytes) -> Detector:
    # onnxruntime opens files; the temporary copy lives as long as the server process caches it.
    folder = Path(tempfile.mkdtemp(prefix="fusion_ros_detector_"))
    path = folder / Path(name).name
    path.write_bytes(data)
    return load_detector(path)


@st.cache_data(max_entries=64)
def _detect(_detector_obj: Detector, detector_key: str, image_key: str, _image: np.ndarray) -> Detections:
    return _detector_obj.detect(_image)


def _detector_input(args: argparse.Namespace) -> tuple[Detector | None, float]:
    """The sidebar's detector section: the loaded detector (or None) and the score threshold."""
    path = st.text_input(
        "detector file (ONNX)", value=str(args.detector or ""), key="detector_path",
        help="YOLOX, NanoDet, Ultralytics YOLOv5/v8/v11 or boxes/scores/classes exports; empty = no detector",
    )  # fmt: skip
    upload = st.file_uploader("or upload a detector (.onnx)", type=["onnx"], key="detector_upload")
    threshold = st.slider("score threshold", 0.05, 0.95, 0.3, 0.05, key="detector_threshold", bind="query-params")
    try:
        if upload is not None:
            return _uploaded_detector(upload.name, upload.getvalue()), threshold
        if path:
            p = Path(path).expanduser()
            return _detector(str(p), p.stat().st_mtime if p.is_file() else 0.0), threshold
    except FusionError as err:
        st.error(f"detector: {err}")
    return None, threshold


def _detection_section(detector: Detector, threshold: float, visible: np.ndarray, results: dict[str, FusionResult]) -> None:
    st.subheader("Detector")
    images = [("RGB", visible)] + [(m, r.fused) for m, r in results.items()]
    counts = {}
    for col, (name, image) in zip(st.columns(len(images)), images):
        found = _detect(detector, str(detector.path), logic.array_digest(image), image)
        counts[name] = class_counts(found, threshold)
        col.image(draw_detections(image, found, threshold), caption=f"{name}: {counts_text(counts[name])}", output_format="PNG", width="stretch")
    with st.container(key="detection_counts"):
        rows = [{"image": name, **c} for name, c in counts.items()]
        st.dataframe(pd.DataFrame(rows).fillna(0), hide_index=True, width="stretch")
    st.caption(f"{detector.describe()}; boxes and counts at score ≥ {threshold:g}")


def _widget(spec: logic.WidgetSpec) -> Any:
    """Draw one option widget (bound to the URL) and return the option value it holds."""
    kw: dict[str, Any] = {"key": spec.key, "help": spec.help or None, "bind": "query-params"}
    has_state = spec.key in st.session_state
    if spec.kind == "checkbox":
        raw = st.checkbox(spec.label, **({} if has_state else {"value": spec.default}), **kw)
    elif spec.kind == "select":
        choices = list(spec.choices or ())
        raw = st.selectbox(spec.label, choices, **({} if has_state else {"index": choices.index(spec.default)}), **kw)
    elif spec.kind == "slider":
        raw = st.slider(spec.label, spec.low, spec.high, **({} if has_state else {"value": spec.default}), step=spec.step, **kw)
    elif spec.kind == "number":
        fmt = "%g" if isinstance(spec.default, float) else None
        raw = st.number_input(
            spec.label, spec.low, spec.high, **({} if has_state else {"value": spec.default}), step=spec.step, format=fmt, **kw
        )
    else:
        raw = st.text_input(spec.label, **({} if has_state else {"value": spec.default}), **kw)
    return spec.to_option(raw)


def _import_settings() -> None:
    """Callback of the YAML uploader: put a parameters file's values into the widgets."""
    upload = st.session_state.get("import_yaml")
    if upload is None:
        return
    try:
        settings = logic.settings_from_parameters(logic.parse_params_yaml(upload.getvalue().decode("utf-8")))
    except (FusionError, UnicodeDecodeError) as err:
        st.session_state["_import_message"] = ("error", f"cannot import {upload.name}: {err}")
        return
    st.session_state.update(logic.widget_state(settings))
    current = [m for m in st.session_state.get("methods", []) if m != settings.method]
    st.session_state["methods"] = [settings.method, *current]
    st.session_state["export_method"] = settings.method
    st.session_state["_import_message"] = ("success", f"imported {upload.name}: method {settings.method}")


def _input_pair(args: argparse.Namespace) -> tuple[str, np.ndarray, np.ndarray] | None:
    """The sidebar's input section: ``(label, thermal, visible)`` or None with a message shown."""
    default_source = SOURCES[1] if args.data else SOURCES[0]
    source = st.radio("source", SOURCES, index=SOURCES.index(default_source), key="source", bind="query-params")
    if source == SOURCES[0]:
        t = st.slider("time t (s)", 0.0, 20.0, 3.0, 0.5, key="scene_t", bind="query-params",
                      help="a night street: people in dark clothes, warm in thermal, barely visible in RGB")
        size = st.selectbox("size", SCENE_SIZES, index=1, key="scene_size", bind="query-params")
        seed = int(st.number_input("seed", 0, 10_000, 0, key="scene_seed", bind="query-params"))
        thermal, visible = _scene(float(t), size, seed)
        return f"night street t={t:g} s {size} seed {seed}", thermal, visible
    if source == SOURCES[1]:
        folder = st.text_input(
            "folder", value=str(args.data or ""), key="folder", help="a folder with ir/ and vi/ images of the same names"
        )
        if not folder:
            st.info("type a folder that holds ir/ and vi/")
            return None
        try:
            pairs = logic.find_pairs(folder)  # no pairs at all is an error that says why
        except FusionError as err:
            st.error(str(err))
            return None
        names = [p.name for p in pairs]
        name = st.selectbox(f"pair ({len(pairs)})", names, key="pair")
        pair = pairs[names.index(name)]
        try:
            thermal, visible = _read_pair(str(pair.ir), str(pair.vi), (pair.ir.stat().st_mtime, pair.vi.stat().st_mtime))
        except FusionError as err:
            st.error(str(err))
            return None
        return pair.name, thermal, visible
    types = [s.lstrip(".") for s in logic.IMAGE_SUFFIXES]
    ir_file = st.file_uploader("thermal image (8/16-bit PNG or TIFF)", type=types, key="upload_ir")
    vi_file = st.file_uploader("RGB image", type=types, key="upload_vi")
    if ir_file is None or vi_file is None:
        st.info("upload a thermal and an RGB image")
        return None
    try:
        return (
            f"{ir_file.name} + {vi_file.name}",
            _decode_upload(ir_file.name, ir_file.getvalue(), True),
            _decode_upload(vi_file.name, vi_file.getvalue(), False),
        )
    except FusionError as err:
        st.error(str(err))
        return None


def _methods_table(infos: dict[str, MethodInfo]) -> None:
    rows = [
        {"method": i.name, "ready": "yes" if i.available else "no", "cost": i.cost, "description": i.description, "why not": i.reason}
        for i in infos.values()
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _progress_text(method: str, phase: str, elapsed: float, expected: float | None) -> str:
    hint = f" of ~{expected:.0f} s expected" if expected and expected >= 1 else ""
    return f"{method}: {phase} — {elapsed:.1f} s{hint}"


def _wait(jobs: FusionJobs, pending: dict[str, tuple[str, Future, Any, float | None]], on_done: Callable[[str], None]) -> None:
    """Show a progress bar per unfinished job and call ``on_done(method)`` as each one finishes.

    A widget change while waiting reruns the script (Streamlit stops it at the next element
    update); the jobs carry on and their results are picked up from the cache by that rerun.
    """
    bars = {m: slot.progress(0.0, text=f"{m}: queued") for m, (_, _, slot, _) in pending.items()}
    while bars:
        for method in list(bars):
            key, future, _, expected = pending[method]
            if future.done():
                bars.pop(method).empty()
                on_done(method)
                continue
            phase, since = jobs.phase(key)
            started = jobs.started(key)
            now = time.monotonic()
            elapsed = now - started if started is not None else 0.0
            if phase == "fusing" and expected:
                frac = min((now - since) / expected, 0.99)
            else:
                frac = elapsed / (elapsed + 20.0)  # no estimate: creeps on, never claims done
            bars[method].progress(frac, text=_progress_text(method, phase, elapsed, expected))
        if bars:
            time.sleep(_POLL_S)


def _show_result(method: str, future: Future) -> FusionResult | None:
    try:
        result: FusionResult = future.result()
    except FusionError as err:
        st.error(f"{method}: {err}")
        return None
    except Exception as err:  # noqa: BLE001 — a method bug is shown on the page, not a blank screen
        st.error(f"{method} failed: {type(err).__name__}: {err}")
        return None
    st.image(result.fused, caption=f"fused: {method}", output_format="PNG", width="stretch")
    load = f" · model built in {result.load_s:.1f} s" if result.load_s >= 0.05 else ""
    with st.container(key=f"time_{method}"):
        shared = " · cores shared with another running method" if result.shared else ""
        st.caption(f"**{result.ms:.1f} ms / pair** on {result.device} (median of {result.runs}){load}{shared}")
    if result.metrics_error:
        st.caption(f"metrics failed: {result.metrics_error}")
    return result


def main() -> None:
    """Draw the page (Streamlit runs this top to bottom on every interaction)."""
    st.set_page_config(page_title="fusion_ros · compare fusion methods", layout="wide")
    args = _app_args()
    jobs = _jobs()
    infos = logic.method_infos(args.weights_dir)
    names = list(infos)

    with st.sidebar:
        st.header("Input")
        pair = _input_pair(args)
        options_box = st.container()
        st.header("Detector")
        detector, threshold = _detector_input(args)
        st.header("Thermal and registration")
        input_values = {spec.name: _widget(spec) for spec in logic.input_widgets()}
        homography_text = st.text_input(
            "homography", key=logic.HOMOGRAPHY_KEY, bind="query-params",
            help="registration.homography: 9 numbers, row-major 3x3, mapping thermal pixels to RGB pixels; empty = identity",
        )  # fmt: skip
        devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        device = st.selectbox("device", devices, key="device", bind="query-params")
        st.header("Import settings")
        st.file_uploader("node parameters file (YAML)", type=["yaml", "yml"], key="import_yaml", on_change=_import_settings)
        message = st.session_state.pop("_import_message", None)
        if message:
            getattr(st, message[0])(message[1])

    st.title("Thermal + RGB fusion: compare and tune")
    # Option values are the plain names: a bound widget writes its labels into the URL.
    methods = st.multiselect(
        "methods", names, **({} if "methods" in st.session_state else {"default": [DEFAULT_METHOD]}), key="methods", bind="query-params",
        help=f"fused side by side; {DEFAULT_METHOD} is the node's default; unavailable ones say why",
    )  # fmt: skip
    unavailable = [name for name, info in infos.items() if not info.available]
    if unavailable:
        st.caption(f"not available here: {', '.join(unavailable)} (why: see the table below, or select them)")
    with st.expander("all methods: availability, cost, weights"):
        _methods_table(infos)
        st.caption(f"weights folder: {args.weights_dir or 'the package default (see `fusion-ros methods`)'}")

    options: dict[str, dict[str, Any]] = {}
    option_errors: dict[str, str] = {}
    with options_box:
        for method in methods:
            specs = logic.option_widgets(method)
            if not specs:
                continue
            st.header(f"{method} options")
            values = {spec.name: _widget(spec) for spec in specs}
            try:
                build_options(get_method_class(method).Options, values, method)
                options[method] = values
            except ConfigError as err:
                option_errors[method] = str(err)
    for method in methods:
        options.setdefault(method, {})

    try:
        resize = bool(input_values.pop("registration.resize"))
        thermal_cfg = logic.thermal_config(input_values)
        # The node's rule: the identity means "same pixel grid"; all zeros, NaN/inf or a singular matrix are refused.
        homography = RegistrationConfig(logic.parse_homography(homography_text or "")).homography
    except ConfigError as err:
        st.error(str(err))
        st.stop()
    if pair is None:
        st.info("choose an input pair in the sidebar")
        st.stop()
    label, thermal, visible = pair
    if not methods:
        st.info("pick one or more methods")

    size = (visible.shape[0], visible.shape[1])
    thermal_digest, visible_digest = logic.array_digest(thermal), logic.array_digest(visible)
    prep_key = logic.cache_key(thermal_digest, thermal_cfg, homography, size)
    try:
        ir, ir_image = _prepared(prep_key, thermal, thermal_cfg, homography, size)
    except FusionError as err:
        st.error(str(err))
        st.stop()
    # The node's rule (RegistrationConfig): a size mismatch needs a homography or resize.
    mismatch = RegistrationConfig(homography, resize).mismatch(thermal.shape[:2], size)
    if mismatch:
        st.error(f"{mismatch}: the node, the CLI and bag fusion refuse such pairs. Tick 'resize' to stretch the thermal image over the RGB frame.")
        st.stop()
    if resize and homography is None and thermal.shape[:2] != size:
        st.warning("the thermal image is stretched over the RGB frame (resize), right only for cameras with the same field of view")
    st.caption(f"input: {label} — thermal {thermal.shape[1]}x{thermal.shape[0]} {thermal.dtype}, RGB {visible.shape[1]}x{visible.shape[0]}")

    columns = st.columns(2 + len(methods))
    columns[0].image(ir_image, caption="thermal (normalised, registered: what the methods see)", output_format="PNG", width="stretch")
    columns[1].image(visible, caption="RGB", output_format="PNG", width="stretch")
    slots = {m: col.container(key=f"fused_{m}") for m, col in zip(methods, columns[2:])}

    futures: dict[str, tuple[str, Future]] = {}
    for method in methods:
        info = infos[method]
        if not info.available:
            slots[method].warning(f"**{method}** is unavailable: {info.reason}")
            continue
        if method in option_errors:
            slots[method].error(option_errors[method])
            continue
        key = logic.cache_key(visible_digest, prep_key, method, options[method], device, str(args.weights_dir or ""))
        job = functools.partial(
            fuse_pair, jobs, method=method, options=options[method], device=device,
            weights_dir=args.weights_dir, ir=ir, ir_image=ir_image, visible=visible,
        )  # fmt: skip
        futures[method] = (key, jobs.submit(key, job))
    jobs.cancel_queued(st.session_state.get("_submitted", ()), keep=[k for k, _ in futures.values()])
    st.session_state["_submitted"] = [k for k, _ in futures.values()]

    # The sections below the images exist before the wait, so exporting never waits for a slow method.
    detection_box, metrics_box, zoom_box = st.container(), st.container(), st.container()
    with st.container():
        _export_section(methods, infos, options, option_errors, thermal_cfg, homography, resize)

    timings = st.session_state.setdefault("_last_ms", {})
    results: dict[str, FusionResult] = {}

    def show(method: str) -> None:
        with slots[method]:
            result = _show_result(method, futures[method][1])
        if result is not None:
            results[method] = result
            timings[method] = result.ms

    pending = {}
    for method, (key, future) in futures.items():
        if future.done():
            show(method)
        else:
            last = timings.get(method)
            expected = last / 1000.0 if last else logic.expected_seconds(infos[method].seconds_per_pair, *size)
            pending[method] = (key, future, slots[method].empty(), expected)
    _wait(jobs, pending, show)
    results = {m: results[m] for m in futures if m in results}  # page order, not finishing order

    if detector is not None:
        with detection_box:
            _detection_section(detector, threshold, visible, results)
    with metrics_box:
        _metrics_section(results)
    with zoom_box:
        _zoom_section(ir_image, visible, results)


def _zoom_section(ir_image: np.ndarray, visible: np.ndarray, results: dict[str, FusionResult]) -> None:
    st.subheader("Zoom")
    c1, c2, c3 = st.columns(3)
    zoom = c1.select_slider("zoom", ZOOMS, value=2, key="zoom", bind="query-params")
    cx = c2.slider("centre x", 0.0, 1.0, 0.5, 0.01, key="zoom_x", bind="query-params")
    cy = c3.slider("centre y", 0.0, 1.0, 0.55, 0.01, key="zoom_y", bind="query-params")
    images = [("thermal", ir_image), ("RGB", visible)] + [(m, r.fused) for m, r in results.items()]
    for col, (name, image) in zip(st.columns(len(images)), images):
        col.image(logic.zoom_crop(image, cx, cy, int(zoom)), caption=f"{name} ×{zoom}", output_format="PNG", width="stretch")
    with st.expander("full resolution (1 image pixel = 1 screen pixel)"):
        for name, image in images:
            st.image(image, caption=name, output_format="PNG", width=int(image.shape[1]))


def _metrics_section(results: dict[str, FusionResult]) -> None:
    st.subheader("Time and metrics")
    rows = []
    for method, r in results.items():
        rows.append({"method": method, "ms / pair": round(r.ms, 2), "device": r.device, **{k: round(v, 4) for k, v in r.metrics.items()}})
    if rows:
        with st.container(key="metrics_table"):
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        "Metrics of the fused image against the thermal image the methods saw and the RGB image "
        "(canonical convention of fusion_ros.metrics; higher is better for all five). "
        "Time: median of up to 5 runs within 1 s, model warmed up, including the copy back to the host."
    )


def _export_section(
    methods: list[str],
    infos: dict[str, MethodInfo],
    options: dict[str, dict[str, Any]],
    option_errors: dict[str, str],
    thermal_cfg: ThermalConfig,
    homography: tuple[float, ...] | None,
    resize: bool,
) -> None:
    st.subheader("Export settings")
    runnable = [m for m in methods if infos[m].available and m not in option_errors] or [DEFAULT_METHOD]
    if st.session_state.get("export_method") not in runnable:
        st.session_state.pop("export_method", None)
    method = st.selectbox("method the node runs", runnable, key="export_method")
    tuned = {m: options.get(m, {}) for m in methods if m not in option_errors}
    try:
        text = logic.export_yaml(logic.node_parameters(method, tuned, thermal_cfg, homography, resize))
    except FusionError as err:
        st.error(str(err))
        return
    st.download_button(
        "Export settings (fusion_params.yaml)", text, file_name="fusion_params.yaml", mime="application/x-yaml",
        key="export_download", on_click="ignore",
    )  # fmt: skip
    with st.container(key="export_yaml"):
        st.code(text, language="yaml")


main()
