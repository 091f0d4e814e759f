"""TensorRT backend: runs a serialized engine built from our ONNX graph.

Written against NVIDIA's documented TensorRT Python API as 8.6, 10.x and 11.x all
bind it (``trt.Runtime``, ``deserialize_cuda_engine``, named I/O tensors,
``set_tensor_address``, ``execute_async_v3``; ``test/runtime/test_tensorrt_conformance.py``
checks every name against the real bindings of each version) with device memory and
streams from NVIDIA's ``cuda-python`` runtime bindings. Neither torch nor pycuda is needed. Imports happen inside the
functions, so importing this module is free on machines without TensorRT.

Not run on a GPU by the test suite (no TensorRT runtime on the development machines):
the conformance test runs the build and inference code against a stand-in ``tensorrt``
module per version that binds exactly the real names; treat the first run on a
Jetson/GPU as the test of the numbers, and compare against ``OnnxRuntimeBackend``.

Engines are specific to the GPU, TensorRT version and precision they were built
with; ``build_engine`` builds one from ``model.onnx`` (the graph's own precision, FP32,
FP16 or INT8 Q/DQ from ``seg-perception quantize``, on 8.6/10.x/11.x; or, up to 10.x,
FP16/INT8 builder flags with an entropy or min-max calibrator; optionally on a Jetson
DLA core, with progress; see ``TensorRTApi`` and ``plan_build``)
and writes it beside the ONNX file, where the metadata JSON already is
(``model.onnx`` / ``model.engine`` / ``model.json``), plus the build record
``model.engine.json`` (``runtime.engine_cache``). At load the backend compares that
record with the running TensorRT version, the GPU and the ONNX file beside the engine;
a stale engine is rebuilt from the ONNX file (FP32/FP16, or INT8 from its calibration
cache) or refused with a message naming what changed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TensorRTApi:
    """What the imported TensorRT offers the builder, detected from the module itself.

    The three generations robots run differ (NVIDIA's documentation of each, and the
    names their real bindings define: ``test/support/fixtures/tensorrt_bindings``):

    * 8.6 (JetPack 6.0): networks must be created with ``EXPLICIT_BATCH`` (``create_network(0)``
      is implicit batch, which the ONNX parser refuses); precision through builder flags
      (FP16/INT8, INT8 calibrators); no ``IProgressMonitor``.
    * 10.x (JetPack 6.1/6.2, 7): explicit batch is the only mode (the flag is deprecated and
      ignored); ``IProgressMonitor``; ``STRONGLY_TYPED`` networks take their precision from
      the graph; builder flags and calibrators still exist (calibrators deprecated in 10.1).
    * 11.x: strongly typed only: no FP16/INT8 builder flags, no calibrators, no
      ``platform_has_fast_fp16``; precision comes from the ONNX (float16 or Q/DQ nodes).

    Feature detection (``hasattr``) is used wherever a name's presence is the question;
    the version number only where a name exists but its meaning changed (EXPLICIT_BATCH).
    """

    version: str
    explicit_batch_flag: bool  # create networks with EXPLICIT_BATCH (TensorRT < 10)
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists (10.x opt-in; 11.x always on)
    weak_typing: bool  # BuilderFlag.FP16/INT8 exist (TensorRT <= 10)
    calibrators: bool  # IInt8EntropyCalibrator2/IInt8MinMaxCalibrator and IBuilderConfig.int8_calibrator
    progress_monitor: bool  # IProgressMonitor and IBuilderConfig.progress_monitor (TensorRT >= 10)

    @classmethod
    def detect(cls, trt: Any) -> "TensorRTApi":
        version = str(trt.__version__)
        flags = trt.NetworkDefinitionCreationFlag
        head = version.split(".")[0]
        major = int(head) if head.isdigit() else 0
        return cls(
            version=version,
            explicit_batch_flag=major < 10 and hasattr(flags, "EXPLICIT_BATCH"),
            strongly_typed=hasattr(flags, "STRONGLY_TYPED"),
            weak_typing=hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8"),
            calibrators=hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.IBuilderConfig, "int8_calibrator"),
            progress_monitor=hasattr(trt, "IProgressMonitor") and hasattr(trt.IBuilderConfig, "progress_monitor"),
        )


@dataclass(frozen=True)
class BuildMode:
    """How one engine is built: the network flags and the precision route (see ``plan_build``)."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members set on the config
    calibrate: bool  # attach an INT8 calibrator (weakly typed INT8 from an FP32 graph)
    precision: str  # what the engine computes in: fp32, fp16, int8
    precision_source: str  # "onnx" (the graph's own types/Q-DQ) or "builder flags"


def graph_precision(onnx_path: str | Path) -> str:
    """The precision the ONNX graph carries (its metadata's ``precision``; fp32 without metadata)."""
    md_path = metadata_path_for(onnx_path)
    if not md_path.is_file():
        return "fp32"
    try:
        return ModelMetadata.load(md_path).precision
    except (ValueError, OSError):
        return "fp32"


def plan_build(api: TensorRTApi, graph: str, requested: str) -> BuildMode:
    """Choose network and builder flags for TensorRT ``api``.

    graph: the ONNX file's own precision (``graph_precision``): fp32, fp16 or int8 (Q/DQ).
    requested: the builder-flag precision asked for (``--fp16``/``--int8``), fp32 if none.

    A graph that carries its precision (fp16/int8) is built strongly typed where TensorRT
    has it (10.x, 11.x: no precision flags allowed) and, on 8.6, weakly typed with the
    matching flags (FP16; INT8+FP16 for Q/DQ, no calibrator: explicit quantization).
    Builder-flag precision from an FP32 graph exists only up to 10.x; TensorRT 11
    refuses it with the command that moves the precision into the ONNX.
    """
    base = ("EXPLICIT_BATCH",) if api.explicit_batch_flag else ()
    if graph != "fp32":
        if requested not in ("fp32", graph):
            raise BackendError(f"the ONNX graph is already {graph} (seg-perception quantize); build it without "
                               f"--{requested}")
        if api.strongly_typed:
            return BuildMode(base + ("STRONGLY_TYPED",), (), False, graph, "onnx")
        flags = ("FP16",) if graph == "fp16" else ("FP16", "INT8")
        return BuildMode(base, flags, False, graph, "onnx")
    if requested == "fp32":
        return BuildMode(base, (), False, "fp32", "onnx")
    if not api.weak_typing:
        raise BackendError(
            f"TensorRT {api.version} has no {requested.upper()} builder flag (strongly typed only: the precision "
            f"must be in the ONNX). Run: seg-perception quantize MODEL.onnx --precision {requested}"
            + (" --calibration BAG_OR_DIR" if requested == "int8" else "")
            + f" -o MODEL_{requested}.onnx, then build that file without --{requested}")
    if requested == "fp16":
        return BuildMode(base, ("FP16",), False, "fp16", "builder flags")
    if not api.calibrators:
        raise BackendError(f"TensorRT {api.version} has no INT8 calibrators; quantize the ONNX instead: "
                           "seg-perception quantize MODEL.onnx --precision int8 --calibration BAG_OR_DIR -o MODEL_int8.onnx")
    return BuildMode(base, ("FP16", "INT8"), True, "int8", "builder flags")


def make_progress_monitor(trt: Any, log: Callable[[str], None] | None = None, bars: bool = True) -> Any | None:
    """A ``trt.IProgressMonitor`` (TensorRT >= 10), or None where TensorRT has none (8.6).

    TensorRT calls ``phase_start`` (name, parent, steps), ``step_complete`` (name, index of
    the step done; returning False would cancel the build) and ``phase_finish``. With
    ``bars`` each phase gets a tqdm bar (nested phases nested bars); ``log`` gets one line
    per top-level phase start/finish (the node logs it and shows it on /diagnostics, so a
    build of several minutes never looks like a hang).
    """
    if not hasattr(trt, "IProgressMonitor"):
        return None
    base = trt.IProgressMonitor
    say = log or (lambda msg: None)

    class _ProgressMonitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = len(self._depth)
            self._depth[phase_name] = depth
            if depth == 0:
                say(f"TensorRT build phase: {phase_name} ({num_steps} steps)")
            if bars:
                from tqdm import tqdm

                self._bars[phase_name] = tqdm(total=num_steps, desc=("  " * depth) + phase_name, position=depth,
                                              leave=depth == 0, unit="step")

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(max(0, step + 1 - bar.n))
            return True

        def phase_finish(self, phase_name: str) -> None:
            if self._depth.pop(phase_name, 1) == 0:
                say(f"TensorRT build phase done: {phase_name}")
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return _ProgressMonitor()


_listeners: list[Callable[[str], None]] = []
_listeners_lock = threading.Lock()


@contextlib.contextmanager
def build_progress(listener: Callable[[str], None]) -> Iterator[None]:
    """Send every engine build's progress lines to ``listener`` while the block runs.

    The node wraps ``configure`` in it: a stale engine rebuilt at load (minutes on a
    Jetson) then shows its phases in the node's log and on ``/diagnostics`` instead of
    looking like a hang. Lines come from TensorRT's threads too; a failing listener is
    ignored (progress must never break a build).
    """
    with _listeners_lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _listeners_lock:
            _listeners.remove(listener)


def _broadcast(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """``log`` plus the ``build_progress`` listeners, as one callable."""

    def say(msg: str) -> None:
        if log is not None:
            log(msg)
        with _listeners_lock:
            listeners = list(_listeners)
        for listener in listeners:
            try:
                listener(msg)
            except Exception:  # noqa: BLE001 - see build_progress
                _log.debug("build progress listener failed", exc_info=True)

    return say


def _ticker(log: Callable[[str], None], every_s: float = 30.0) -> tuple[threading.Event, threading.Thread]:
    """Logs "still building (N s)" every ``every_s`` seconds until the returned event is set (TensorRT 8.6)."""
    stop = threading.Event()
    started = time.monotonic()

    def run() -> None:
        while not stop.wait(every_s):
            log(f"still building the TensorRT engine ({time.monotonic() - started:.0f} s)")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return stop, thread


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
    max_batch: int = 1,
) -> Path:
    """Build and write a TensorRT engine for ``onnx_path`` on TensorRT 8.6, 10.x or 11.x; return its path.

    The graph's own precision (metadata ``precision``, written by ``seg-perception
    quantize``: FP16 or INT8 Q/DQ) is built as it is, on every version. For an FP32 graph:
    fp16 / int8: builder-flag precision (TensorRT <= 10 only: INT8 also enables FP16 and
        needs ``calibration``, a ``CalibrationStream`` with frames or a valid cache, and the
        ``calibrator`` algorithm, "entropy" or "minmax"); TensorRT 11 refuses them with the
        ``quantize`` command to run instead (``plan_build``).
    workspace_bytes: the builder's scratch memory limit (``MemoryPoolType.WORKSPACE``).
    dla_core: run on that Jetson DLA core, falling back to the GPU for layers the DLA lacks.
    progress: tqdm bars per build phase (``IProgressMonitor``, TensorRT >= 10), else a spinner.
    log: gets the build's milestones (and, with ``IProgressMonitor``, its phases; on 8.6 a
        "still building" line every 30 s).
    max_batch: for an ONNX with a symbolic batch dimension, the optimization profile covers
        batches 1..max_batch (optimised for max_batch: one image per camera of a multi-camera
        node); a fixed-batch ONNX ignores it.

    The default ``engine_path`` is ``<onnx stem>.engine`` beside the ONNX file. Beside
    the engine it writes the build record ``<engine>.json`` (``runtime.engine_cache``) and
    copies the model metadata (and YOLACT++'s MaskIoU weights) if they live elsewhere.
    """
    trt = _import_tensorrt()
    cudart = _import_cudart()
    say = _broadcast(log)
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    if not onnx_path.is_file():
        raise BackendError(f"ONNX model not found: {onnx_path}")
    api = TensorRTApi.detect(trt)
    mode = plan_build(api, graph_precision(onnx_path), "int8" if int8 else "fp16" if fp16 else "fp32")
    precision = mode.precision
    if mode.calibrate and calibration is None:
        raise BackendError("an INT8 engine needs calibration data (images, a bag, or a calibration cache)")
    onnx_sha = file_sha256(onnx_path)
    key = current_engine_key(onnx_path, precision, dla_core, onnx_sha)
    say(f"TensorRT {key.tensorrt_version} on {key.gpu_name} (sm {key.compute_capability}), precision {precision} "
        f"(from the {mode.precision_source})" + (f", DLA core {dla_core}" if dla_core is not None else ""))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_flags = 0
    for name in mode.network_flags:
        network_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    say(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if "FP16" in mode.builder_flags and mode.precision_source == "builder flags" and not builder.platform_has_fast_fp16:
        raise BackendError("FP16 kernels requested but this GPU has no fast FP16")
    if mode.calibrate and not builder.platform_has_fast_int8:
        raise BackendError("INT8 engine requested but this GPU has no fast INT8")
    for name in mode.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    calibrator_obj = None
    if mode.calibrate:
        assert calibration is not None
        calibrator_obj = make_calibrator(trt, cudart, calibrator, calibration, INPUT_NAME)
        config.int8_calibrator = calibrator_obj
    _add_batch_profile(builder, network, config, max_batch)
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise BackendError(f"DLA core {dla_core} requested but this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    monitor = make_progress_monitor(trt, say, bars=progress) if api.progress_monitor else None
    if monitor is not None:
        config.progress_monitor = monitor
    say(f"building {engine_path.name} (this takes minutes on a Jetson)")
    started = time.monotonic()
    stop, ticker = _ticker(say) if monitor is None else (None, None)
    try:
        if progress and monitor is None:
            with _Spinner("building TensorRT engine"):
                serialized = builder.build_serialized_network(network, config)
        else:
            serialized = builder.build_serialized_network(network, config)
    finally:
        if stop is not None and ticker is not None:
            stop.set()
            ticker.join()
    seconds = time.monotonic() - started
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    calib_info = None
    if mode.calibrate and calibration is not None:
        calib_info = {"algorithm": calibrator, "batches": calibration.batches_served,
                      "cache": calibration.cache_path.name if calibration.cache_path else None}
    write_engine_info(engine_path, key, onnx_path, build_seconds=round(seconds, 1),
                      workspace_bytes=int(workspace_bytes), calibration=calib_info,
                      precision_source=mode.precision_source, network_flags=list(mode.network_flags),
                      builder_flags=list(mode.builder_flags), max_batch=int(max_batch))
    _copy_sidecars(onnx_path, engine_path)
    say(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s")
    return engine_path


def _add_batch_profile(builder: Any, network: Any, config: Any, max_batch: int) -> None:
    """An optimization profile for batches 1..max_batch when the input's batch is symbolic
    (TensorRT refuses to build a dynamic input without one)."""
    try:
        shape = tuple(int(d) for d in network.get_input(0).shape)
    except TypeError:  # no shape to read (the binding-conformance tests' stand-ins): nothing to profile
        return
    if not shape or shape[0] != -1:
        return
    if max_batch < 1:
        raise BackendError(f"max_batch must be at least 1, got {max_batch}")
    profile = builder.create_optimization_profile()
    rest = tuple(shape[1:])
    profile.set_shape(network.get_input(0).name, (1, *rest), (max_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)


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


# The named-tensor runtime API this backend drives (TensorRT >= 8.5: 8.6, 10.x and 11.x
# all bind these; the binding-index API before it is gone since 10.0).
RUNTIME_ENGINE_API = ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype")
RUNTIME_CONTEXT_API = ("set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3")


def _check_runtime_api(trt: Any, engine: Any, context: Any) -> None:
    """Refuse, with one clear line, a TensorRT whose runtime lacks the named I/O tensor API."""
    missing = [f"ICudaEngine.{n}" for n in RUNTIME_ENGINE_API if not hasattr(engine, n)]
    missing += [f"IExecutionContext.{n}" for n in RUNTIME_CONTEXT_API if not hasattr(context, n)]
    missing += [f"tensorrt.{n}" for n in ("TensorIOMode", "nptype") if not hasattr(trt, n)]
    if missing:
        raise BackendError(f"TensorRT {trt.__version__} lacks the named I/O tensor API this backend uses "
                           f"({', '.join(missing)}); TensorRT 8.6 or newer is needed")


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
    device = "cuda"  # the current CUDA device

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
        _check_runtime_api(trt, self.engine, self.context)
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
        from_flags = check.info.get("precision_source", "builder flags") == "builder flags"  # older records: flags
        options = {"fp16": " --fp16", "int8": " --int8 --calib-images DIR"}.get(recorded, "") if from_flags else ""
        source = check.onnx_path or self.model_path.with_suffix(".onnx")
        command = f"seg-perception engine {source}{options} -o {self.model_path}"
        calib = (check.info.get("calibration") or {}) if recorded == "int8" and from_flags else {}
        cache = self.model_path.parent / calib["cache"] if calib.get("cache") else None
        can_rebuild = check.onnx_path is not None and (
            not (recorded == "int8" and from_flags) or (cache is not None and cache.is_file()))
        if not (rebuild_stale and can_rebuild):
            raise BackendError(f"TensorRT engine {self.model_path} is stale: {why}. Rebuild it with: {command}")
        _log.warning("TensorRT engine %s is stale (%s); rebuilding it from %s", self.model_path, why, check.onnx_path)
        assert check.onnx_path is not None
        flags = recorded if from_flags else "fp32"  # else the precision is in the ONNX
        build_engine(
            check.onnx_path, self.model_path, fp16=flags == "fp16",
            workspace_bytes=int(check.info.get("workspace_bytes") or 1 << 30),
            int8=flags == "int8", calibration=CalibrationStream(None, cache) if flags == "int8" else None,
            calibrator=str(calib.get("algorithm") or "entropy"), dla_core=check.info["key"].get("dla_core"),
            log=lambda msg: _log.info("%s", msg), max_batch=int(check.info.get("max_batch") or 1),
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
        largest = self._largest_batch()
        if batch.shape[0] > largest:
            # A fixed batch of 1, or more cameras than the profile was built for: in chunks.
            parts = [self._run_one_shape(batch[i:i + largest]) for i in range(0, batch.shape[0], largest)]
            return {n: np.concatenate([p[n] for p in parts]) for n in self.output_names}
        return self._run_one_shape(batch)

    def _largest_batch(self) -> int:
        """The engine's fixed batch, or its optimization profile's largest (``max_batch``)."""
        static_batch = int(tuple(self.engine.get_tensor_shape(INPUT_NAME))[0])
        if static_batch > 0:
            return static_batch
        return int(tuple(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2])[0])

    def close(self) -> None:
        for ptr, _ in self._device.values():
            self._cudart.cudaFree(ptr)
        self._device.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None


__all__ = ["BuildMode", "TensorRTApi", "TensorRTBackend", "build_engine", "build_progress", "current_engine_key", "gpu_identity",
           "graph_precision", "make_progress_monitor", "plan_build"]
