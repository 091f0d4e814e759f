"""Choosing and constructing a backend by name.

Backend modules are imported only when chosen, so selecting "onnxruntime" or
"tensorrt" never imports torch (the node stays light on machines without it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from seg_perception.runtime.base import Backend, BackendError

BACKEND_NAMES = ("auto", "onnxruntime", "torch", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan")
CHECKPOINT_SUFFIXES = (".pth", ".pt")

# name -> (module, class); imported lazily by ``create_backend``.
_BACKEND_CLASSES = {
    "onnxruntime": ("seg_perception.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "torch": ("seg_perception.runtime.torch_backend", "TorchBackend"),
    "tensorrt": ("seg_perception.runtime.tensorrt_backend", "TensorRTBackend"),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def engine_path_for(model_path: str | Path) -> Path | None:
    """The TensorRT engine for ``model_path``: itself if it is one, else ``<stem>.engine`` beside it."""
    path = Path(model_path)
    if path.suffix in ENGINE_SUFFIXES:
        return path if path.is_file() else None
    for suffix in ENGINE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def resolve_backend(name: str, model_path: str | Path) -> tuple[str, Path]:
    """Which backend ``create_backend`` will use for ``name`` and the file it will load.

    "auto": a PyTorch checkpoint (.pth/.pt) goes to "torch"; otherwise "tensorrt" if
    the ``tensorrt`` package is importable and an engine exists for the model, else
    "onnxruntime" on the ``.onnx`` file.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    path = Path(model_path)
    if name != "auto":
        if name == "tensorrt" and path.suffix not in ENGINE_SUFFIXES:
            engine = engine_path_for(path)
            if engine is not None:
                return name, engine
        if name == "onnxruntime" and path.suffix in ENGINE_SUFFIXES:
            return name, path.with_suffix(".onnx")
        return name, path
    if path.suffix in CHECKPOINT_SUFFIXES:
        return "torch", path
    engine = engine_path_for(path)
    if engine is not None and _importable("tensorrt"):
        return "tensorrt", engine
    return "onnxruntime", path.with_suffix(".onnx") if path.suffix in ENGINE_SUFFIXES else path


def create_backend(name: str, model_path: str | Path, **opts: Any) -> Backend:
    """Construct the backend ``name`` ("auto", "onnxruntime", "torch", "tensorrt") for ``model_path``.

    ``opts`` go to the backend's constructor (e.g. ``threads``, ``providers``,
    ``device``, ``half``, ``metadata``). Raises ``BackendError`` for an unknown name,
    a backend whose dependencies are missing, or a model it cannot load.
    """
    chosen, path = resolve_backend(name, model_path)
    module_name, class_name = _BACKEND_CLASSES[chosen]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"the {chosen} backend is not available: {exc}") from None
    backend_cls = getattr(module, class_name)
    try:
        inspect.signature(backend_cls).bind(path, **opts)
    except TypeError as exc:
        raise BackendError(f"bad options for the {chosen} backend: {exc}") from None
    return backend_cls(path, **opts)


__all__ = ["BACKEND_NAMES", "create_backend", "resolve_backend", "engine_path_for"]
