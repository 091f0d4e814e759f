"""TensorRT backend: runs a serialized engine built from our ONNX graph.

Written against NVIDIA's documented TensorRT 10 Python API (``trt.Runtime``,
``deserialize_cuda_engine``, named I/O tensors, ``set_tensor_address``,
``execute_async_v3``) with device memory and streams from NVIDIA's ``cuda-python``
runtime bindings. Neither torch nor pycuda is needed. Imports happen inside the
functions, so importing this module is free on machines without TensorRT.

NOT exercised by the test suite (no GPU on the development machines): treat the
first run on a Jetson/GPU as its test, and compare against ``OnnxRuntimeBackend``.

Engines are specific to the GPU, TensorRT version and precision they were built
with; ``build_engine`` builds one from ``model.onnx`` (FP32, FP16, or INT8 with an
entropy or min-max calibrator, optionally on a Jetson DLA core, with tqdm progress)
and writes it beside the ONNX file, where the metadata JSON already is
(``model.onnx`` / ``model.engine`` / ``model.json``), plus the build record
``model.engine.json`` (``runtime.engine_cache``). At load the backend compares that
record with the running TensorRT version, the GPU and the ONNX file beside the engine;
a stale engine is rebuilt from the ONNX file (FP32/FP16, or INT8 from its calibration
cache) or refused with a message naming what changed.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.core.metadata import INPUT_NAME, ModelMetadata, metadata_path_for, output_names_for
from seg_perception.runtime.base import Backend, BackendError
from seg_perception.runtime.calibration import CalibrationStream, make_calibrator
from seg_perception.runtime.engine_cache import (
    EngineKey,
    check_engine_record,
    engine_info_path,
    file_sha256,
    write_engine_info,
)

_log = logging.getLogger(__name__)


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


def gpu_identity(cudart: Any | None = None, device: int | None = None) -> tuple[str, str]:
    """``(name, "major.minor")`` of the current (or given) CUDA device, via cuda-python."""
    cudart = cudart or _import_cudart()
    if device is None:
        device = int(_check(cudart, cudart.cudaGetDevice(), "cudaGetDevice"))
    props = _check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, (bytes, bytearray)) else str(props.name)
    return name.split("\x00", 1)[0].strip(), f"{props.major}.{props.minor}"


def current_engine_key(onnx_path: str | Path, precision: str, dla_core: int | None = None,
                       onnx_sha256: str | None = None) -> EngineKey:
    """The cache key of an engine built here and now from ``onnx_path`` (imports TensorRT and CUDA)."""
    trt = _import_tensorrt()
    name, cc = gpu_identity()
    return EngineKey(onnx_sha256 or file_sha256(onnx_path), str(trt.__version__), name, cc, precision, dla_core)


class _Spinner:
    """A tqdm bar without a total, ticking while TensorRT builds (when it has no progress monitor)."""

    def __init__(self, desc: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} {postfix}", leave=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        frames = "|/-\\"
        i = 0
        while not self._stop.wait(0.25):
            self._bar.set_postfix_str(frames[i % len(frames)])
            i += 1

    def __enter__(self) -> "_Spinner":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._bar.close()


def make_progress_monitor(trt: Any) -> Any | None:
    """A ``trt.IProgressMonitor`` showing one tqdm bar per build phase, or None before TensorRT 8.6.

    TensorRT calls ``phase_start`` (name, parent, steps), ``step_complete`` (name, index of
    the step done; returning False would cancel the build) and ``phase_finish``; nested
    phases get nested bars.
    """
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None
    from tqdm import tqdm

    class _TqdmProgressMonitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = len(self._bars)
            self._bars[phase_name] = tqdm(total=num_steps, desc=("  " * depth) + phase_name, position=depth,
                                          leave=depth == 0, unit="step")

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(max(0, step + 1 - bar.n))
            return True

        def phase_finish(self, phase_name: str) -> None:
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return _TqdmProgressMonitor()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    fp16: bool = False,
    workspace_bytes: int = 1 << 30,
    *,
    int8: bool = False,
    calibration: CalibrationStream | None = None,
    calibrator: str = "entropy",
    dla_core: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Build and write a TensorRT engine for ``onnx_path``; return its path.

    fp16 / int8: allow those kernels (INT8 also enables FP16, and needs ``calibration``:
        a ``CalibrationStream`` with frames or a valid cache, and the ``calibrator``
        algorithm, "entropy" or "minmax").
    workspace_bytes: the builder's scratch memory limit (``MemoryPoolType.WORKSPACE``).
    dla_core: run on that Jetson DLA core, falling back to the GPU for layers the DLA lacks.
    progress: tqdm bars per build phase (``IProgressMonitor``, TensorRT >= 8.6), else a spinner.

    The default ``engine_path`` is ``<onnx stem>.engine`` beside the ONNX file. Beside
    the engine it writes the build record ``<engine>.json`` (``runtime.engine_cache``) and
    copies the model metadata (and YOLACT++'s MaskIoU weights) if they live elsewhere.
    """
    trt = _import_tensorrt()
    cudart = _import_cudart()
    say = log or (lambda msg: None)
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    if not onnx_path.is_file():
        raise BackendError(f"ONNX model not found: {onnx_path}")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    if int8 and calibration is None:
        raise BackendError("an INT8 engine needs calibration data (images, a bag, or a calibration cache)")
    onnx_sha = file_sha256(onnx_path)
    key = current_engine_key(onnx_path, precision, dla_core, onnx_sha)
    say(f"TensorRT {key.tensorrt_version} on {key.gpu_name} (sm {key.compute_capability}), precision {precision}"
        + (f", DLA core {dla_core}" if dla_core is not None else ""))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    say(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16 or int8:
        if not builder.platform_has_fast_fp16:
            raise BackendError("FP16 kernels requested but this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator_obj = None
    if int8:
        if not builder.platform_has_fast_int8:
            raise BackendError("INT8 engine requested but this GPU has no fast INT8")
        config.set_flag(trt.BuilderFlag.INT8)
        assert calibration is not None
        calibrator_obj = make_calibrator(trt, cudart, calibrator, calibration, INPUT_NAME)
        config.int8_calibrator = calibrator_obj
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise BackendError(f"DLA core {dla_core} requested but this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    monitor = make_progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    say(f"building {engine_path.name} (this takes minutes on a Jetson)")
    started = time.monotonic()
    if progress and monitor is None:
        with _Spinner("building TensorRT engine"):
            serialized = builder.build_serialized_network(network, config)
    else:
        serialized = builder.build_serialized_network(network, config)
    seconds = time.monotonic() - started
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    calib_info = None
    if int8 and calibration is not None:
        calib_info = {"algorithm": calibrator, "batches": calibration.batches_served,
                      "cache": calibration.cache_path.name if calibration.cache_path else None}
    write_engine_info(engine_path, key, onnx_path, build_seconds=round(seconds, 1),
                      workspace_bytes=int(workspace_bytes), calibration=calib_info)
    _copy_sidecars(onnx_path, engine_path)
    say(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s")
    return engine_path


def _copy_sidecars(onnx_path: Path, engine_path: Path) -> None:
    """The metadata JSON and any file it names (MaskIoU weights) must sit beside the engine too."""
    src_md, dst_md = metadata_path_for(onnx_path), metadata_path_for(engine_path)
    if not src_md.is_file():
        return
    if src_md != dst_md:
        shutil.copy(src_md, dst_md)
    try:
        extra = ModelMetadata.load(src_md).maskiou_weights
    except (ValueError, OSError):
        return
    if extra and onnx_path.parent != engine_path.parent and (onnx_path.parent / extra).is_file():
        shutil.copy(onnx_path.parent / extra, engine_path.parent / extra)


class TensorRTBackend(Backend):
    """Runs ``model.engine`` with TensorRT on the current CUDA device.

    Args:
        model_path: the serialized engine (``.engine``/``.plan``).
        metadata:   model metadata; by default the sidecar JSON beside the engine.
        precision:  label for ``model_info`` when the engine has no build record; with a
                    record, the recorded precision is reported.
        rebuild_stale: when the build record says the engine was built for another
                    TensorRT version or GPU, or from a different ONNX file, rebuild it
                    from the ONNX file beside it (minutes; logged) instead of refusing.
                    INT8 engines are rebuilt only from their calibration cache.

    Raises ``BackendError`` for a missing or corrupt engine, one that does not match
    the metadata, or a stale one that cannot (or may not) be rebuilt; the message says
    what differs and the command that rebuilds it.
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, metadata: ModelMetadata | None = None, precision: str = "fp32",
                 rebuild_stale: bool = True) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"TensorRT engine not found: {self.model_path}")
        trt = _import_tensorrt()
        self._cudart = _import_cudart()
        precision = self._ensure_current(trt, precision, rebuild_stale)
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

    def _ensure_current(self, trt: Any, precision: str, rebuild_stale: bool) -> str:
        """Check the build record (see ``engine_cache.check_engine_record``); rebuild or refuse a stale engine."""
        gpu_name, cc = gpu_identity(self._cudart)
        try:
            check = check_engine_record(self.model_path, str(trt.__version__), gpu_name, cc)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        if check.info is None:
            _log.warning("%s has no build record (%s); cannot check that it fits TensorRT %s on %s",
                         self.model_path, engine_info_path(self.model_path).name, trt.__version__, gpu_name)
            return precision
        recorded = check.precision or precision
        if not check.stale:
            return recorded
        why = "; ".join(check.reasons)
        flags = {"fp16": " --fp16", "int8": " --int8 --calib-images DIR"}.get(recorded, "")
        source = check.onnx_path or self.model_path.with_suffix(".onnx")
        command = f"seg-perception engine {source}{flags} -o {self.model_path}"
        calib = (check.info.get("calibration") or {}) if recorded == "int8" else {}
        cache = self.model_path.parent / calib["cache"] if calib.get("cache") else None
        can_rebuild = check.onnx_path is not None and (recorded != "int8" or (cache is not None and cache.is_file()))
        if not (rebuild_stale and can_rebuild):
            raise BackendError(f"TensorRT engine {self.model_path} is stale: {why}. Rebuild it with: {command}")
        _log.warning("TensorRT engine %s is stale (%s); rebuilding it from %s", self.model_path, why, check.onnx_path)
        assert check.onnx_path is not None
        build_engine(
            check.onnx_path, self.model_path, fp16=recorded in ("fp16", "int8"),
            workspace_bytes=int(check.info.get("workspace_bytes") or 1 << 30),
            int8=recorded == "int8", calibration=CalibrationStream(None, cache) if recorded == "int8" else None,
            calibrator=str(calib.get("algorithm") or "entropy"), dla_core=check.info["key"].get("dla_core"),
            log=lambda msg: _log.info("%s", msg),
        )
        return recorded

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
        wanted = output_names_for(md)
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
        """``(B, H, W, 3)`` uint8 RGB -> the raw outputs (``YOLACT_OUTPUTS``/``ROI_OUTPUTS``), float32 arrays."""
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


__all__ = ["TensorRTBackend", "build_engine", "current_engine_key", "gpu_identity", "make_progress_monitor"]
