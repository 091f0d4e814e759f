"""TensorRT compatibility audit of every graph we export: ops, attributes, dtypes, shapes.

TensorRT builds an engine by parsing the ONNX graph with its ONNX parser
(onnx-tensorrt); a graph with an operator, attribute or data type that parser does
not support fails on the robot, minutes into ``seg-perception engine``. This test
checks each exported architecture (the shipped model, YOLACT base and ResNet-50,
YOLACT++, CenterMask-Lite and CenterMask, exported small with random weights -- the
operators do not depend on the weights or the input size) and the FP16 and INT8 Q/DQ
graphs ``seg-perception quantize`` writes, against the parser's operator support
matrix of TensorRT 8.6 and 10.x (``test/support/fixtures/onnx_tensorrt_ops``, read from
onnx-tensorrt ``docs/operators.md`` of each release; ``make_lists.py`` there).

What is checked, per graph and version: the opset is in the version's range; every
node is a standard ONNX operator (no custom domain) marked supported; the data type
of each node's data input (the first) is one of the operator's supported types
(INT64 and DOUBLE count as INT32 and FP32, which the parser casts down to, per the
page; UINT8 only as the graph input); Resize uses supported modes; Q/DQ zero points are
0 and activations INT8; ``axes`` inputs the parser needs constant are constant; the
image input's height, width and channels are static. Limits: the page's prose
restrictions are checked only where written out below; TensorRT 11.x has no table in
the onnx-tensorrt repository we could read, so 11.x is audited with the 10.x table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from onnx import TensorProto, numpy_helper, shape_inference  # noqa: E402

from seg_perception.core.metadata import INPUT_NAME  # noqa: E402

OPS_DIR = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "onnx_tensorrt_ops"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "seg_perception_default.onnx"
VERSIONS = {"8.6": ("tensorrt-8.6.txt", 17), "10.x": ("tensorrt-10.x.txt", 20)}  # list, newest opset
TYPE_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
              TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8",
              TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE"}
CAST_DOWN = {"INT64": "INT32", "DOUBLE": "FP32"}  # "TensorRT will attempt to cast down ..." (both pages)
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
CONSTANT_AXES = {"Unsqueeze", "Squeeze", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean", "CumSum"}


def supported_ops(version: str) -> dict[str, set[str]]:
    lines = (OPS_DIR / VERSIONS[version][0]).read_text().splitlines()
    return {op: set(filter(None, types.split(","))) for op, types in
            (line.split("\t") for line in lines if line and not line.startswith("#"))}


def audit(path: Path, version: str) -> list[str]:
    """Everything in the graph at ``path`` TensorRT ``version``'s ONNX parser does not support."""
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    table = supported_ops(version)
    problems: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if not 9 <= opset <= VERSIONS[version][1]:
        problems.append(f"opset {opset} outside 9..{VERSIONS[version][1]}")
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(graph.input) + list(graph.output) + list(graph.value_info)}
    types.update({t.name: t.data_type for t in graph.initializer})
    constants = {t.name for t in graph.initializer}
    constants.update(out for n in graph.node if n.op_type == "Constant" for out in n.output)
    initializers = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}

    def type_ok(name: str, allowed: set[str], may_be_uint8: bool) -> bool:
        t = TYPE_NAMES.get(types.get(name, 0))
        if t is None or not allowed:
            return True  # unknown to shape inference, or the page gives no types
        if t == "UINT8":
            return may_be_uint8 and name in graph_inputs
        return t in allowed or CAST_DOWN.get(t) in allowed

    for node in graph.node:
        where = f"{node.op_type} {node.name or node.output[0]}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r}")
            continue
        if node.op_type not in table:
            problems.append(f"{where}: not supported by the TensorRT {version} ONNX parser")
            continue
        allowed = table[node.op_type]
        if node.op_type == "QuantizeLinear":
            if TYPE_NAMES.get(types.get(node.output[0], 0)) != "INT8":
                problems.append(f"{where}: quantizes to {TYPE_NAMES.get(types.get(node.output[0], 0))}, not INT8")
        elif node.op_type == "DequantizeLinear":
            if TYPE_NAMES.get(types.get(node.input[0], 0)) not in allowed:
                problems.append(f"{where}: dequantizes {TYPE_NAMES.get(types.get(node.input[0], 0))}")
        elif node.op_type == "ConstantOfShape":
            # input 0 is the shape (INT64 by definition); what matters is the type of ``value``.
            # The 8.6 page lists FP32 only, but its importer (builtin_op_importers.cpp at
            # release/8.6-GA) refuses only a UINT8 value and casts INT64 down like any weight.
            value = next((a.t.data_type for a in node.attribute if a.name == "value"), TensorProto.FLOAT)
            if TYPE_NAMES.get(value) == "UINT8":
                problems.append(f"{where}: UINT8 value")
        elif node.input and node.input[0] and not type_ok(node.input[0], allowed, node.op_type == "Cast"):
            # the page's "Supported Types" are those of the data input (ONNX's T): outputs such as
            # a comparison's BOOL or NonMaxSuppression's INT64 indices are fixed by the operator
            problems.append(f"{where}: input type {TYPE_NAMES.get(types[node.input[0]])} not in {sorted(allowed)}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "Resize":
            if attrs.get("mode", "nearest") not in RESIZE_MODES:
                problems.append(f"{where}: resize mode {attrs['mode']}")
            if attrs.get("coordinate_transformation_mode", "half_pixel") not in RESIZE_COORDS:
                problems.append(f"{where}: coordinate_transformation_mode {attrs['coordinate_transformation_mode']}")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = initializers.get(node.input[2])
            if zp is None or np.any(numpy_helper.to_array(zp) != 0):
                problems.append(f"{where}: zero point not a constant 0 (TensorRT needs symmetric quantization)")
        if node.op_type in CONSTANT_AXES and len(node.input) > 1 and node.input[1] \
                and node.input[1] not in constants:
            problems.append(f"{where}: axes computed at run time (TensorRT needs them constant)")
    for inp in graph.input:
        if inp.name == INPUT_NAME:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
            if len(dims) != 4 or None in dims[1:]:
                problems.append(f"input {INPUT_NAME} shape {dims}: height, width and channels must be static")
    return problems


# architecture -> (input size, builder kwargs): small, random weights (the ops do not depend on either)
ARCHITECTURES = {
    "yolact_base": (128, {}),
    "yolact_resnet50": (128, {}),
    "yolact_plus_resnet50": (128, {"mask_rescoring": False}),
    "centermask_lite_vovnet19_slim_dw": (64, {"detections_per_image": 4}),
    "centermask_vovnet57": (64, {"detections_per_image": 4}),
}


class _Exports:
    """Each architecture exported once, when a test first asks for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = {"shipped": SHIPPED}

    def __getitem__(self, arch: str) -> Path:
        if arch not in self.paths:
            from seg_perception.models import build_model
            from seg_perception.models.export import export_onnx, metadata_for_model

            torch.set_num_threads(2)
            torch.manual_seed(0)
            size, kwargs = ARCHITECTURES[arch]
            model = build_model(arch, num_classes=3, input_size=size, **kwargs).eval()
            metadata = metadata_for_model(model, arch, ["a", "b", "c"], [])
            self.paths[arch] = export_onnx(model, metadata, self.root / f"{arch}.onnx")
        return self.paths[arch]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> _Exports:
    return _Exports(tmp_path_factory.mktemp("audit"))


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("graph", ["shipped", *ARCHITECTURES])
def test_exported_graph_is_one_tensorrt_parses(exported, graph, version):
    problems = audit(exported[graph], version)
    assert not problems, f"{graph} for TensorRT {version}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, Path]:
    """The shipped model as ``seg-perception quantize`` writes it, FP16 and INT8 (gate skipped: ops only)."""
    pytest.importorskip("onnxconverter_common")
    import cv2

    from seg_perception.tools.quantize import main

    root = tmp_path_factory.mktemp("quantized")
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    out = {}
    for precision in ("fp16", "int8"):
        out[precision] = root / f"shipped_{precision}.onnx"
        args = [str(SHIPPED), "--precision", precision, "-o", str(out[precision]), "--no-eval", "--no-progress"]
        if precision == "int8":
            args += ["--calibration", str(frames)]
        assert main(args) == 0
    return out


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_quantized_graph_is_one_tensorrt_parses(quantized, precision, version):
    problems = audit(quantized[precision], version)
    assert not problems, f"shipped {precision} for TensorRT {version}:\n" + "\n".join(problems)
    ops = {n.op_type for n in onnx.load(str(quantized[precision])).graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_the_audit_catches_what_tensorrt_refuses(tmp_path):
    """A graph with an unsupported op, a run-time axes input, an asymmetric Q/DQ and a dynamic width fails it."""
    from onnx import helper

    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 8, "w", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    nodes = [
        helper.make_node("Shape", [INPUT_NAME], ["s"]),
        helper.make_node("Unsqueeze", [INPUT_NAME, "s"], ["u"]),
        helper.make_node("QuantizeLinear", ["u", "scale", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["d"]),
        helper.make_node("StringNormalizer", ["d"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "bad", [x], [y], [zp, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    problems = "\n".join(audit(path, "8.6"))
    for expected in ("StringNormalizer", "axes computed at run time", "zero point", "must be static"):
        assert expected in problems, problems
