"""ONNX Runtime backend: runs an exported graph on the best execution provider installed.

This module imports neither torch nor ``seg_perception.models``: the node can run an
ONNX model on a machine without PyTorch. Provider preference is TensorRT, then CUDA,
then CPU, restricted to what the installed onnxruntime build offers (the plain
``onnxruntime`` wheel has only the CPU provider; ``onnxruntime-gpu`` adds CUDA and
TensorRT). The TensorRT provider caches its engines beside the model so only the
first start pays for the engine build.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.core.metadata import (
    INPUT_NAME,
    ModelMetadata,
    metadata_path_for,
    output_names_for,
    output_trailing_dims,
)
from seg_perception.runtime.base import Backend, BackendError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# Same key as models.export.METADATA_PROP_KEY (not imported: that module needs torch).
EMBEDDED_METADATA_KEY = "seg_perception.metadata"

ProviderSpec = str | tuple[str, dict[str, Any]]


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendError(
            f"the onnxruntime backend needs the onnxruntime package (pip install onnxruntime or onnxruntime-gpu): {exc}"
        ) from None
    return onnxruntime


def required_outputs(metadata: ModelMetadata) -> list[str]:
    """Output names the graph must provide for this metadata (``YOLACT_OUTPUTS`` or ``ROI_OUTPUTS``)."""
    return output_names_for(metadata)


def select_providers(
    requested: Sequence[ProviderSpec] | None,
    available: Sequence[str],
    model_path: Path,
    fp16: bool = False,
    engine_cache_dir: Path | None = None,
) -> list[ProviderSpec]:
    """The provider list for ``InferenceSession``: the requested ones, or the best available.

    Requested providers that this onnxruntime build lacks are an error (a silent fall
    back to CPU would hide a broken GPU install behind a 20x slowdown).
    """
    if requested:
        names = [p if isinstance(p, str) else p[0] for p in requested]
        missing = [n for n in names if n not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime providers {missing} are not available in this onnxruntime build "
                f"(available: {list(available)}) for {model_path}"
            )
        return list(requested)
    chosen: list[ProviderSpec] = []
    for name in PREFERRED_PROVIDERS:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = engine_cache_dir or model_path.parent
            chosen.append((name, {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_fp16_enable": bool(fp16),
            }))
        else:
            chosen.append(name)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend(Backend):
    """Runs ``model.onnx`` with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        metadata:   model metadata; by default read from the sidecar JSON
                    (``metadata_path_for(model_path)``), else from the copy embedded
                    in the ONNX file by ``models.export``.
        providers:  execution providers (names or ``(name, options)``); None picks
                    TensorRT > CUDA > CPU among those installed.
        threads:    intra-op threads for the CPU provider; 0 lets ONNX Runtime decide.
        fp16:       let the TensorRT provider build FP16 engines.
        engine_cache_dir: where the TensorRT provider caches engines (default: beside the model).
        device:     the device the caller asked for ("cpu", "cuda:N"), as reported in ModelInfo
                    (``providers`` decides where the session runs).

    Raises ``BackendError`` naming the file if the model or its metadata is missing,
    corrupt, or does not match the contract (input name, dtype, static size; outputs).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        metadata: ModelMetadata | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        threads: int = 0,
        *,
        fp16: bool = False,
        engine_cache_dir: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path)
        self.device = str(device)
        if not self.model_path.is_file():
            raise BackendError(f"ONNX model not found: {self.model_path}")
        if threads < 0:
            raise BackendError(f"threads must be >= 0, got {threads}")
        ort = _import_ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads)
        provider_list = select_providers(
            providers, ort.get_available_providers(), self.model_path, fp16,
            Path(engine_cache_dir) if engine_cache_dir else None,
        )
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=provider_list)
        except Exception as exc:  # ORT raises its own exception types for every failure
            raise BackendError(f"could not load ONNX model {self.model_path}: {exc}") from None
        self.providers: list[str] = list(self.session.get_providers())
        super().__init__(metadata if metadata is not None else self._load_metadata())
        trt = "TensorrtExecutionProvider" in self.providers
        # a quantized graph (seg-perception quantize) computes in its own precision on every provider
        self.precision = self.metadata.precision if self.metadata.precision != "fp32" else (
            "fp16" if (fp16 and trt) else "fp32")
        self._batch_dim = self._check_graph()
        self.output_names = [o.name for o in self.session.get_outputs() if o.name in set(required_outputs(self.metadata))]

    def _load_metadata(self) -> ModelMetadata:
        sidecar = metadata_path_for(self.model_path)
        if sidecar.is_file():
            try:
                return ModelMetadata.load(sidecar)
            except (ValueError, OSError) as exc:
                raise BackendError(f"bad model metadata {sidecar} for {self.model_path}: {exc}") from None
        embedded = self.session.get_modelmeta().custom_metadata_map.get(EMBEDDED_METADATA_KEY)
        if embedded:
            try:
                return ModelMetadata(**json.loads(embedded))
            except (ValueError, TypeError) as exc:
                raise BackendError(f"metadata embedded in {self.model_path} is invalid: {exc}") from None
        raise BackendError(
            f"model metadata not found for {self.model_path}: expected {sidecar} (written by the exporter)"
        )

    def _check_graph(self) -> int | None:
        """Check the graph against the metadata; return its static batch size (None if symbolic)."""
        md = self.metadata
        inputs = self.session.get_inputs()
        problems: list[str] = []
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            problems.append(f"expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}")
            batch: int | None = None
        else:
            inp = inputs[0]
            if inp.type != "tensor(uint8)":
                problems.append(f"input {INPUT_NAME!r} is {inp.type}, expected tensor(uint8)")
            shape = list(inp.shape)
            expected = [md.input_height, md.input_width, 3]
            if len(shape) != 4 or shape[1:] != expected:
                problems.append(
                    f"input {INPUT_NAME!r} has shape {shape}, metadata expects [B, {md.input_height}, {md.input_width}, 3]"
                )
            batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
        outputs = {o.name: o for o in self.session.get_outputs()}
        missing = [n for n in required_outputs(md) if n not in outputs]
        if missing:
            problems.append(f"missing outputs {missing} (has {sorted(outputs)})")
        for name, dims in output_trailing_dims(md).items():
            if name not in outputs or not dims:
                continue
            shape = list(outputs[name].shape)
            tail = shape[len(shape) - len(dims):]
            if len(shape) < len(dims) or any(
                isinstance(a, int) and b is not None and a != b for a, b in zip(tail, dims)
            ):
                implied = ", ".join("*" if d is None else str(d) for d in dims)
                problems.append(f"output {name!r} has shape {shape}, metadata implies [..., {implied}]")
        if problems:
            raise BackendError(f"ONNX model {self.model_path} does not match its metadata: " + "; ".join(problems))
        return batch

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        md = self.metadata
        if not isinstance(batch, np.ndarray):
            raise ValueError(f"expected a NumPy array, got {type(batch).__name__}")
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (md.input_height, md.input_width, 3):
            raise ValueError(
                f"expected (B, {md.input_height}, {md.input_width}, 3) uint8 images, "
                f"got {batch.shape} {batch.dtype}"
            )
        return np.ascontiguousarray(batch)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, {INPUT_NAME: batch})
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed running {self.model_path}: {exc}") from None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``(B, H, W, 3)`` uint8 RGB -> the raw outputs (``YOLACT_OUTPUTS``/``ROI_OUTPUTS``), float32 arrays."""
        batch = self._check_batch(batch)
        n = batch.shape[0]
        if self._batch_dim is None or self._batch_dim == n:
            results = self._run(batch)
        elif self._batch_dim == 1:
            # A static batch-1 graph: run frame by frame and stack.
            per_frame = [self._run(batch[i:i + 1]) for i in range(n)]
            results = [np.concatenate(parts, axis=0) for parts in zip(*per_frame)]
        else:
            raise ValueError(f"{self.model_path} has a static batch of {self._batch_dim}, got {n} images")
        return dict(zip(self.output_names, results))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


__all__ = ["OnnxRuntimeBackend", "select_providers", "required_outputs", "PREFERRED_PROVIDERS"]
