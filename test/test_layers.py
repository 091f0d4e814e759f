"""Imports go one way: no module of the product imports a layer above it (DESIGN.md: core <
models < runtime < pipeline < ros < tools), lazy imports inside functions included, and the
core imports neither ROS nor torch."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "seg_perception"

# Every top-level module and subpackage of seg_perception, by layer. A module may import its
# own layer and the layers below. Beside DESIGN.md's six: params, streaming, messages and resources
# (ROS-free building blocks) sit with core; bags, evaluation and synth beside models (they use
# only the core); regression, training and benchmark run the pipeline (and the node), below
# the command-line tools.
LAYERS = {
    "core": 0, "params": 0, "streaming": 0, "messages": 0, "resources": 0, "msg": 0,
    "models": 1, "bags": 1, "evaluation": 1, "synth": 1,
    "runtime": 2,
    "pipeline": 3,
    "ros": 4,
    "regression": 5, "training": 5, "benchmark": 5,
    "tools": 6,
}
ROS_OR_TORCH = ("rclpy", "torch", "torchvision", "sensor_msgs", "std_msgs", "geometry_msgs", "builtin_interfaces",
                "diagnostic_msgs", "visualization_msgs", "rcl_interfaces")


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "seg_perception":  # from seg_perception import params
                out += [(node.lineno, f"seg_perception.{a.name}") for a in node.names]
    return out


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(p) for p in _sources()}
    assert parts - LAYERS.keys() == set(), "give new modules a layer in LAYERS (and DESIGN.md)"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in _sources():
        own = _part(path)
        for line, module in _imports(path):
            names = module.split(".")
            if names[0] != "seg_perception" or len(names) < 2:
                continue
            if LAYERS[names[1]] > LAYERS[own]:
                upward.append(f"{path.relative_to(REPO)}:{line} ({own}, layer {LAYERS[own]}) imports {module} "
                              f"(layer {LAYERS[names[1]]})")
    assert upward == []


def test_the_core_imports_neither_ros_nor_torch():
    found = [f"{path.relative_to(REPO)}:{line} imports {module}"
             for path in _sources() if LAYERS[_part(path)] == 0 and _part(path) != "msg"
             for line, module in _imports(path) if module.split(".")[0] in ROS_OR_TORCH]
    assert found == []
