"""What the comparison page computes, without Streamlit: widgets from option metadata, node
parameter export/import, cache keys, input pairs, zoom crops, timing and metrics.

Everything the page shows or exports goes through these functions, so the unit tests cover the
page's behaviour and the browser test only has to check the wiring. The node reads the same
``Options`` dataclasses (``<method>.<option>`` parameters), and the thermal/registration widgets
and the export are checked against the node's own parameter table and builder
(:mod:`fusion_ros.config`), so a YAML exported here is a valid ``--params-file`` for ``fusion_node``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar

import numpy as np
import torch
import yaml

from fusion_ros.config import NODE_NAME, FusionConfig, build_config, parameter_table, parse_params_yaml
from fusion_ros.errors import ConfigError, InputError
from fusion_ros.evaluate import IMAGE_SUFFIXES, find_pairs
from fusion_ros.options import build_options, field_default, options_as_dict
from fusion_ros.registration import Registration
from fusion_ros.registry import MethodInfo, get_method_class, list_methods, method_names
from fusion_ros.thermal import ThermalConfig, ThermalNormalizer

__all__ = [
    "HOMOGRAPHY_KEY",
    "IMAGE_SUFFIXES",
    "INPUT_PARAMS",
    "KEY_METRICS",
    "NODE_NAME",
    "Settings",
    "WidgetSpec",
    "array_digest",
    "cache_key",
    "expected_seconds",
    "export_yaml",
    "find_pairs",
    "format_numbers",
    "input_widgets",
    "key_metrics",
    "method_infos",
    "nice_step",
    "node_config",
    "node_defaults",
    "node_parameters",
    "option_widgets",
    "parse_homography",
    "parse_params_yaml",
    "prepare_thermal",
    "settings_from_parameters",
    "thermal_config",
    "timed_fuse",
    "widget_state",
    "zoom_crop",
]

#: The node's default name: the top-level key of an exported parameters file.

#: Widget key of the homography text box (a text box of 9 numbers, empty for the identity).
HOMOGRAPHY_KEY = "node__registration_homography"

#: The metrics the page shows for every fused image (names of :data:`fusion_ros.metrics.METRICS`).
KEY_METRICS: tuple[str, ...] = ("EN", "MI", "Qabf", "SSIM", "VIF")

T = TypeVar("T")
WidgetKind = Literal["checkbox", "select", "slider", "number", "text", "floats"]


@dataclass(frozen=True)
class WidgetSpec:
    """One input widget of the page, derived from an option's dataclass field.

    Attributes:
        key: Streamlit widget key (also the element's ``st-key-<key>`` CSS class the browser test finds).
        name: the option name (node parameter ``<method>.<name>``), or for :func:`input_widgets`
            the full node parameter name (``thermal.window``).
        label: text shown beside the widget.
        kind: widget type: ``checkbox``, ``select``, ``slider``, ``number``, ``text`` or ``floats``
            (a comma-separated list of numbers in a text box).
        default: the option's default as the widget holds it.
        help: tooltip (the option's one-line help).
        choices: allowed values of a ``select``.
        low: lower bound of a ``slider``/``number`` (None = unbounded).
        high: upper bound.
        step: slider/number step (1 for integers).
    """

    key: str
    name: str
    label: str
    kind: WidgetKind
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None

    def to_widget(self, value: Any) -> Any:
        """An option value as this widget holds it (lists become ``"1, 2.5"`` text)."""
        if self.kind == "floats":
            return format_numbers(value, ", ")
        return value

    def to_option(self, raw: Any) -> Any:
        """A widget's value as the option value; float sliders are rounded to their step so
        ``0.30000000000000004`` never reaches an exported file (typed numbers are kept as typed)."""
        if self.kind == "slider" and isinstance(self.default, float) and self.step:
            decimals = max(0, -math.floor(math.log10(float(self.step))))
            return round(float(raw), decimals)
        return raw


def format_numbers(values: Sequence[float], sep: str) -> str:
    """Numbers as short text that reads back to the same floats (``65535``, ``0.001234567891``)."""
    return sep.join(f"{float(v):.15g}" for v in values)


def nice_step(low: float, high: float) -> float:
    """A power-of-ten slider step giving about 100–1000 positions over ``[low, high]``."""
    span = float(high) - float(low)
    if span <= 0:
        return 0.01
    return 10.0 ** math.floor(math.log10(span / 100.0))


def _widget_key(prefix: str, name: str) -> str:
    # Streamlit turns a key into the CSS class st-key-<key>: letters, digits, - and _ keep it a
    # plain selector.
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}__{name}")


def _spec(
    prefix: str, name: str, default: Any, help_text: str, choices: tuple | None, bounds: tuple | None, label: str = ""
) -> WidgetSpec:
    key = _widget_key(prefix, name)
    label = label or name.replace("_", " ")
    if isinstance(default, bool):
        return WidgetSpec(key, name, label, "checkbox", default, help_text)
    if choices is not None:
        return WidgetSpec(key, name, label, "select", default, help_text, choices=tuple(choices))
    if isinstance(default, (list, tuple)):
        return WidgetSpec(key, name, label, "floats", format_numbers(default, ", "), help_text)
    if isinstance(default, int):
        low, high = (int(bounds[0]), int(bounds[1])) if bounds else (None, None)
        kind: WidgetKind = "slider" if bounds and high - low <= 100 else "number"
        return WidgetSpec(key, name, label, kind, default, help_text, low=low, high=high, step=1)
    if isinstance(default, float):
        if bounds:
            low_f, high_f = float(bounds[0]), float(bounds[1])
            return WidgetSpec(key, name, label, "slider", default, help_text, low=low_f, high=high_f, step=nice_step(low_f, high_f))
        return WidgetSpec(key, name, label, "number", default, help_text, step=nice_step(0.0, max(abs(default), 1.0)))
    return WidgetSpec(key, name, label, "text", str(default), help_text)


def option_widgets(method: str, options_cls: type | None = None) -> list[WidgetSpec]:
    """The widgets of ``method``'s options, in declaration order, from their ``option()`` metadata.

    Args:
        method: registered method name (keys are ``opt__<method>__<option>``).
        options_cls: the options dataclass; default the registered method's ``Options``.
    """
    cls = options_cls if options_cls is not None else get_method_class(method).Options
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        specs.append(_spec(f"opt__{method}", f.name, field_default(f), meta.get("help", ""), meta.get("choices"), meta.get("range")))
    return specs


# The node's parameters (other than method options) that change the fused image: thermal.<field>
# for each ThermalConfig field. Their defaults, help, ranges and choices come from the node's own
# parameter table (fusion_ros.config), so the page and the node cannot drift apart.
_THERMAL_PARAMS = tuple(f"thermal.{f.name}" for f in dataclasses.fields(ThermalConfig))
_HOMOGRAPHY = "registration.homography"
_RESIZE = "registration.resize"
#: Node parameters with a widget on the page besides the method options (the homography has a text box).
INPUT_PARAMS: tuple[str, ...] = (*_THERMAL_PARAMS, _RESIZE)
# Node parameters that describe where the node runs, not what it computes: the page keeps its own.
_PLACE_PARAMS = ("device", "precision", "weights_dir")


@functools.lru_cache(maxsize=1)
def _node_table() -> dict[str, Any]:
    return {spec.name: spec for spec in parameter_table()}


def node_defaults() -> dict[str, Any]:
    """Every ``fusion_node`` parameter with its default value."""
    return {name: (list(spec.default) if isinstance(spec.default, list) else spec.default) for name, spec in _node_table().items()}


def input_widgets() -> list[WidgetSpec]:
    """Widgets of :data:`INPUT_PARAMS`, from the node's parameter table (key ``node__thermal_window``,
    name = the full parameter name)."""
    table = _node_table()
    specs = []
    for name in INPUT_PARAMS:
        p = table[name]
        specs.append(_spec("node", name, p.default, p.description, p.choices, p.range, label=name.split(".", 1)[1].replace("_", " ")))
    return specs


def node_config(params: Mapping[str, Any]) -> FusionConfig:
    """``params`` over the node's defaults, validated by the node's own :func:`~fusion_ros.config.build_config`.

    Unknown parameter names raise :class:`ConfigError` (the node would ignore them silently, which
    hides typos). ``device``/``precision``/``weights_dir`` are the page's, not the file's: a file
    written for a robot with a GPU must still open on a laptop.
    """
    table = _node_table()
    unknown = sorted(set(params) - set(table))
    if unknown:
        raise ConfigError(f"unknown fusion_node parameter(s): {', '.join(unknown)}")
    methods = set(method_names())
    values = node_defaults()
    for name, value in params.items():
        if name in _PLACE_PARAMS:
            continue
        # the method name and its options are checked by the registry and the method's Options
        values[name] = value if name == "method" or name.split(".", 1)[0] in methods else table[name].check(value)
    return build_config(values, check_available=False)


def thermal_config(values: Mapping[str, Any]) -> ThermalConfig:
    """The :class:`ThermalConfig` the node builds from ``thermal.*`` values (full parameter names;
    missing ones keep the node's defaults). Widget text such as ``"0, 65535"`` is accepted."""
    table = _node_table()
    params = {name: table[name].check(v) for name, v in values.items() if name in _THERMAL_PARAMS}
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise ConfigError(f"not a thermal parameter: {', '.join(unknown)}")
    return node_config(params).thermal


def parse_homography(text: str) -> tuple[float, ...] | None:
    """``""`` → None (the identity: images already aligned); otherwise exactly 9 numbers (row-major 3×3)."""
    parts = text.replace(",", " ").replace(";", " ").replace("[", " ").replace("]", " ").split()
    if not parts:
        return None
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"homography must be 9 numbers, got {text.strip()!r}") from None
    if len(values) != 9:
        raise ConfigError(f"homography must be 9 numbers (row-major 3x3), got {len(values)}")
    return values


# --------------------------------------------------------------------------------------------
# Node parameters: export to and import from a ROS 2 parameters file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the page tunes, as the node runs it.

    Attributes:
        method: the method the node runs (``method`` parameter).
        options: validated options per method (``<method>.<option>`` parameters).
        thermal: thermal normalisation (``thermal.*`` parameters).
        homography: thermal → RGB homography (``registration.homography``), None for the identity.
        resize: stretch a differently sized thermal image over the RGB frame (``registration.resize``).
    """

    method: str
    options: Mapping[str, Any]
    thermal: ThermalConfig
    homography: tuple[float, ...] | None = None
    resize: bool = False


def _ros_value(value: Any) -> Any:
    # ROS parameters are typed by their YAML form: floats must print with a point, lists as lists.
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return value


def node_parameters(
    method: str,
    options: Mapping[str, Mapping[str, Any]],
    thermal: ThermalConfig,
    homography: Sequence[float] | None = None,
    resize: bool = False,
) -> dict[str, Any]:
    """Flat node parameters (``{"method": …, "pyramid.levels": 4, "thermal.normalization": …}``),
    checked with the node's own validation before they are returned.

    Args:
        method: the method the node should run; must be registered.
        options: option values per method; every option of each listed method (and of ``method``)
            is written, so the file states exactly what runs.
        thermal: thermal normalisation.
        homography: 9 numbers, or None for the identity (same pixel grid).
        resize: the node's ``registration.resize``.
    """
    get_method_class(method)
    params: dict[str, Any] = {"method": method}
    for name in [method, *sorted(m for m in options if m != method)]:
        opts = build_options(get_method_class(name).Options, options.get(name, {}), name)
        for key, value in options_as_dict(opts).items():
            params[f"{name}.{key}"] = _ros_value(value)
    for param in _THERMAL_PARAMS:
        params[param] = _ros_value(getattr(thermal, param.split(".", 1)[1]))
    params[_HOMOGRAPHY] = _ros_value(homography if homography is not None else node_defaults()[_HOMOGRAPHY])
    params[_RESIZE] = bool(resize)
    settings_from_parameters(params)
    return params


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


class _ParamsDumper(yaml.SafeDumper):
    """Block mappings (one parameter a line) with lists inline, as ROS parameter files are written."""


_ParamsDumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def export_yaml(params: Mapping[str, Any], node_name: str = NODE_NAME) -> str:
    """A ROS 2 parameters file for ``node_name`` (``ros2 run … --ros-args --params-file F``), keyed
    ``/**/<node_name>`` so it also applies when the node runs in a namespace (launch ``namespace:=``)."""
    doc = {f"/**/{node_name}": {"ros__parameters": _nest(params)}}
    header = (
        "# fusion_ros node parameters, exported by `fusion-ros ui`.\n"
        "# ros2 launch fusion_ros fuse.launch.py params_file:=THIS_FILE\n"
        "# ros2 run fusion_ros fusion_node --ros-args --params-file THIS_FILE  (with FASTDDS_DEFAULT_PROFILES_FILE set to\n"
        "#   the shipped config/fastdds_shm.xml, as the launch file sets it: large images need it between processes)\n"
    )
    return header + yaml.dump(doc, Dumper=_ParamsDumper, sort_keys=False, default_flow_style=False, width=120)


def settings_from_parameters(params: Mapping[str, Any]) -> Settings:
    """Validate flat node parameters the way the node reads them (:func:`node_config`) and return
    what the page tunes; options of the other methods in the file go through :func:`build_options`.
    """
    config = node_config(params)
    methods = set(method_names())
    raw: dict[str, dict[str, Any]] = {config.method: {}}
    for key, value in params.items():
        prefix, sep, rest = key.partition(".")
        if sep and prefix in methods:
            raw.setdefault(prefix, {})[rest] = value
    options = {m: build_options(get_method_class(m).Options, values, m) for m, values in raw.items()}
    return Settings(config.method, options, config.thermal, config.registration.homography, config.registration.resize)


def widget_state(settings: Settings) -> dict[str, Any]:
    """Streamlit widget values (by key) that show ``settings`` — how the page imports a file."""
    state: dict[str, Any] = {}
    for method, opts in settings.options.items():
        values = options_as_dict(opts)
        for spec in option_widgets(method):
            state[spec.key] = spec.to_widget(values[spec.name])
    for spec in input_widgets():
        value = settings.resize if spec.name == _RESIZE else getattr(settings.thermal, spec.name.split(".", 1)[1])
        state[spec.key] = spec.to_widget(value)
    state[HOMOGRAPHY_KEY] = format_numbers(settings.homography or (), " ")
    return state


def method_infos(weights_dir: Path | None = None) -> dict[str, MethodInfo]:
    """:func:`~fusion_ros.registry.list_methods` by name (a method whose availability check itself
    fails is listed as unavailable with that error, so it cannot take the page down)."""
    return {info.name: info for info in list_methods(weights_dir, survive_broken=True)}


# --------------------------------------------------------------------------------------------
# Inputs, caching, display
# --------------------------------------------------------------------------------------------


def cache_key(*parts: Any) -> str:
    """A short stable key of JSON-able parts (dataclasses and tuples included)."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {"__type": type(x).__name__, **{k: plain(v) for k, v in dataclasses.asdict(x).items()}}
        if isinstance(x, Mapping):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    blob = json.dumps(plain(list(parts)), sort_keys=True, default=repr)
    return hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()


def array_digest(array: np.ndarray) -> str:
    """Content key of an image (shape, dtype and bytes), so an unchanged input is never re-fused."""
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def prepare_thermal(
    thermal: np.ndarray, config: ThermalConfig, homography: Sequence[float] | None, size: tuple[int, int]
) -> tuple[torch.Tensor, np.ndarray]:
    """The thermal frame as every method sees it: normalised, registered to the visible ``size`` (H, W).

    Returns:
        ``(ir, image)``: (1,1,H,W) float32 CPU tensor in [0,1], and the same as uint8 (H,W) to show.
    """
    if thermal.ndim == 3 and thermal.shape[2] == 1:
        thermal = thermal[..., 0]
    if thermal.ndim != 2:
        raise InputError(f"thermal image must be HxW (one channel), got shape {thermal.shape}")
    ir = ThermalNormalizer(config)(thermal, torch.device("cpu"))
    ir = Registration(homography)(ir, size)
    image = ir[0, 0].mul(255.0).round_().to(torch.uint8).numpy()
    return ir, image


def timed_fuse(fuse: Callable[[], T], budget_s: float = 1.0, max_runs: int = 5) -> tuple[T, float, int]:
    """Run ``fuse`` once, then again while the total stays under ``budget_s`` (fast methods get a
    median of several runs, slow ones are run once).

    Returns:
        ``(result of the last run, median ms per run, number of runs)``.
    """
    times: list[float] = []
    total = 0.0
    while True:
        start = time.perf_counter()
        out = fuse()
        elapsed = time.perf_counter() - start
        times.append(elapsed * 1000.0)
        total += elapsed
        if len(times) >= max_runs or total + elapsed > budget_s:
            return out, statistics.median(times), len(times)


#: Pixels of the pair size the methods' ``seconds_per_pair`` were measured at (640x512).
_COST_PIXELS = 640 * 512


def expected_seconds(seconds_per_pair: float | None, height: int, width: int) -> float | None:
    """Seconds a method's measured ``seconds_per_pair`` (640x512, 2 CPU cores) predicts for an H×W pair,
    scaled by pixel count; None when it was not measured (the page then shows elapsed time)."""
    if seconds_per_pair is None:
        return None
    return seconds_per_pair * (height * width) / _COST_PIXELS


def zoom_crop(image: np.ndarray, center_x: float, center_y: float, zoom: int) -> np.ndarray:
    """The ``1/zoom`` part of ``image`` around (center_x, center_y) (fractions of width/height),
    magnified ``zoom`` times with square pixels (no interpolation, so pixels can be judged).

    The window is shifted to stay inside the image; the result has about the image's size.
    """
    if zoom < 1:
        raise ConfigError(f"zoom must be >= 1, got {zoom}")
    h, w = image.shape[:2]
    ch, cw = max(1, h // zoom), max(1, w // zoom)
    y0 = int(round(min(max(center_y * h - ch / 2, 0), h - ch)))
    x0 = int(round(min(max(center_x * w - cw / 2, 0), w - cw)))
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    return np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)


def key_metrics(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray, names: Sequence[str] = KEY_METRICS) -> dict[str, float]:
    """The page's metrics of one fused image against the thermal it saw (uint8) and the visible image."""
    from fusion_ros.metrics import compute_metrics

    return compute_metrics(ir, visible, fused, metrics=list(names))
