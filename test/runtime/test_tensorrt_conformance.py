"""TensorRT conformance: every TensorRT name the builder and backend use exists in the real bindings.

No TensorRT runtime can run here, but NVIDIA's binding wheels can be read: the names
``tensorrt.so`` of 8.6.1 (JetPack 6.0), 10.3.0 (JetPack 6.1/6.2) and 11.4.0.106 binds
are committed in ``test/support/fixtures/tensorrt_bindings`` (``make_names.py`` regenerates them).

Each test puts a stand-in ``tensorrt`` module in ``sys.modules`` that binds exactly
the names of one version: every attribute read, written, probed (``hasattr``) or
overridden (a calibrator's or progress monitor's callbacks, which TensorRT calls by
name) is looked up in that version's list; a name not bound raises AttributeError as
the real module does, so the build or inference code fails where it would on that
TensorRT. The build code (``build_engine``) and the backend (``TensorRTBackend``, load
and one inference) then run as far as they go without a GPU: every branch (FP32, FP16
and INT8 by builder flags, FP16 and INT8 carried by the ONNX, DLA) on every version.

Limits: the lists are flat (which class a name belongs to is not recorded: a name bound
on one class passes on another); the linker stores some short names only as the tail
of a longer string (``Logger`` inside ``ILogger``), so a name that is only such a tail
is accepted but must be one of ``KNOWN_TAIL_ONLY``; what TensorRT does with the calls
(kernels, numbers) is not checked -- that needs a GPU.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seg_perception.runtime import tensorrt_backend as trt_backend
from seg_perception.runtime.base import BackendError
from seg_perception.runtime.calibration import CalibrationStream

NAMES_DIR = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "tensorrt_bindings"
VERSIONS = {"8.6.1": "tensorrt-8.6.1.txt", "10.3.0": "tensorrt-10.3.0.txt", "11.4.0.106": "tensorrt-11.4.0.106.txt"}
# Names that appear in the binaries only as the tail of a longer string (checked by hand:
# e.g. "Logger" is the end of "ILogger", "INT8" of "UINT8", "num_errors" of "get_num_errors").
KNOWN_TAIL_ONLY = {"Logger", "Builder", "Runtime", "INT8", "INPUT", "OUTPUT", "num_errors", "DLA",
                   "shape"}  # ITensor.shape, a property (read for the batch profile)


def load_names(version: str) -> set[str]:
    lines = (NAMES_DIR / VERSIONS[version]).read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


class Recorder:
    """One version's bound names, and every name the code touched."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.names = load_names(version)
        self.tails = {n[i:] for n in self.names for i in range(1, len(n))}
        self.used: set[str] = set()  # "owner.name" looked up and bound
        self.tail_only: set[str] = set()
        self.probed_missing: set[str] = set()  # looked up, not bound (AttributeError raised)
        self.written: set[str] = set()  # attributes assigned (config.int8_calibrator = ...)

    def check(self, owner: str, name: str) -> bool:
        if name in self.names or name in self.tails:
            if name not in self.names:
                self.tail_only.add(name)
            self.used.add(f"{owner}.{name}")
            return True
        self.probed_missing.add(f"{owner}.{name}")
        return False

    def used_names(self) -> set[str]:
        return {u.rsplit(".", 1)[1] for u in self.used}


class Fake:
    """A bound TensorRT object: attributes are checked against the version's names."""

    def __init__(self, rec: Recorder, path: str, behaviours: dict[str, Any]) -> None:
        object.__setattr__(self, "_rec", rec)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_beh", behaviours)
        object.__setattr__(self, "_attrs", {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._attrs:
            return self._attrs[name]
        if not self._rec.check(self._path.split("(")[0].split(".")[-1], name):
            raise AttributeError(f"'{self._path}' has no attribute '{name}' in TensorRT {self._rec.version}")
        make = self._beh.get(name)
        return make(self) if make else Fake(self._rec, f"{self._path}.{name}", self._beh)

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._rec.check(self._path.split("(")[0].split(".")[-1], name):
            raise AttributeError(f"'{self._path}' has no attribute '{name}' in TensorRT {self._rec.version}")
        self._rec.written.add(name)
        self._attrs[name] = value

    def __call__(self, *args: Any, **kwargs: Any) -> "Fake":
        return Fake(self._rec, f"{self._path}()", self._beh)

    def __int__(self) -> int:
        return 3

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fake) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)

    def __bytes__(self) -> bytes:
        return b"serialized engine"


def fake_class(rec: Recorder, name: str) -> type:
    """A bound TensorRT interface class that Python code may subclass (calibrators, progress monitors).

    Class attributes are checked like ``Fake``'s; the methods a subclass defines are the
    callbacks TensorRT calls by name, so they must be bound names too.
    """

    class Meta(type):
        def __getattr__(cls, attr: str) -> Any:
            if attr.startswith("__") or not rec.check(name, attr):
                raise AttributeError(attr)
            return Fake(rec, f"tensorrt.{name}.{attr}", {})

    def init_subclass(cls: type, **kwargs: Any) -> None:
        for attr in vars(cls):
            if not attr.startswith("_") and callable(vars(cls)[attr]) and not rec.check(name, attr):
                raise AttributeError(f"{cls.__name__} overrides {attr}, which {name} of TensorRT {rec.version} "
                                     "does not bind (TensorRT would never call it)")

    return Meta(name, (), {"__init__": lambda self, *a: None, "__init_subclass__": classmethod(init_subclass)})


IO_SHAPES = {"images": (1, 48, 64, 3), "boxes": (1, 10, 4), "scores": (1, 10), "classes": (1, 10),
             "masks": (1, 10, 14, 14)}


def make_fake_trt(version: str, progress_events: list[str] | None = None) -> tuple[types.ModuleType, Recorder]:
    rec = Recorder(version)
    config_holder: dict[str, Fake] = {}
    names = list(IO_SHAPES)

    def build_serialized_network(fake: Fake) -> Any:
        def run(network: Any, config: Fake) -> Fake:
            monitor = config._attrs.get("progress_monitor")
            if monitor is not None:  # what TensorRT >= 10 does with a monitor: nested phases
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic selection", "Building engine", 3)
                for i in range(3):
                    assert monitor.step_complete("Tactic selection", i) is True
                monitor.phase_finish("Tactic selection")
                monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Building engine")
            return Fake(rec, "tensorrt.IHostMemory", {})
        return run

    def io_mode(fake: Fake) -> Any:
        return lambda n: Fake(rec, "tensorrt.TensorIOMode." + ("INPUT" if n == "images" else "OUTPUT"), {})

    def dtype(fake: Fake) -> Any:
        return lambda n: Fake(rec, "tensorrt.DataType." + ("UINT8" if n == "images" else "FLOAT"), {})

    behaviours: dict[str, Any] = {
        "parse_from_file": lambda f: (lambda path: True),
        "build_serialized_network": build_serialized_network,
        "num_DLA_cores": lambda f: 2,
        "num_io_tensors": lambda f: len(names),
        "get_tensor_name": lambda f: (lambda i: names[i]),
        "get_tensor_mode": io_mode,
        "get_tensor_dtype": dtype,
        "get_tensor_shape": lambda f: (lambda n: IO_SHAPES[n]),
        "execute_async_v3": lambda f: (lambda stream: True),
        "create_builder_config": lambda f: (lambda: config_holder.setdefault("c", Fake(rec, "IBuilderConfig", behaviours))),
    }
    module = types.ModuleType("tensorrt")

    def module_getattr(name: str) -> Any:
        if name.startswith("__") or not rec.check("tensorrt", name):
            raise AttributeError(f"module 'tensorrt' has no attribute '{name}' (TensorRT {version})")
        if name == "nptype":
            return lambda t: np.uint8 if t._path.endswith("UINT8") else np.float32
        if len(name) > 1 and name[0] == "I" and name[1].isupper():
            return fake_class(rec, name)
        return Fake(rec, f"tensorrt.{name}", behaviours)

    module.__getattr__ = module_getattr  # type: ignore[attr-defined]
    module.__version__ = version
    return module, rec


def fake_cudart() -> Any:
    ok = "success"
    props = types.SimpleNamespace(name=b"Orin\x00", major=8, minor=7)
    return types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=ok),
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2),
        cudaGetDevice=lambda: (ok, 0), cudaGetDeviceProperties=lambda d: (ok, props),
        cudaStreamCreate=lambda: (ok, 7), cudaStreamSynchronize=lambda s: (ok,), cudaStreamDestroy=lambda s: (ok,),
        cudaMalloc=lambda n: (ok, 4096), cudaFree=lambda p: (ok,), cudaMemcpy=lambda *a: (ok,),
        cudaMemcpyAsync=lambda *a: (ok,),
    )


@pytest.fixture
def use_version(monkeypatch):
    """Install the stand-in ``tensorrt`` of one version (and a CUDA stand-in); returns its Recorder."""

    def install(version: str) -> Recorder:
        module, rec = make_fake_trt(version)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        monkeypatch.setattr(trt_backend, "_import_cudart", fake_cudart)
        return rec

    return install


def write_model(directory: Path, precision: str = "fp32") -> Path:
    onnx = directory / "m.onnx"
    onnx.write_bytes(b"onnx graph bytes (the stand-in parser does not read them)")
    md = {"name": "m", "architecture": "centermask_lite_vovnet19_slim_dw", "class_names": ["a"],
          "input_width": 64, "input_height": 48, "output_format": "roi", "num_prototypes": 0}
    if precision != "fp32":
        md["precision"] = precision
    (directory / "m.json").write_text(json.dumps(md))
    return onnx


ALL = list(VERSIONS)
# (graph precision, builder-flag precision) cases each version must build
BUILDS = [("fp32", "fp32"), ("fp16", "fp32"), ("int8", "fp32"), ("fp32", "fp16"), ("fp32", "int8")]


def build(tmp_path: Path, graph: str, requested: str, dla: int | None = None) -> dict:
    onnx = write_model(tmp_path, graph)
    calib = CalibrationStream(None, tmp_path / "m.entropy.calib") if requested == "int8" else None
    lines: list[str] = []
    engine = trt_backend.build_engine(onnx, fp16=requested == "fp16", int8=requested == "int8", calibration=calib,
                                      dla_core=dla, progress=False, log=lines.append)
    info = json.loads((tmp_path / "m.engine.json").read_text())
    assert engine.read_bytes() == b"serialized engine"
    info["log"] = lines
    return info


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("graph,requested", BUILDS)
def test_build_uses_only_bound_names(tmp_path, use_version, version, graph, requested):
    rec = use_version(version)
    strong_only = version.startswith("11.")
    if strong_only and requested != "fp32":
        with pytest.raises(BackendError, match=f"strongly typed only.*seg-perception quantize .* --precision {requested}"):
            build(tmp_path, graph, requested)
        assert not (tmp_path / "m.engine").exists()
    else:
        info = build(tmp_path, graph, requested)
        precision = graph if graph != "fp32" else requested
        assert info["key"]["precision"] == precision
        assert info["key"]["tensorrt_version"] == version
        assert info["precision_source"] == ("onnx" if requested == "fp32" else "builder flags")
    used = rec.used_names()
    assert used <= rec.names | rec.tails  # by construction of the stand-in; stated for the reader
    assert rec.tail_only <= KNOWN_TAIL_ONLY, f"names found only as string tails: {rec.tail_only - KNOWN_TAIL_ONLY}"
    assert "create_network" in used and "build_serialized_network" in used or strong_only and requested != "fp32"
    if version == "8.6.1":
        assert "EXPLICIT_BATCH" in used  # 8.6's ONNX parser refuses implicit batch
    else:
        assert "EXPLICIT_BATCH" not in used  # deprecated and ignored from 10.0
    if strong_only:
        for removed in ("int8_calibrator", "platform_has_fast_fp16", "platform_has_fast_int8", "FP16",
                        "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"):
            assert removed not in used


@pytest.mark.parametrize("version", ALL)
def test_graph_precision_is_strongly_typed_where_bound(tmp_path, use_version, version):
    rec = use_version(version)
    info = build(tmp_path, "int8", "fp32")
    if version == "8.6.1":
        assert info["network_flags"] == ["EXPLICIT_BATCH"] and info["builder_flags"] == ["FP16", "INT8"]
        assert "int8_calibrator" not in rec.written  # explicit quantization: no calibrator
    else:
        assert info["network_flags"] == ["STRONGLY_TYPED"] and info["builder_flags"] == []
        assert "set_flag" not in rec.used_names()


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_calibrated_int8_uses_the_calibrator_where_bound(tmp_path, use_version, version):
    rec = use_version(version)
    info = build(tmp_path, "fp32", "int8")
    assert info["builder_flags"] == ["FP16", "INT8"]
    assert {"int8_calibrator", "IInt8EntropyCalibrator2", "get_batch", "read_calibration_cache"} <= (
        rec.used_names() | {"get_batch", "read_calibration_cache"})
    assert "int8_calibrator" in rec.written


@pytest.mark.parametrize("version", ALL)
def test_progress_is_reported_on_every_version(tmp_path, use_version, version, monkeypatch):
    rec = use_version(version)
    monkeypatch.setattr(trt_backend, "_ticker", lambda log, every_s=30.0: _fast_ticker(log))
    heard: list[str] = []
    with trt_backend.build_progress(heard.append):  # what the node does around configure
        info = build(tmp_path, "fp32", "fp32")
    log = "\n".join(info["log"])
    assert heard == info["log"]
    if version == "8.6.1":
        assert "IProgressMonitor" not in rec.used_names()
        assert "still building the TensorRT engine" in log  # no monitor: a heartbeat line instead
    else:
        assert {"IProgressMonitor", "progress_monitor", "phase_start", "step_complete", "phase_finish"} <= rec.used_names()
        assert "TensorRT build phase: Building engine (2 steps)" in log
        assert "TensorRT build phase done: Building engine" in log
        assert "Tactic selection" not in log  # nested phases go to the bars only


def _fast_ticker(log):
    """The 8.6 heartbeat, made to tick at once (the stand-in build takes no time)."""
    import threading

    stop = threading.Event()
    log("still building the TensorRT engine (0 s)")
    thread = threading.Thread(target=lambda: None)
    thread.start()
    return stop, thread


@pytest.mark.parametrize("version", ALL)
def test_dla_build_uses_only_bound_names(tmp_path, use_version, version):
    use_version(version)
    info = build(tmp_path, "fp16", "fp32", dla=0)
    assert info["key"]["dla_core"] == 0


@pytest.mark.parametrize("version", ALL)
def test_backend_load_and_infer_use_only_bound_names(tmp_path, use_version, version):
    rec = use_version(version)
    write_model(tmp_path)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine")
    backend = trt_backend.TensorRTBackend(engine)
    out = backend.infer(np.zeros((1, 48, 64, 3), np.uint8))
    assert set(out) == {"boxes", "scores", "classes", "masks"}
    assert out["masks"].shape == (1, 10, 14, 14) and out["masks"].dtype == np.float32
    backend.close()
    assert {"deserialize_cuda_engine", "create_execution_context", "num_io_tensors", "get_tensor_name",
            "set_tensor_address", "execute_async_v3", "nptype", "TensorIOMode"} <= rec.used_names()
    assert rec.tail_only <= KNOWN_TAIL_ONLY


def test_the_check_catches_a_removed_name(tmp_path, use_version, monkeypatch):
    """Were the 11.x branch to take the calibrator route, the stand-in 11.4 module refuses it, as TensorRT 11 would."""
    use_version("11.4.0.106")
    broken = trt_backend.BuildMode((), ("FP16",), True, "int8", "builder flags")
    monkeypatch.setattr(trt_backend, "plan_build", lambda api, graph, requested: broken)
    with pytest.raises(AttributeError, match="platform_has_fast_fp16.*11.4.0.106"):
        build(tmp_path, "fp32", "int8")
    trt = sys.modules["tensorrt"]
    with pytest.raises(AttributeError, match="IInt8EntropyCalibrator2"):
        trt_backend.make_calibrator(trt, fake_cudart(), "entropy", CalibrationStream(None, None), "images")
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="int8_calibrator"):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError, match="FP16"):
        config.set_flag(trt.BuilderFlag.FP16)


def test_the_lists_say_what_the_issue_says():
    """The facts the builder's branches rest on, read from the real bindings."""
    v8, v10, v11 = (load_names(v) for v in ALL)
    assert "EXPLICIT_BATCH" in v8 and "IProgressMonitor" not in v8 and "STRONGLY_TYPED" not in v8
    assert {"IProgressMonitor", "STRONGLY_TYPED", "int8_calibrator", "IInt8EntropyCalibrator2"} <= v10
    assert {"int8_calibrator", "platform_has_fast_fp16", "IInt8EntropyCalibrator2", "FP16"}.isdisjoint(v11)
    assert {"IProgressMonitor", "STRONGLY_TYPED", "execute_async_v3", "set_tensor_address"} <= v11
    assert {"execute_async_v3", "set_tensor_address", "num_io_tensors", "set_input_shape"} <= v8


def test_api_detection_per_version(use_version):
    for version, expected in [("8.6.1", (True, False, True, True, False)),
                              ("10.3.0", (False, True, True, True, True)),
                              ("11.4.0.106", (False, True, False, False, True))]:
        module, _ = make_fake_trt(version)
        api = trt_backend.TensorRTApi.detect(module)
        assert (api.explicit_batch_flag, api.strongly_typed, api.weak_typing, api.calibrators,
                api.progress_monitor) == expected, version


def test_engine_tool_builds_a_quantized_onnx_on_11_and_refuses_flags_with_the_fix(tmp_path, use_version, capsys):
    from seg_perception.tools.engine import main

    use_version("11.4.0.106")
    onnx = write_model(tmp_path, "int8")
    assert main([str(onnx), "--no-progress"]) == 0
    info = json.loads((tmp_path / "m.engine.json").read_text())
    assert info["key"]["precision"] == "int8" and info["precision_source"] == "onnx"
    assert info["network_flags"] == ["STRONGLY_TYPED"]
    assert main([str(onnx), "--fp16"]) == 1
    assert "already a int8 graph" in capsys.readouterr().err
    fp32 = write_model(tmp_path / "fp32" if (tmp_path / "fp32").mkdir() is None else tmp_path)
    assert main([str(fp32), "--fp16", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("seg-perception engine: error: TensorRT 11.4.0.106 has no FP16 builder flag")
    assert "seg-perception quantize MODEL.onnx --precision fp16" in err[-1]
    assert not (tmp_path / "fp32" / "m.engine").exists()
