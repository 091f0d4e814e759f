"""TensorRT engine cache keys and the sidecar that records how an engine was built.

A serialized TensorRT engine only runs on the TensorRT version and the GPU model it was
built for, and only computes what its ONNX graph and precision say. Beside every engine
we build (``model.engine``) lies ``model.engine.json``:

```
{"format": "seg_perception.engine/1",
 "key": {"onnx_sha256": "...", "tensorrt_version": "10.3.0", "gpu_name": "Orin",
         "compute_capability": "8.7", "precision": "fp16", "dla_core": null},
 "key_digest": "3f2c...", "onnx_file": "model.onnx", "built_at": "2025-...Z",
 "build_seconds": 412.5, "workspace_bytes": 1073741824, "calibration": {...}}
```

``seg-perception engine`` reuses an engine whose recorded key equals the current one
and rebuilds it otherwise; the TensorRT backend checks the key at load and refuses (or
rebuilds) a stale or foreign engine with a message saying which part differs. Nothing
here imports TensorRT or CUDA, so the logic is testable anywhere.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ENGINE_INFO_FORMAT = "seg_perception.engine/1"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.7" (Orin), "8.9" (Ada)
    precision: str  # fp32, fp16 or int8 (int8 engines also allow fp16 kernels)
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """Short stable hash of the key (for file names and logs)."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (ONNX files reach hundreds of MB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def engine_info_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (``model.json`` is the model metadata)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_engine_info(engine_path: str | Path, key: EngineKey, onnx_path: str | Path | None = None,
                      **extra: Any) -> Path:
    """Write the sidecar of a freshly built engine; ``extra`` adds build facts (seconds, workspace...)."""
    info: dict[str, Any] = {
        "format": ENGINE_INFO_FORMAT,
        "key": key.as_dict(),
        "key_digest": key.digest(),
        "onnx_file": Path(onnx_path).name if onnx_path else None,
        "built_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }
    path = engine_info_path(engine_path)
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_engine_info(engine_path: str | Path) -> dict[str, Any] | None:
    """The sidecar of an engine, or None when there is none (an engine from trtexec, say).

    Raises ValueError naming the file when it exists but is not a sidecar we wrote.
    """
    path = engine_info_path(engine_path)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"engine sidecar {path} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != ENGINE_INFO_FORMAT or not isinstance(info.get("key"), dict):
        raise ValueError(f"engine sidecar {path} is not a {ENGINE_INFO_FORMAT} file")
    return info


_LABELS = {
    "onnx_sha256": "ONNX model (sha256)",
    "tensorrt_version": "TensorRT version",
    "gpu_name": "GPU",
    "compute_capability": "GPU compute capability",
    "precision": "precision",
    "dla_core": "DLA core",
}


def key_mismatches(recorded: dict[str, Any], current: dict[str, Any], fields: tuple[str, ...] | None = None) -> list[str]:
    """Human-readable differences between a recorded and the current key, e.g.
    ``"TensorRT version: engine built with 10.0.1, this machine has 10.3.0"``.

    ``fields`` limits the comparison (the backend cannot know the precision a user
    meant, only whether the engine still fits the machine and the ONNX file).
    """
    out = []
    for name in fields or tuple(_LABELS):
        if name not in current:
            continue
        was, now = recorded.get(name), current.get(name)
        if was != now:
            if name == "onnx_sha256":
                out.append(f"{_LABELS[name]}: the ONNX file changed since the engine was built "
                           f"({str(was)[:12]}... -> {str(now)[:12]}...)")
            else:
                out.append(f"{_LABELS[name]}: engine built with {was}, this machine has {now}"
                           if name in ("tensorrt_version", "gpu_name", "compute_capability")
                           else f"{_LABELS[name]}: engine has {was}, wanted {now}")
    return out


def engine_is_current(engine_path: str | Path, key: EngineKey) -> tuple[bool, list[str]]:
    """Whether ``engine_path`` exists and was built for exactly ``key``; else the reasons why not."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return False, [f"no engine at {engine_path}"]
    try:
        info = read_engine_info(engine_path)
    except ValueError as exc:
        return False, [str(exc)]
    if info is None:
        return False, [f"{engine_path} has no build record ({engine_info_path(engine_path).name}); "
                       "its TensorRT version, GPU and precision are unknown"]
    reasons = key_mismatches(info["key"], key.as_dict())
    return not reasons, reasons


@dataclass
class EngineCheck:
    """What the backend learns from an engine's build record at load time."""

    info: dict[str, Any] | None  # the record, None when the engine has none
    onnx_path: Path | None  # the ONNX file it was built from, if it is still beside the engine
    reasons: list[str]  # why the engine does not fit this machine / ONNX file; empty: it fits

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    @property
    def precision(self) -> str | None:
        return None if self.info is None else str(self.info["key"].get("precision"))


def check_engine_record(engine_path: str | Path, tensorrt_version: str, gpu_name: str,
                        compute_capability: str) -> EngineCheck:
    """Compare an engine's build record with the running TensorRT and GPU and with its ONNX file.

    The ONNX file named in the record is hashed only when it is still beside the engine
    (deploying just the engine is allowed; then only TensorRT and the GPU are checked).
    An engine without a record passes with ``info = None`` (built by other tools).
    Raises ValueError for a record that is not ours.
    """
    engine_path = Path(engine_path)
    info = read_engine_info(engine_path)
    if info is None:
        return EngineCheck(None, None, [])
    current: dict[str, Any] = {"tensorrt_version": tensorrt_version, "gpu_name": gpu_name,
                               "compute_capability": compute_capability}
    onnx_path = None
    if info.get("onnx_file"):
        candidate = engine_path.parent / str(info["onnx_file"])
        if candidate.is_file():
            onnx_path = candidate
            current["onnx_sha256"] = file_sha256(candidate)
    return EngineCheck(info, onnx_path, key_mismatches(info["key"], current))


def engine_path_for_key(onnx_path: str | Path, key: EngineKey, cache_dir: str | Path | None = None) -> Path:
    """Default engine file for an ONNX model: ``model.engine`` beside it, or
    ``<cache_dir>/model.<precision>.<digest>.engine`` when engines are cached centrally."""
    onnx_path = Path(onnx_path)
    if cache_dir is None:
        return onnx_path.with_suffix(".engine")
    return Path(cache_dir) / f"{onnx_path.stem}.{key.precision}.{key.digest()}.engine"


__all__ = [
    "ENGINE_INFO_FORMAT",
    "PRECISIONS",
    "EngineKey",
    "file_sha256",
    "engine_info_path",
    "write_engine_info",
    "read_engine_info",
    "key_mismatches",
    "engine_is_current",
    "EngineCheck",
    "check_engine_record",
    "engine_path_for_key",
]
