"""The models a benchmark run compares, prepared once and cached on disk.

Ours: the shipped model (if present) and YOLACT-R50 / CenterMask-R50 with seeded
random weights (speed does not depend on the weights, only on the architecture
and input size); exported to ONNX and saved as checkpoints for the torch backend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from seg_perception.core.metadata import ModelMetadata

COCO_CLASSES = 80


@dataclass
class BenchModel:
    name: str
    onnx: Path
    checkpoint: Path | None  # for the torch backend; None when only ONNX exists
    metadata: ModelMetadata


def _cache_key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12]


def random_weight_model(architecture: str, cache_dir: Path, input_size: int | None = None,
                        num_classes: int = COCO_CLASSES) -> BenchModel:
    """Export (once) a seeded random-weight model of ``architecture`` to ONNX + checkpoint."""
    import torch

    from seg_perception.models.checkpoint import save_checkpoint
    from seg_perception.models.export import export_onnx, metadata_for_model
    from seg_perception.models.registry import build_model

    kwargs = {"num_classes": num_classes}
    if input_size:
        kwargs["input_size"] = input_size
    key = _cache_key(architecture, sorted(kwargs.items()), torch.__version__)
    onnx_path = cache_dir / f"{architecture}_{key}.onnx"
    ckpt_path = onnx_path.with_suffix(".pth")
    if not (onnx_path.exists() and ckpt_path.exists() and onnx_path.with_suffix(".json").exists()):
        torch.manual_seed(0)
        model = build_model(architecture, **kwargs).eval()
        metadata = metadata_for_model(model, f"{architecture}_random", [f"class_{i}" for i in range(num_classes)])
        export_onnx(model, metadata, onnx_path)
        save_checkpoint(model, ckpt_path)
    return BenchModel(architecture, onnx_path, ckpt_path, ModelMetadata.load(onnx_path.with_suffix(".json")))


def shipped_model() -> BenchModel | None:
    from seg_perception.pipeline import default_model_path

    path = default_model_path()
    if not path.exists():
        return None
    ckpt = path.with_suffix(".pth")
    return BenchModel("shipped", path, ckpt if ckpt.exists() else None, ModelMetadata.load(path.with_suffix(".json")))
