"""The node's ROS parameters, declared from the one ``ParamSpec`` table (``seg_perception.params``).

Declaring turns each spec into a ``ParameterDescriptor`` (description, range, read-only);
a value from the params file that is out of range or of the wrong type is reported and
replaced by the default, and so is a group of values that breaks a constraint between
parameters (``FrameProcessor.check``). Updates at run time are checked the same way,
one parameter at a time and then together, before anything changes.
"""

from __future__ import annotations

from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from seg_perception import params as param_specs
from seg_perception.pipeline import FrameProcessor
from seg_perception.pipeline.depth import depth3d_params_from
from seg_perception.pipeline.tracking import tracker_params_from
from seg_perception.ros.diagnostics import ERROR, WARN

# (problem kind, level, message)
Report = Callable[[str, int, str], None]
# Parameter groups with constraints between their members: name prefix, the check.
_GROUPS = (("depth", depth3d_params_from), ("tracking", tracker_params_from))


def descriptor(spec: param_specs.ParamSpec) -> ParameterDescriptor:
    desc = spec.description
    if spec.choices:
        desc += f" One of: {', '.join(spec.choices)}."
    # dynamic_typing: a value of the wrong type reaches our callback, which refuses
    # it with a reason naming the parameter (rclpy's own check says only "Wrong
    # parameter type, expected '2' got '4'").
    d = ParameterDescriptor(description=desc, read_only=spec.read_only, dynamic_typing=True)
    if spec.min is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    elif spec.min is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=int(spec.step or 1))]
    return d


def values_of(node: rclpy.node.Node) -> dict[str, Any]:
    """Every parameter's current value, as the ``{name: value}`` dict the pipeline takes."""
    values = {spec.name: node.get_parameter(spec.name).value for spec in param_specs.PARAMETERS}
    for spec in param_specs.PARAMETERS:
        if isinstance(spec.default, list):  # rclpy reads `[]` in a params file as "not set" (None)
            values[spec.name] = list(values[spec.name] or [])
        if spec.read_only and spec.check(values[spec.name]):
            # A bad start-up value (reported by ``declare``) stays in a read-only parameter,
            # which cannot be set back: the default is used instead.
            values[spec.name] = param_specs.defaults()[spec.name]
    return values


def declare(node: rclpy.node.Node, report: Report) -> None:
    """Declare every parameter; bad values from the params file fall back to defaults (reported)."""
    for spec in param_specs.PARAMETERS:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except Exception as exc:  # wrong type or out of range in the params file
            node.declare_parameter(spec.name, spec.default, descriptor(spec), ignore_override=True)
            report(f"parameter.{spec.name}", ERROR, f"{exc}; using the default {spec.default!r}")
        why = spec.check(node.get_parameter(spec.name).value)
        if why:  # e.g. a string outside its choices, which rclpy cannot range-check
            report(f"parameter.{spec.name}", ERROR, f"{why}; using the default {spec.default!r}")
            node.set_parameters([rclpy.parameter.Parameter(spec.name, value=spec.default)])
    # Constraints between parameters (depth_min < depth_max, tracking_low_score <=
    # tracking_high_score, an odd window) that no single range expresses: a params file
    # that breaks one is reported and that group falls back to its defaults.
    for group, build in _GROUPS:
        try:
            build(values_of(node))
        except ValueError as exc:
            names = [n for n in param_specs.PARAMETERS_BY_NAME if n.startswith(f"{group}_")]
            report(f"parameter.{group}", ERROR, f"{exc}; using the defaults of the {group}_* parameters")
            node.set_parameters([rclpy.parameter.Parameter(n, value=param_specs.PARAMETERS_BY_NAME[n].default)
                                 for n in names])
    for name, problem in param_specs.unknown_parameters(getattr(node, "_parameter_overrides", {})):
        report(f"parameter.{name}", ERROR, f"{problem}; its value is ignored")  # a typo runs the default


def check_update(parameters: list, current: dict[str, Any], report: Report) -> tuple[SetParametersResult, dict]:
    """(result, changed values) for a parameter update: each value checked against its
    spec, then all together (a bad combination is refused whole, nothing changes)."""
    for param in parameters:
        spec = param_specs.PARAMETERS_BY_NAME.get(param.name)
        if spec is None:
            continue
        why = spec.check(param.value)
        if why:
            report(f"parameter.{spec.name}", WARN, f"refused parameter update: {why}")
            return SetParametersResult(successful=False, reason=why), {}
    changed = {prm.name: prm.value for prm in parameters}
    try:
        FrameProcessor.check({**current, **changed})
    except ValueError as exc:
        report("parameter.combination", WARN, f"refused parameter update: {exc}")
        return SetParametersResult(successful=False, reason=str(exc)), {}
    return SetParametersResult(successful=True), changed
