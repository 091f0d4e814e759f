"""Export to ONNX: the graph every non-torch backend runs.

The graph has one input, ``images`` ``(B, H, W, 3)`` uint8 RGB at the model's input
size (static H and W), and the outputs of the model's raw-output contract
(``model.output_format``): ``core.metadata.YOLACT_OUTPUTS`` for YOLACT/YOLACT++,
``ROI_OUTPUTS`` for CenterMask. The cast, normalisation and permute
(``transform.InputNormalizer``) and the box/keypoint decoding are inside the graph.
For YOLACT, Fast NMS and mask assembly are *not*: their outputs have data-dependent
sizes, which TensorRT and ONNX Runtime handle poorly and which would tie the graph to
one set of thresholds; they run in ``core.postprocess``. CenterMask's box-first heads
need NMS before them, so its graph runs NMS and pads to a fixed detection count
(``models.fcos``).

Beside ``model.onnx`` the exporter writes ``model.json`` (``ModelMetadata``, path
from ``metadata_path_for``) and also embeds the same JSON in the ONNX file's
``metadata_props`` under ``seg_perception.metadata`` so a lost sidecar can be
recovered.

The TorchScript-based exporter (``dynamo=False``) is used: it needs nothing beyond
torch and handles these static-shape conv nets well; the dynamo exporter needs the
``onnxscript`` package, which is not a dependency.
"""

from __future__ import annotations

import inspect
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from seg_perception.core.metadata import INPUT_NAME, ModelMetadata, metadata_path_for
from seg_perception.models.transform import ImageInputModel

METADATA_PROP_KEY = "seg_perception.metadata"


def metadata_for_model(
    model: nn.Module,
    name: str,
    class_names: Sequence[str],
    keypoint_names: Sequence[str] = (),
    skeleton: Sequence[tuple[int, int]] = (),
    **extra: object,
) -> ModelMetadata:
    """``ModelMetadata`` whose architecture, input size, counts and output format come from the model.

    A model that normalises differently from the ImageNet default declares it with
    ``input_mean``/``input_std`` (RGB order, 0-255 scale; detectron2 models do).
    """
    input_h, input_w = model.input_size  # type: ignore[attr-defined]
    defaults: dict[str, object] = {"output_format": str(getattr(model, "output_format", "yolact"))}
    if getattr(model, "input_mean", None) is not None:
        defaults["mean"] = tuple(model.input_mean)  # type: ignore[attr-defined]
    if getattr(model, "input_std", None) is not None:
        defaults["std"] = tuple(model.input_std)  # type: ignore[attr-defined]
    defaults.update(extra)
    return ModelMetadata(
        name=name,
        architecture=str(getattr(model, "architecture", type(model).__name__)),
        class_names=list(class_names),
        input_width=int(input_w),
        input_height=int(input_h),
        keypoint_names=list(keypoint_names),
        skeleton=list(skeleton),
        num_prototypes=int(getattr(model, "num_prototypes", 0)),
        **defaults,  # type: ignore[arg-type]
    )


def check_model_matches_metadata(model: nn.Module, metadata: ModelMetadata) -> None:
    """Raise ``ValueError`` if the model's class/keypoint/prototype counts disagree with the metadata."""
    problems = []
    model_format = str(getattr(model, "output_format", "yolact"))
    if model_format != metadata.output_format:
        problems.append(f"model has output_format={model_format!r}, metadata says {metadata.output_format!r}")
    for attr, expected in (
        ("num_classes", metadata.num_classes),
        ("num_keypoints", metadata.num_keypoints),
        ("num_prototypes", metadata.num_prototypes),
    ):
        actual = getattr(model, attr, None)
        if actual is not None and int(actual) != expected:
            problems.append(f"model has {attr}={actual}, metadata says {expected}")
    if problems:
        raise ValueError("model and metadata disagree: " + "; ".join(problems))


def export_onnx(
    model: nn.Module,
    metadata: ModelMetadata,
    out_path: str | Path,
    opset: int = 17,
    batch_size: int = 1,
    dynamic_batch: bool = False,
) -> Path:
    """Export ``model`` (normalised NCHW in, contract dict out) as a uint8-input ONNX graph.

    ``metadata`` supplies the input size and the mean/std baked into the graph; it is
    saved beside the graph. With ``dynamic_batch`` the batch dimension is symbolic;
    height and width are always static (the priors are constants of the graph).
    Returns the path of the ``.onnx`` file after ``onnx.checker`` accepted it.
    """
    check_model_matches_metadata(model, metadata)
    wrapper = ImageInputModel(model, metadata.mean, metadata.std)
    was_training = model.training
    try:
        return export_image_model(wrapper.eval(), metadata, out_path, opset, batch_size, dynamic_batch)
    finally:
        model.train(was_training)


def export_image_model(
    module: nn.Module,
    metadata: ModelMetadata,
    out_path: str | Path,
    opset: int = 17,
    batch_size: int = 1,
    dynamic_batch: bool = False,
) -> Path:
    """Export a module that already takes contract images and returns a tuple of outputs.

    ``module.output_names`` names the tuple's entries. This is the common tail of
    ``export_onnx`` and of hand-written test graphs (``models.known_answer``):
    trace, check with ``onnx.checker``, embed the metadata, write the sidecar JSON.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"ONNX output path should end in .onnx: {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((batch_size, metadata.input_height, metadata.input_width, 3), dtype=torch.uint8)
    output_names = list(module.output_names)  # type: ignore[arg-type]
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its own deprecation on every call.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # Shapes and priors become graph constants on purpose (static input size).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torchvision's batched_nms scripts a helper while tracing; torch deprecates that.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        # Export into memory and write the file once, with the metadata embedded
        # (a 200 MB CenterMask graph costs seconds per serialisation); protobuf caps an
        # in-memory model at 2 GB, so bigger ones take the detour through the file.
        param_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        target: io.BytesIO | str = io.BytesIO() if param_bytes < 1_500_000_000 else str(out_path)
        # The TorchScript exporter: torch >= 2.9 defaults to dynamo, and torch < 2.5
        # (2.1 is the oldest pyproject admits) has no `dynamo` argument at all.
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(
            module.eval(),
            (example,),
            target,
            input_names=[INPUT_NAME],
            output_names=output_names,
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            **legacy,
        )
    graph = onnx.load_model_from_string(target.getvalue()) if isinstance(target, io.BytesIO) else onnx.load(target)
    onnx.checker.check_model(graph)
    del graph.metadata_props[:]
    prop = graph.metadata_props.add()
    prop.key = METADATA_PROP_KEY
    prop.value = metadata.to_json()
    onnx.save(graph, str(out_path))
    metadata.save(metadata_path_for(out_path))
    return out_path


__all__ = [
    "METADATA_PROP_KEY",
    "metadata_for_model",
    "check_model_matches_metadata",
    "export_onnx",
    "export_image_model",
]
