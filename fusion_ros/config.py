"""The one validated configuration of a :class:`~fusion_ros.fuser.Fuser`, and the parameter table it is read from.

Every way of configuring fusion — the node's ROS parameters, a parameters YAML file, the CLI's
flags, the comparison page's widgets — ends as a flat mapping of *parameter names*
(``method``, ``device``, ``thermal.smoothing``, ``pyramid.levels`` …) given to :func:`build_config`.
It validates everything once (method name, typed options, device and precision, thermal and
registration settings, and whether the method can run here) and returns a frozen
:class:`FusionConfig`; :meth:`Fuser.from_config <fusion_ros.fuser.Fuser.from_config>` builds from it
without checking or resolving anything again.

:func:`parameter_table` is the single description of those names (default, help, constraints):
it feeds the node's ``ParameterDescriptor`` declarations (:mod:`fusion_ros.ros.params`), the
generated ``config/fusion.yaml`` (``fusion-ros params > config/fusion.yaml``; a test checks the
file is current), the page's widgets and the defaults of :func:`build_config`.
Each method's options appear as ``<method>.<option>`` from its ``Options`` dataclass, so a new
method's options need no change here.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from fusion_ros.device import PRECISION_CHOICES, resolve_device, resolve_dtype
from fusion_ros.errors import ConfigError, InputError, MethodUnavailableError
from fusion_ros.methods.base import FusionMethod
from fusion_ros.options import build_options, coerce, field_default, options_as_dict
from fusion_ros.registration import Registration
from fusion_ros.registry import DEFAULT_METHOD, get_method_class, method_names, method_unavailable_reason
from fusion_ros.thermal import NORMALIZATIONS, ThermalConfig
from fusion_ros.weights import default_weights_dir

__all__ = [
    "NODE_NAME",
    "FusionConfig",
    "ParamSpec",
    "RegistrationConfig",
    "build_config",
    "parameter_table",
    "parse_params_yaml",
    "render_yaml",
]

#: The node's default name, the key its parameters files are read under.
NODE_NAME = "fusion_node"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_RELIABILITY = ("best_effort", "reliable")


# --------------------------------------------------------------------------------------------
# Registration: the homography and the size-mismatch rule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationConfig:
    """How thermal pixels are placed on the RGB frame (``registration.*`` parameters).

    Attributes:
        homography: 9 row-major numbers mapping thermal pixel (x, y, 1) to RGB pixel; ``None``
            (also what the identity becomes) means "the same pixel grid"; all zeros, NaN/inf or a
            singular matrix are refused.
        resize: with no homography, accept thermal and RGB frames of different sizes and stretch
            the thermal frame over the RGB one — only right for co-boresighted cameras with the
            same field of view. Without it such a pair is refused (:meth:`check`), in the node,
            the CLI, bag fusion and the page alike.
    """

    homography: tuple[float, ...] | None = None
    resize: bool = False

    def __post_init__(self) -> None:
        if self.homography is not None:
            # Registration owns the homography rules (9 finite numbers, not all zero, not singular; identity = none).
            object.__setattr__(self, "homography", Registration(self.homography).homography)

    def mismatch(self, thermal_hw: Sequence[int], visible_hw: Sequence[int]) -> str | None:
        """Why a thermal frame of ``thermal_hw`` (H, W) cannot be fused onto a ``visible_hw`` one, or None."""
        if self.homography is not None or self.resize or tuple(thermal_hw) == tuple(visible_hw):
            return None
        return (
            f"thermal {thermal_hw[1]}x{thermal_hw[0]} and rgb {visible_hw[1]}x{visible_hw[0]} differ and "
            "registration.homography is the identity (set it, or registration.resize for co-aligned cameras)"
        )

    def check(self, thermal_hw: Sequence[int], visible_hw: Sequence[int]) -> None:
        """Raise :class:`~fusion_ros.errors.InputError` with :meth:`mismatch`'s reason, if any."""
        reason = self.mismatch(thermal_hw, visible_hw)
        if reason:
            raise InputError(reason)

    def build(self) -> Registration:
        """The warp that applies this registration on the fusion device."""
        return Registration(self.homography, resize=self.resize)


# --------------------------------------------------------------------------------------------
# The validated configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionConfig:
    """Everything a :class:`~fusion_ros.fuser.Fuser` is built from, validated; build it with
    :func:`build_config` (parameter names) or :meth:`create` (Python values).

    Attributes:
        method: registered method name.
        method_class: the method's class, resolved once.
        options: the method's typed ``Options`` instance.
        device: the device as asked (``auto``, ``cpu``, ``cuda:1`` …), kept for parameters and export.
        precision: the precision as asked (``auto``, ``fp32`` …).
        weights_dir: the weights folder as asked (``""``: :func:`~fusion_ros.weights.default_weights_dir`).
        torch_device: ``device`` resolved on this machine.
        dtype: ``precision`` resolved for ``torch_device``.
        thermal: thermal normalisation.
        registration: homography and the size-mismatch rule.
    """

    method: str
    method_class: type[FusionMethod]
    options: Any
    device: str
    precision: str
    weights_dir: str
    torch_device: torch.device
    dtype: torch.dtype
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)

    @classmethod
    def create(
        cls,
        method: str = DEFAULT_METHOD,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        weights_dir: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
        thermal: ThermalConfig | None = None,
        registration: RegistrationConfig | None = None,
        check_available: bool = True,
    ) -> FusionConfig:
        """Validate Python values into a config (what :func:`build_config` does after reading parameter names).

        Raises :class:`~fusion_ros.errors.UnknownMethodError` (lists the valid names),
        :class:`ConfigError` (a bad option, device or precision) or, with ``check_available``,
        :class:`~fusion_ros.errors.MethodUnavailableError` (names the missing file) — one line each,
        fit for a ``SetParametersResult`` reason.
        """
        method_class = get_method_class(method)
        typed = build_options(method_class.Options, options, method)
        torch_device = resolve_device(device)
        dtype = resolve_dtype(precision, torch_device)
        config = cls(
            method=method,
            method_class=method_class,
            options=typed,
            device=str(device),
            precision=str(precision),
            weights_dir=str(weights_dir) if weights_dir else "",
            torch_device=torch_device,
            dtype=dtype,
            thermal=thermal if thermal is not None else ThermalConfig(),
            registration=registration if registration is not None else RegistrationConfig(),
        )
        if check_available:
            config.check_available()
        return config

    def check_available(self) -> None:
        """Raise :class:`~fusion_ros.errors.MethodUnavailableError` (naming what is missing) unless the
        method can be built here — the one availability check, done once per configuration."""
        reason = method_unavailable_reason(self.method_class, self.weights_path, self.option_values())
        if reason:
            raise MethodUnavailableError(f"method {self.method!r} is unavailable: {reason}")

    @property
    def weights_path(self) -> Path:
        """The folder weight files are read from."""
        return Path(self.weights_dir).expanduser() if self.weights_dir else default_weights_dir()

    @property
    def build_key(self) -> tuple:
        """What a change of needs a new model (``weights_dir`` only for a method with weights); thermal
        and registration settings are applied to a running one."""
        needs_weights = self.method_class.weights_key is not None
        return (self.method, self.device, self.precision, self.weights_dir if needs_weights else "", self.options)

    def option_values(self) -> dict[str, Any]:
        """The method's options by name (every option, defaults included)."""
        return options_as_dict(self.options)

    def parameters(self) -> dict[str, Any]:
        """This configuration as flat parameter values (``build_config(c.parameters())`` equals ``c``),
        e.g. what the node sets back after a failed switch."""
        params: dict[str, Any] = {
            "method": self.method,
            "device": self.device,
            "precision": self.precision,
            "weights_dir": self.weights_dir,
        }
        params.update({f"{self.method}.{k}": _parameter_value(v) for k, v in self.option_values().items()})
        params.update({f"thermal.{f.name}": _parameter_value(getattr(self.thermal, f.name)) for f in dataclasses.fields(ThermalConfig)})
        params["registration.homography"] = list(self.registration.homography or _IDENTITY)
        params["registration.resize"] = self.registration.resize
        return params


def _parameter_value(value: Any) -> Any:
    # ROS parameters are typed by value: number lists are float arrays.
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------------
# The parameter table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One parameter.

    Attributes:
        name: full dotted name (``sync.slop``).
        default: default value; its Python type is the parameter type (float lists: double array).
        description: what it does and its unit.
        choices: allowed string values (put in the descriptor's ``additional_constraints``).
        range: inclusive (low, high) for numbers.
        read_only: fixed after start (topics, QoS): changing them needs a restart.
        constraints: extra human-readable constraint text.
        numbers: a list of numbers that may be given as integers (``[1, 0, 0, ...]``): declared
            with dynamic typing so ``ros2 param set`` and YAML files need no ``.0``; checked here.
    """

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None
    read_only: bool = False
    constraints: str = ""
    numbers: bool = False

    @property
    def constraint_text(self) -> str:
        """``additional_constraints`` of the descriptor."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.constraints:
            parts.append(self.constraints)
        return "; ".join(parts)

    def check(self, value: Any) -> Any:
        """``value`` converted to this parameter's type and checked against its choices and range,
        as the node's descriptors do (strings such as ``"0, 65535"`` are accepted for number lists)."""
        value = coerce(value, self.default, self.name)
        if self.numbers:
            value = _numbers(value, self.name, len(self.default))
        if self.choices and value not in self.choices:
            raise ConfigError(f"parameter {self.name}: {value!r} is not one of {', '.join(self.choices)}")
        if self.range and not self.range[0] <= value <= self.range[1]:
            raise ConfigError(f"parameter {self.name}: {value} is outside [{self.range[0]}, {self.range[1]}]")
        return value


_THERMAL = ThermalConfig()

#: Every parameter but ``method`` (whose choices are the registered methods) and the method options.
_FIXED_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("device", "auto", "compute device; live (reloads the method)",
              constraints="auto (CUDA when present, else CPU), cpu, cuda or cuda:N"),
    ParamSpec("precision", "auto", "compute precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16 (CUDA only); "
              "live (reloads the method)", choices=PRECISION_CHOICES),
    ParamSpec("weights_dir", "", "folder with the methods' weight files; empty: $FUSION_ROS_WEIGHTS_DIR, the checkout's weights/ "
              "or share/fusion_ros/weights; live (reloads the method)"),
    ParamSpec("sync.queue_size", 10, "messages kept per input while waiting for a partner (message_filters' queue_size); live",
              range=(1, 1000)),
    ParamSpec("sync.slop", 0.05, "largest thermal/RGB stamp difference of a pair, in seconds, exclusive (message_filters' slop); "
              "each message pairs with its nearest partner; live", range=(1e-6, 10.0)),
    ParamSpec("sync.jump_threshold", 1.0, "seconds a stamp must differ (either way) from the newest stamp to be held as a "
              "possible time jump: 3 messages that agree restart pairing (bag loop, clock reset, driver restart, "
              "long pause), 3 of the current time line first drop it as a wrong stamp; live", range=(1e-3, 3600.0)),
    ParamSpec("thermal.normalization", _THERMAL.normalization, "thermal to [0,1]: auto (8-bit as is, 16-bit/float by percentile "
              "window), percentile (always the window from percentiles), fixed (thermal.window); live", choices=NORMALIZATIONS),
    ParamSpec("thermal.low_percentile", _THERMAL.low_percentile, "lower percentile of the thermal window (auto/percentile); live",
              range=(0.0, 100.0)),
    ParamSpec("thermal.high_percentile", _THERMAL.high_percentile, "upper percentile of the thermal window (auto/percentile); live",
              range=(0.0, 100.0), constraints="greater than thermal.low_percentile"),
    ParamSpec("thermal.window", list(_THERMAL.window), "[low, high] thermal window for fixed normalization, in the image's unit "
              "(counts for mono16/16UC1, the camera's temperature unit for 32FC1); live", constraints="2 numbers, high > low",
              numbers=True),
    ParamSpec("thermal.smoothing", _THERMAL.smoothing, "weight of the previous frame's thermal window in the current one "
              "(0: every frame on its own window, flickers; 0.9: steady video); live", range=(0.0, 0.999)),
    ParamSpec("thermal.invert", _THERMAL.invert, "map hot to dark (black-hot); live"),
    ParamSpec("registration.homography", list(_IDENTITY), "row-major 3x3 homography mapping thermal pixels (x, y, 1) to RGB "
              "pixels; identity: same pixel grid; live", constraints="9 numbers, not singular", numbers=True),
    ParamSpec("registration.resize", False, "with the identity homography, accept thermal and RGB of different sizes and "
              "stretch thermal over the RGB frame (only right for co-boresighted cameras with the same field of view); "
              "otherwise such pairs are rejected as a size mismatch; live"),
    # -- automatic registration (fusion_ros.registration.auto, fusion_ros.ros.auto_registration) --
    ParamSpec("registration.auto", False, "estimate registration.homography from live pairs (structure of the scene, "
              "no target) in a low-priority child process that uses only idle CPU time; switches only to confidently "
              "better matrices, by setting registration.homography; restart to change", read_only=True),
    ParamSpec("registration.auto_interval", 10.0, "least seconds between two background estimates; restart to change",
              range=(1.0, 3600.0), read_only=True),
    ParamSpec("registration.auto_max_interval", 160.0, "once the matrix has settled (estimates within 1 px of it), the "
              "wait between estimates doubles up to this many seconds; a moving estimate returns to auto_interval "
              "(at or below auto_interval: no backing off); restart to change", range=(1.0, 3600.0), read_only=True),
    ParamSpec("registration.auto_check_ratio", 0.7, "between estimates, every auto_interval the matrix in use is scored on "
              "new pairs (a small fraction of an estimate's CPU); below this fraction of its previous score (a knocked "
              "camera) an estimate starts at once; 0: no checks; restart to change", range=(0.0, 0.99), read_only=True),
    ParamSpec("registration.auto_frames", 5, "pairs (0.5 s apart at least) estimated jointly; restart to change",
              range=(1, 50), read_only=True),
    ParamSpec("registration.auto_min_confidence", 0.6, "estimates below this confidence are refused; restart to change",
              range=(0.0, 1.0), read_only=True),
    ParamSpec("registration.save_path", "", "if set, the ~/save_registration service (std_srvs/Trigger) writes the "
              "matrix in use there as a parameters file on request (with or without registration.auto), and each "
              "estimate registration.auto accepts is also written there; restart to change", read_only=True),
    # -- end of automatic registration --------------------------------------------------------
    ParamSpec("rgb.transport", "raw", "RGB input: raw (sensor_msgs/Image on rgb/image_raw) or compressed "
              "(sensor_msgs/CompressedImage on rgb/image_raw/compressed, JPEG/PNG); restart to change",
              choices=("raw", "compressed"), read_only=True),
    ParamSpec("qos.reliability", "best_effort", "reliability of the input subscriptions (best_effort = sensor_data QoS, "
              "matches reliable and best-effort publishers); restart to change", choices=_RELIABILITY, read_only=True),
    ParamSpec("qos.depth", 5, "history depth of the input subscriptions (KEEP_LAST); restart to change",
              range=(1, 100), read_only=True),
    ParamSpec("output.reliability", "reliable", "reliability of fused/image_raw and fused/camera_info (reliable: `ros2 topic "
              "echo` and rosbag record get every frame); restart to change", choices=_RELIABILITY, read_only=True),
    ParamSpec("output.depth", 5, "history depth of the fused publishers; restart to change", range=(1, 100), read_only=True),
    ParamSpec("torch_threads", 1, "CPU threads of the model (torch.set_num_threads); 0: PyTorch's default (one per core). "
              "Where other busy processes share the cores, fewer threads avoid contention; restart to change",
              range=(0, 256), read_only=True),
    ParamSpec("diagnostics.period", 1.0, "seconds between /diagnostics messages; restart to change", range=(0.1, 60.0), read_only=True),
    ParamSpec("diagnostics.silent_warn", 5.0, "seconds without a message on an input (after start) before /diagnostics "
              "says WARN with the likely reason (incompatible QoS, topic name); restart to change", range=(0.5, 3600.0),
              read_only=True),
    ParamSpec("diagnostics.silent_error", 30.0, "seconds without a published fused frame (after start) before /diagnostics "
              "says ERROR; restart to change", range=(1.0, 86400.0), read_only=True),
    ParamSpec("input.max_pixels", 8_388_608, "largest accepted thermal or RGB image in pixels (8 Mpx: 4K UHD fits); larger "
              "ones are rejected and counted, so one huge frame cannot grow the node's memory for good; live",
              range=(1, 1_000_000_000)),
)  # fmt: skip
_FIXED = {spec.name: spec for spec in _FIXED_SPECS}


def _method_spec() -> ParamSpec:
    return ParamSpec(
        "method",
        DEFAULT_METHOD,
        "fusion method; change it live with `ros2 param set` (loads in the background, then swaps). "
        "Unknown or unavailable (missing weights) names are rejected with the reason",
        choices=tuple(method_names()),
    )


def _method_option_specs() -> list[ParamSpec]:
    specs = []
    for method in method_names():
        for f in get_method_class(method).option_fields():
            default = _parameter_value(field_default(f))
            meta = f.metadata
            choices = meta.get("choices")
            text_choices = bool(choices) and isinstance(default, str)
            specs.append(
                ParamSpec(
                    f"{method}.{f.name}",
                    default,
                    f"[{method}] {meta.get('help', '')} (applies live while {method!r} runs; reloads the method)",
                    choices=tuple(str(c) for c in choices) if text_choices else None,
                    range=tuple(meta["range"]) if meta.get("range") else None,
                    constraints="one of: " + ", ".join(map(str, choices)) if choices and not text_choices else "",
                )
            )
    return specs


def parameter_table() -> list[ParamSpec]:
    """Every parameter of ``fusion_node``, in declaration order."""
    return [_method_spec(), *_FIXED_SPECS, *_method_option_specs()]


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def _numbers(value: Any, name: str, count: int) -> list[float]:
    """A list of ``count`` real numbers (ints accepted) or :class:`ConfigError`."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ConfigError(f"{name} needs a list of {count} numbers, got {value!r}")
    if any(isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float)) for v in value):
        raise ConfigError(f"{name} needs a list of {count} numbers, got {list(value)!r}")
    if len(value) != count:
        raise ConfigError(f"{name} needs {count} numbers, got {len(value)}")
    return [float(v) for v in value]


def build_config(values: Mapping[str, Any], *, check_available: bool = True) -> FusionConfig:
    """Validate parameter values (name → value, e.g. the node's parameters or a YAML file's) into a
    :class:`FusionConfig`; a name not given takes its default from :func:`parameter_table`.

    Only ``<method>.<option>`` values of the chosen method are read (the node declares every
    method's); names of the table that do not describe fusion (``sync.*``, ``qos.*`` …) are
    ignored here, and a name that is none of these (a typo) is a :class:`ConfigError`. Other
    errors as :meth:`FusionConfig.create`.
    """
    def get(name: str) -> Any:
        return values[name] if name in values else _FIXED[name].default

    method = str(values.get("method", DEFAULT_METHOD))
    prefixes = {*method_names(), method}  # an unknown method is reported as such, by FusionConfig.create
    unknown = sorted(k for k in values if k != "method" and k not in _FIXED and k.partition(".")[0] not in prefixes)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; see `fusion-ros params` for every name")
    prefix = f"{method}."
    options = {k[len(prefix):]: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k.startswith(prefix)}
    window = _numbers(get("thermal.window"), "thermal.window", 2)
    thermal = ThermalConfig(
        normalization=str(get("thermal.normalization")),
        low_percentile=float(get("thermal.low_percentile")),
        high_percentile=float(get("thermal.high_percentile")),
        window=(window[0], window[1]),
        smoothing=float(get("thermal.smoothing")),
        invert=bool(get("thermal.invert")),
    )
    registration = RegistrationConfig(
        tuple(_numbers(get("registration.homography"), "registration.homography", 9)), bool(get("registration.resize"))
    )
    return FusionConfig.create(
        method,
        device=str(get("device")),
        precision=str(get("precision")),
        weights_dir=str(get("weights_dir")),
        options=options,
        thermal=thermal,
        registration=registration,
        check_available=check_available,
    )


# --------------------------------------------------------------------------------------------
# Parameters files (ros2 --params-file format)
# --------------------------------------------------------------------------------------------


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def parse_params_yaml(text: str, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The flat parameters of ``node_name`` in a ROS 2 parameters file.

    Accepts the forms ``rcl`` accepts for a node: ``fusion_node``, ``/fusion_node``,
    ``/ns/fusion_node``, ``/**``; nested maps and dotted keys both flatten to ``a.b``.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"parameters file is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(doc, Mapping):
        raise ConfigError("parameters file must be a mapping of node names to ros__parameters")
    for key, section in doc.items():
        name = str(key).rstrip("/")
        if name in ("/**", "**") or name.split("/")[-1] == node_name:
            if not isinstance(section, Mapping) or not isinstance(section.get("ros__parameters"), Mapping):
                raise ConfigError(f"section {key!r} of the parameters file has no ros__parameters mapping")
            return _flatten(section["ros__parameters"])
    raise ConfigError(f"parameters file has no section for node {node_name!r} (keys: {', '.join(map(str, doc))})")


# --------------------------------------------------------------------------------------------
# config/fusion.yaml
# --------------------------------------------------------------------------------------------


def _yaml_value(value: Any) -> str:
    """A YAML scalar/flow list that rcl's parser and PyYAML read back as the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _comment(spec: ParamSpec, indent: str) -> list[str]:
    text = spec.description
    extra = [spec.constraint_text] if spec.constraint_text else []
    if spec.range is not None:
        extra.append(f"range [{_yaml_value(spec.range[0])}, {_yaml_value(spec.range[1])}]")
    if spec.read_only:
        extra.append("read-only")
    if extra:
        text += " (" + "; ".join(extra) + ")"
    return [indent + "# " + line for line in textwrap.wrap(text, 100 - len(indent) - 2)]


def render_yaml(node_name: str = "/**/fusion_node") -> str:
    """``config/fusion.yaml``: every parameter with its default and a comment saying what it does.

    The node key ``/**/fusion_node`` matches the node in any namespace (a plain ``fusion_node``
    key only matches ``/fusion_node``, so a namespaced launch would silently ignore the file).

    Regenerate with ``fusion-ros params > config/fusion.yaml`` after adding a
    parameter or a method option (a test fails while the file and the table disagree).
    """
    lines = [
        "# Parameters of fusion_node: every parameter, its default and what it does.",
        "# Generated from the parameter table: fusion-ros params > config/fusion.yaml",
        "# Use: ros2 launch fusion_ros fuse.launch.py params_file:=<copy of this file>",
        "#  or: ros2 run fusion_ros fusion_node --ros-args --params-file <copy of this file>, with",
        "#      FASTDDS_DEFAULT_PROFILES_FILE set to the shipped config/fastdds_shm.xml (the launch file sets it)",
        "# Parameters not marked read-only can be changed while running: ros2 param set /fusion_node <name> <value>",
        "# The key /**/fusion_node applies to the node in any namespace.",
        f"{node_name}:",
        "  ros__parameters:",
    ]
    group = ""
    for spec in parameter_table():
        head, _, leaf = spec.name.rpartition(".")
        if head != group:
            group = head
            lines.append("")
            if head:
                lines.append(f"    {head}:")
        indent = "      " if head else "    "
        lines += _comment(spec, indent)
        lines.append(f"{indent}{leaf}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"
