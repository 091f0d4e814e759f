"""Forward-pass speed of each model on each available backend, at its input size."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import numpy as np

from seg_perception.benchmark.models import BenchModel
from seg_perception.benchmark.timing import interleaved, stats
from seg_perception.core.preprocess import resize_for_network


def available_backends() -> list[str]:
    """``onnxruntime``, ``torch-cpu``, and ``torch-cuda``/``tensorrt`` where present."""
    names = ["onnxruntime"]
    if importlib.util.find_spec("torch") is not None:
        names.append("torch-cpu")
        import torch

        if torch.cuda.is_available():
            names.append("torch-cuda")
    if importlib.util.find_spec("tensorrt") is not None:
        names.append("tensorrt")
    return names


def make_backend(name: str, model: BenchModel, threads: int) -> Any | None:
    """The backend object, or None when this model cannot run on it (reason printed)."""
    from seg_perception.runtime.factory import create_backend

    if name == "onnxruntime":
        return create_backend("onnxruntime", model.onnx, threads=threads)
    if name.startswith("torch"):
        if model.checkpoint is None:
            return None
        device = "cuda" if name == "torch-cuda" else "cpu"
        return create_backend("torch", model.checkpoint, metadata=model.metadata, device=device,
                              half=device == "cuda", threads=threads)
    if name == "tensorrt":
        from seg_perception.runtime.tensorrt_backend import build_engine

        engine = build_engine(model.onnx, fp16=True)
        return create_backend("tensorrt", engine)
    raise ValueError(name)


def bench_backends(models: list[BenchModel], frames: list[np.ndarray], threads: int, iterations: int,
                   warmup: int = 2, progress: bool = True) -> list[dict[str, Any]]:
    """One row per (model, backend): forward latency and throughput, interleaved per model."""
    rows = []
    for model in models:
        md = model.metadata
        batches = [resize_for_network(f, md.input_width, md.input_height) for f in frames]
        contenders: dict[str, Callable[[], object]] = {}
        backends = {}
        for name in available_backends():
            try:
                backend = make_backend(name, model, threads)
            except Exception as exc:  # a backend that cannot load this model is reported, not fatal
                rows.append({"model": model.name, "backend": name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            if backend is None:
                continue
            backends[name] = backend
            counter = iter(range(10**9))
            contenders[name] = (lambda b=backend, c=counter: b.infer(batches[next(c) % len(batches)]))
        times = interleaved(contenders, iterations, warmup, progress, desc=f"backends {model.name}")
        for name, seconds in times.items():
            rows.append({"model": model.name, "backend": name, "input": f"{md.input_width}x{md.input_height}",
                         "threads": threads, **stats(seconds), "_seconds": seconds})
        for backend in backends.values():
            backend.close()
    return rows
