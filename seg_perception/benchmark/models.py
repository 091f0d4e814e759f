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


# Scales the random box classifier of torchvision's R-CNNs so detections pass their 0.05 score
# threshold and the mask/keypoint heads run (about 20 per hsr_people frame), as with real weights.
RCNN_CLASSIFIER_GAIN = 40.0


def torchvision_rcnn_model(architecture: str, cache_dir: Path) -> BenchModel:
    """Export (once) a seeded random-weight torchvision R-CNN at 640x480 (the camera's size)."""
    import torch

    from seg_perception.core.metadata import COCO_CLASSES as NAMES, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
    from seg_perception.models.checkpoint import save_checkpoint
    from seg_perception.models.export import export_onnx, metadata_for_model
    from seg_perception.models.torchvision_rcnn import TorchvisionRCNN

    key = _cache_key(architecture, RCNN_CLASSIFIER_GAIN, torch.__version__)
    onnx_path = cache_dir / f"{architecture}_{key}.onnx"
    ckpt_path = onnx_path.with_suffix(".pth")
    if not (onnx_path.exists() and ckpt_path.exists() and onnx_path.with_suffix(".json").exists()):
        torch.manual_seed(0)
        model = TorchvisionRCNN(architecture, input_size=(480, 640)).eval()
        with torch.no_grad():
            model.detector.roi_heads.box_predictor.cls_score.weight.mul_(RCNN_CLASSIFIER_GAIN)
        people = bool(model.num_keypoints)
        metadata = metadata_for_model(model, f"{architecture}_random", ["person"] if people else NAMES,
                                      COCO_PERSON_KEYPOINTS if people else [], COCO_PERSON_SKELETON if people else [])
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
