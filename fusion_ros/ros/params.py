"""The node's parameters in one table, and the configuration they describe — without rclpy.

One table (name, default, description, constraints, live or read-only) feeds the node's
``ParameterDescriptor`` declarations, the documented ``config/fusion.yaml`` (a test checks they
agree) and validation. Each fusion method's options are added as ``<method>.<option>`` from the
method classes' ``Options`` dataclass, so a new method's options appear with no node change.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fusion_ros.device import PRECISION_CHOICES, resolve_device, resolve_dtype
from fusion_ros.errors import ConfigError, MethodUnavailableError
from fusion_ros.options import build_options, field_default
from fusion_ros.registration import Registration
from fusion_ros.registry import DEFAULT_METHOD, get_method_class, method_names, method_unavailable_reason
from fusion_ros.thermal import ThermalConfig
from fusion_ros.weights import default_weights_dir

__all__ = ["FuserConfig", "ParamSpec", "config_from_values", "parameter_table", "render_yaml"]

_IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
_RELIABILITY = ("best_effort", "reliable")


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter.

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


def _method_option_specs() -> list[ParamSpec]:
    specs = []
    for method in method_names():
        cls = get_method_class(method)
        for f in cls.option_fields():
            default = field_default(f)
            if isinstance(default, tuple):
                default = list(default)
            if isinstance(default, list):
                default = [float(v) for v in default]
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
    methods = method_names()
    return [
        ParamSpec(
            "method",
            DEFAULT_METHOD,
            "fusion method; change it live with `ros2 param set` (loads in the background, then swaps). "
            "Unknown or unavailable (missing weights) names are rejected with the reason",
            choices=tuple(methods),
        ),
        ParamSpec("device", "auto", "compute device; live (reloads the method)",
                  constraints="auto (CUDA when present, else CPU), cpu, cuda or cuda:N"),
        ParamSpec("precision", "auto", "compute precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16 (CUDA only); "
                  "live (reloads the method)",
                  choices=PRECISION_CHOICES),
        ParamSpec("weights_dir", "", "folder with the methods' weight files; empty: $FUSION_ROS_WEIGHTS_DIR, the checkout's weights/ "
                  "or share/fusion_ros/weights; live (reloads the method)"),
        ParamSpec("sync.queue_size", 10, "messages kept per input while waiting for a partner (message_filters' queue_size); live",
                  range=(1, 1000)),
        ParamSpec("sync.slop", 0.05, "largest thermal/RGB stamp difference of a pair, in seconds, exclusive (message_filters' slop); "
                  "each message pairs with its nearest partner; live", range=(1e-6, 10.0)),
        ParamSpec("sync.jump_back", 1.0, "seconds a stamp must differ (either way) from the newest stamp to be held as a "
                  "possible time jump: 3 messages that agree restart pairing (bag loop, clock reset, driver restart, "
                  "long pause), 3 of the current time line first drop it as a wrong stamp; live", range=(1e-3, 3600.0)),
        ParamSpec("thermal.normalization", "auto", "thermal to [0,1]: auto (8-bit as is, 16-bit/float by percentile window), "
                  "percentile (always the window from percentiles), fixed (thermal.window); live", choices=("auto", "percentile", "fixed")),
        ParamSpec("thermal.low_percentile", 1.0, "lower percentile of the thermal window (auto/percentile); live", range=(0.0, 100.0)),
        ParamSpec("thermal.high_percentile", 99.0, "upper percentile of the thermal window (auto/percentile); live", range=(0.0, 100.0),
                  constraints="greater than thermal.low_percentile"),
        ParamSpec("thermal.window", [0.0, 65535.0], "[low, high] thermal window for fixed normalization, in the image's unit "
                  "(counts for mono16/16UC1, the camera's temperature unit for 32FC1); live", constraints="2 numbers, high > low",
                  numbers=True),
        ParamSpec("thermal.smoothing", 0.9, "weight of the previous window in its temporal smoothing (0: per frame, flickers; "
                  "0.9: steady video); live", range=(0.0, 0.999)),
        ParamSpec("thermal.invert", False, "map hot to dark (black-hot); live"),
        ParamSpec("registration.homography", list(_IDENTITY), "row-major 3x3 homography mapping thermal pixels (x, y, 1) to RGB "
                  "pixels; identity: same pixel grid; live", constraints="9 numbers, not singular",
                  numbers=True),
        ParamSpec("registration.resize", False, "with the identity homography, accept thermal and RGB of different sizes and "
                  "stretch thermal over the RGB frame (only right for co-boresighted cameras with the same field of view); "
                  "otherwise such pairs are rejected as a size mismatch; live"),
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
        ParamSpec("torch_threads", 0, "CPU threads of the model (torch.set_num_threads); 0: PyTorch's default (all cores). "
                  "Where other busy processes share the cores, use fewer: idle threads spin against them (2-core "
                  "demo with bag player and recorder: pyramid 10 ms with 1 thread, 112 ms with 2); restart to change", range=(0, 256), read_only=True),
        ParamSpec("diagnostics.period", 1.0, "seconds between /diagnostics messages; restart to change", range=(0.1, 60.0), read_only=True),
        ParamSpec("diagnostics.silent_warn", 5.0, "seconds without a message on an input (after start) before /diagnostics "
                  "says WARN with the likely reason (incompatible QoS, topic name); restart to change", range=(0.5, 3600.0),
                  read_only=True),
        ParamSpec("diagnostics.silent_error", 30.0, "seconds without a published fused frame (after start) before "
                  "/diagnostics says ERROR; restart to change", range=(1.0, 86400.0), read_only=True),
        ParamSpec("input.max_pixels", 8_388_608, "largest accepted thermal or RGB image in pixels (8 Mpx: 4K UHD fits); "
                  "larger ones are rejected and counted, so one huge frame cannot grow the node's memory for good; live",
                  range=(1, 1_000_000_000)),
    ] + _method_option_specs()


@dataclass(frozen=True)
class FuserConfig:
    """Everything a :class:`~fusion_ros.fuser.Fuser` is built from, read from parameter values.

    ``build_key`` changes need a new model (background load); thermal and registration changes
    are applied to the running one.
    """

    method: str
    device: str
    precision: str
    weights_dir: str
    options: dict[str, Any] = field(default_factory=dict)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    homography: tuple[float, ...] | None = None
    resize: bool = False

    @property
    def build_key(self) -> tuple:
        """Settings whose change needs a new model (``weights_dir`` only for a method with weights)."""
        needs_weights = get_method_class(self.method).weights_key is not None
        return (self.method, self.device, self.precision, self.weights_dir if needs_weights else "", tuple(sorted(self.options.items())))

    def weights_path(self) -> Path | None:
        return Path(self.weights_dir).expanduser() if self.weights_dir else None

    def fuser_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Fuser(method, **kwargs)``."""
        return {
            "device": self.device,
            "precision": self.precision,
            "weights_dir": self.weights_path(),
            "options": self.options,
            "thermal": self.thermal,
            "homography": self.homography,
        }


def _numbers(value: Any, name: str, count: int) -> list[float]:
    """A list of ``count`` real numbers (ints accepted) or :class:`ConfigError`."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ConfigError(f"{name} needs a list of {count} numbers, got {value!r}")
    if any(isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float)) for v in value):
        raise ConfigError(f"{name} needs a list of {count} numbers, got {list(value)!r}")
    if len(value) != count:
        raise ConfigError(f"{name} needs {count} numbers, got {len(value)}")
    return [float(v) for v in value]


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def config_from_values(values: Mapping[str, Any], *, check_available: bool = True) -> FuserConfig:
    """Validate parameter values (name → value) into a :class:`FuserConfig`.

    Raises :class:`ConfigError` (unknown method lists the valid ones) or
    :class:`~fusion_ros.errors.MethodUnavailableError` (names the missing file) with a one-line
    message suitable as a ``SetParametersResult`` reason.
    """
    method = str(values["method"])
    cls = get_method_class(method)
    device = str(values["device"])
    precision = str(values["precision"])
    resolve_dtype(precision, resolve_device(device))
    weights_dir = str(values["weights_dir"])
    prefix = f"{method}."
    options = {k[len(prefix):]: _freeze(v) for k, v in values.items() if k.startswith(prefix)}
    build_options(cls.Options, options, method)
    if check_available:
        wdir = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
        reason = method_unavailable_reason(cls, wdir, options)
        if reason:
            raise MethodUnavailableError(f"method {method!r} is unavailable: {reason}")
    window = _numbers(values["thermal.window"], "thermal.window", 2)
    thermal = ThermalConfig(
        mode=str(values["thermal.normalization"]),
        low_pct=float(values["thermal.low_percentile"]),
        high_pct=float(values["thermal.high_percentile"]),
        window=(window[0], window[1]),
        ema=float(values["thermal.smoothing"]),
        invert=bool(values["thermal.invert"]),
    )
    registration = Registration(_numbers(values["registration.homography"], "registration.homography", 9))
    return FuserConfig(
        method=method,
        device=device,
        precision=precision,
        weights_dir=weights_dir,
        options=options,
        thermal=thermal,
        homography=registration.homography,
        resize=bool(values["registration.resize"]),
    )


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

    Regenerate with ``python -m fusion_ros.ros.params > config/fusion.yaml`` after adding a
    parameter or a method option (a test fails while the file and the table disagree).
    """
    lines = [
        "# Parameters of fusion_node: every parameter, its default and what it does.",
        "# Generated from the node's parameter table: python -m fusion_ros.ros.params > config/fusion.yaml",
        "# Use: ros2 launch fusion_ros fuse.launch.py params_file:=<copy of this file>",
        "#  or: ros2 run fusion_ros fusion_node --ros-args --params-file <copy of this file>",
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


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
