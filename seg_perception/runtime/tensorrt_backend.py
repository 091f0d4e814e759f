"""TensorRT backend: runs a serialized engine built from our ONNX graph.

Written against NVIDIA's documented TensorRT 10 Python API (``trt.Runtime``,
``deserialize_cuda_engine``, named I/O tensors, ``set_tensor_address``,
``execute_async_v3``) with device memory and streams from NVIDIA's ``cuda-python``
runtime bindings. Neither torch nor pycuda is needed. Imports happen inside the
functions, so importing this module is free on machines without TensorRT.

NOT exercised by the test suite (no GPU on the development machines): treat the
first run on a Jetson/GPU as its test, and compare against ``OnnxRuntimeBackend``.

Engines are specific to the GPU, TensorRT version and precision they were built
with; ``build_engine`` builds one from ``model.onnx`` (FP32 or FP16; INT8 needs a
calibrator and is not offered yet) and writes it beside the ONNX file, where the
metadata JSON already is (``model.onnx`` / ``model.engine`` / ``model.json``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.core.metadata import INPUT_NAME, ModelMetadata, metadata_path_for
from seg_perception.runtime.base import Backend, BackendError


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(
            f"the tensorrt backend needs NVIDIA's tensorrt Python package (JetPack ships it): {exc}"
        ) from None
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise BackendError(
                f"the tensorrt backend needs NVIDIA's cuda-python package (pip install cuda-python): {exc}"
            ) from None
    return cudart


def _check(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python calls return ``(error, *values)``; raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA error during {what}: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    fp16: bool = False,
    workspace_bytes: int = 1 << 30,
) -> Path:
    """Build and write a TensorRT engine for ``onnx_path``; return its path.

    The default ``engine_path`` is ``<onnx stem>.engine`` beside the ONNX file; the
    metadata JSON is copied beside the engine if it lives elsewhere.
    """
    trt = _import_tensorrt()
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    if not onnx_path.is_file():
        raise BackendError(f"ONNX model not found: {onnx_path}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise BackendError("FP16 engine requested but this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    src_md, dst_md = metadata_path_for(onnx_path), metadata_path_for(engine_path)
    if src_md.is_file() and src_md != dst_md:
        shutil.copy(src_md, dst_md)
    return engine_path


class TensorRTBackend(Backend):
    """Runs ``model.engine`` with TensorRT on the current CUDA device.

    Args:
        model_path: the serialized engine (``.engine``/``.plan``).
        metadata:   model metadata; by default the sidecar JSON beside the engine.
        precision:  recorded for ``model_info`` ("fp32", "fp16"); the engine decides
                    the arithmetic, this only labels it.
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, metadata: ModelMetadata | None = None, precision: str = "fp32") -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"TensorRT engine not found: {self.model_path}")
        trt = _import_tensorrt()
        self._cudart = _import_cudart()
        if metadata is None:
            sidecar = metadata_path_for(self.model_path)
            try:
                metadata = ModelMetadata.load(sidecar)
            except (FileNotFoundError, ValueError, OSError) as exc:
                raise BackendError(f"model metadata for {self.model_path} unusable ({sidecar}): {exc}") from None
        super().__init__(metadata)
        self.precision = precision
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT could not deserialize {self.model_path} (corrupt, or built for another GPU/TensorRT version)"
            )
        self.context = self.engine.create_execution_context()
        self._stream = _check(self._cudart, self._cudart.cudaStreamCreate(), "stream creation")
        self._device: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self.output_names = self._check_engine()

    def _check_engine(self) -> list[str]:
        trt, md = self._trt, self.metadata
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        problems = []
        if inputs != [INPUT_NAME]:
            problems.append(f"expected one input {INPUT_NAME!r}, found {inputs}")
        else:
            shape = list(self.engine.get_tensor_shape(INPUT_NAME))
            if shape[1:] != [md.input_height, md.input_width, 3]:
                problems.append(f"input shape {shape}, metadata expects [B, {md.input_height}, {md.input_width}, 3]")
            if trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)) != np.uint8:
                problems.append("input is not uint8")
        wanted = ["boxes", "scores", "mask_coeffs", "protos"] + (["keypoints"] if md.num_keypoints else [])
        missing = [n for n in wanted if n not in outputs]
        if missing:
            problems.append(f"missing outputs {missing}")
        if problems:
            raise BackendError(f"TensorRT engine {self.model_path} does not match its metadata: " + "; ".join(problems))
        return wanted

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._device.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart, self._cudart.cudaMalloc(nbytes), f"cudaMalloc({name})"))
            self._device[name] = (ptr, nbytes)
        return ptr

    def _run_one_shape(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        cudart, engine, ctx = self._cudart, self.engine, self.context
        if -1 in tuple(engine.get_tensor_shape(INPUT_NAME)):
            ctx.set_input_shape(INPUT_NAME, batch.shape)
        elif tuple(engine.get_tensor_shape(INPUT_NAME)) != batch.shape:
            raise ValueError(f"engine input is {tuple(engine.get_tensor_shape(INPUT_NAME))}, got {batch.shape}")
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        in_ptr = self._buffer(INPUT_NAME, batch.nbytes)
        _check(cudart, cudart.cudaMemcpyAsync(in_ptr, batch.ctypes.data, batch.nbytes, h2d, self._stream), "copy in")
        ctx.set_tensor_address(INPUT_NAME, in_ptr)
        host: dict[str, np.ndarray] = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            host[name] = np.empty(shape, dtype=self._trt.nptype(engine.get_tensor_dtype(name)))
            ctx.set_tensor_address(name, self._buffer(name, host[name].nbytes))
        if not ctx.execute_async_v3(self._stream):
            raise BackendError(f"TensorRT execution failed for {self.model_path}")
        for name, arr in host.items():
            _check(cudart, cudart.cudaMemcpyAsync(arr.ctypes.data, self._device[name][0], arr.nbytes, d2h, self._stream),
                   f"copy out {name}")
        _check(cudart, cudart.cudaStreamSynchronize(self._stream), "stream synchronize")
        return {name: arr.astype(np.float32, copy=False) for name, arr in host.items()}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``(B, H, W, 3)`` uint8 RGB -> the raw outputs (``YOLACT_OUTPUTS``), float32 arrays."""
        md = self.metadata
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 \
                or batch.shape[1:] != (md.input_height, md.input_width, 3):
            got = f"{batch.shape} {batch.dtype}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"expected (B, {md.input_height}, {md.input_width}, 3) uint8 images, got {got}")
        batch = np.ascontiguousarray(batch)
        static_batch = tuple(self.engine.get_tensor_shape(INPUT_NAME))[0]
        if static_batch == 1 and batch.shape[0] > 1:
            parts = [self._run_one_shape(batch[i:i + 1]) for i in range(batch.shape[0])]
            return {n: np.concatenate([p[n] for p in parts]) for n in self.output_names}
        return self._run_one_shape(batch)

    def close(self) -> None:
        for ptr, _ in self._device.values():
            self._cudart.cudaFree(ptr)
        self._device.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None


__all__ = ["TensorRTBackend", "build_engine"]
