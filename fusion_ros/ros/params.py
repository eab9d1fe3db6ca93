"""The parameter table (:func:`fusion_ros.config.parameter_table`) as rclpy parameter descriptors.

Everything about the parameters that needs no rclpy — names, defaults, help, validation into a
:class:`~fusion_ros.config.FusionConfig`, ``config/fusion.yaml`` — is in :mod:`fusion_ros.config`;
this module only turns a :class:`~fusion_ros.config.ParamSpec` into what ``declare_parameter`` takes.
"""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from fusion_ros.config import ParamSpec

__all__ = ["as_declared", "descriptor"]


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The descriptor of ``spec``: type, help, constraints, range, read-only; number lists are
    declared with dynamic typing (``[1, 0, 0, …]`` needs no ``.0``) and checked by the config."""
    desc = ParameterDescriptor(
        name=spec.name,
        type=Parameter.Type.from_parameter_value(spec.default).value,
        description=spec.description,
        additional_constraints=spec.constraint_text,
        read_only=spec.read_only,
        dynamic_typing=spec.numbers,
    )
    if spec.range is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    return desc


def as_declared(spec: ParamSpec, given: Parameter) -> Parameter:
    """``given`` with whole numbers as the doubles ``spec`` declares.

    ``ros2 param set /fusion_node sync.slop 1``, ``-p sync.slop:=1`` and ``slop: 1`` in a params file all
    send an integer, which rclpy refuses for a double parameter ("Wrong parameter type"); a number list
    (``[1, 0, 0, …]``) arrives as integers too and would be stored as an integer array. Anything else is
    returned as is, for rclpy and the config to check.
    """
    if isinstance(spec.default, float) and given.type_ == Parameter.Type.INTEGER:
        return Parameter(given.name, value=float(given.value))
    if spec.numbers and given.type_ == Parameter.Type.INTEGER_ARRAY:
        return Parameter(given.name, value=[float(v) for v in given.value])
    return given
