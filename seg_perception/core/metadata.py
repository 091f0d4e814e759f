"""Model metadata: what a network was trained to see and how to feed it.

Stored as a JSON file beside the weights (``model.onnx`` -> ``model.json``) so the
ONNX Runtime and TensorRT backends, the node and the tools all read the same facts
without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The raw-output contract every backend honours for ``output_format == "yolact"``
# (B = batch, N = priors, C = classes without background, P = prototypes,
# K = keypoints). Boxes are decoded inside the graph; Fast NMS and mask assembly
# run in ``core.postprocess`` because they produce data-dependent shapes.
YOLACT_OUTPUTS = {
    "boxes": "(B, N, 4) float32 x1, y1, x2, y2 normalised to [0, 1] of the network input",
    "scores": "(B, N, C) float32 class probabilities, background removed",
    "mask_coeffs": "(B, N, P) float32 prototype coefficients (tanh)",
    "protos": "(B, Hp, Wp, P) float32 prototypes (ReLU)",
    "keypoints": "(B, N, K, 3) float32 x, y normalised, visibility probability (only if K > 0)",
}
# The raw-output contract for ``output_format == "roi"``: box-first models (CenterMask,
# CenterMask-Lite) that run detection, NMS and the per-box heads inside the graph.
# D = detections per image, a constant of the graph (the model's post-NMS top-k);
# rows are sorted by the detector's score and padded with score 0. NMS is in the
# graph because the mask and keypoint heads must only see the boxes that survive
# it: without it the D slots fill with duplicates of the few largest objects.
# Post-processing (``core.postprocess_roi``) thresholds, pastes each mask into its
# box at source resolution and decodes keypoints from the heatmaps.
ROI_OUTPUTS = {
    "boxes": "(B, D, 4) float32 x1, y1, x2, y2 normalised to [0, 1] of the network input, after NMS, not clipped",
    "scores": "(B, D) float32 detection score (times the predicted mask IoU when the model has a MaskIoU head); 0 marks padding",
    "classes": "(B, D) float32 class index (an integer value)",
    "masks": "(B, D, M, M) float32 mask probabilities of the detection's class; the M x M grid spans the box",
    "keypoint_heatmaps": "(B, D, K, S, S) float32 keypoint logits; the S x S grid spans the box (only if K > 0)",
}
OUTPUT_FORMATS = ("yolact", "roi")
# What ``ModelMetadata.precision`` may say about a graph (see there).
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
# Network input: "images", (B, H, W, 3) uint8 RGB, already resized to input size;
# normalisation (mean/std below, RGB order, 0-255 scale) happens inside the graph.
INPUT_NAME = "images"

# The 80 COCO object categories in the order of the contiguous ids 0..79 that
# YOLACT and detectron2 models predict (COCO category ids 1..90 with the gaps removed).
COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
]

COCO_PERSON_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
COCO_PERSON_SKELETON = [
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
    (3, 5), (4, 6),
]


@dataclass
class ModelMetadata:
    """Facts about one exported model; indices in ``skeleton`` refer to ``keypoint_names``."""

    name: str
    architecture: str  # e.g. "yolact_resnet18", "yolact_resnet50", "centermask_lite_v19"
    class_names: list[str]
    input_width: int
    input_height: int
    keypoint_names: list[str] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    mean: tuple[float, float, float] = (123.68, 116.78, 103.94)  # RGB, 0-255 scale
    std: tuple[float, float, float] = (58.40, 57.12, 57.38)
    output_format: str = "yolact"
    num_prototypes: int = 32
    # Optional: class name -> indices of the keypoints that class uses (per-class
    # grasp keypoints); absent means every class uses every keypoint.
    class_keypoints: dict[str, list[int]] = field(default_factory=dict)
    # Optional (YOLACT++): file name, beside the model, of the MaskIoU re-scoring
    # weights that ``core.mask_rescoring`` runs after NMS; empty: no re-scoring.
    maskiou_weights: str = ""
    # YOLACT family: the mask crop the model was trained with, which post-processing
    # follows. "prototype" (official YOLACT: crop at prototype resolution with one
    # prototype pixel of padding) or "box" (our trainer's loss: pixels inside the box
    # only, so a mask is cut at its box; `box_region_masks` forces this for any model).
    mask_crop: str = "prototype"
    # Numeric precision carried by the graph itself: "fp32" (as exported), "fp16"
    # (float16 weights and compute, float32 I/O) or "int8" (Q/DQ nodes), written by
    # ``seg-perception quantize``. TensorRT 11 only builds what the graph says (no
    # FP16/INT8 builder flags), so the engine builder reads it from here.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.skeleton = [(int(a), int(b)) for a, b in self.skeleton]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        k = len(self.keypoint_names)
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"skeleton edge ({a}, {b}) refers to a keypoint outside 0..{k - 1}")
        if not self.class_names:
            raise ValueError("model metadata lists no class names")
        if self.input_width <= 0 or self.input_height <= 0:
            raise ValueError(f"bad input size {self.input_width}x{self.input_height}")
        if self.mask_crop not in ("prototype", "box"):
            raise ValueError(f"unknown mask_crop {self.mask_crop!r}; expected 'prototype' or 'box'")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output_format {self.output_format!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
        if self.precision not in GRAPH_PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(GRAPH_PRECISIONS)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def to_json(self) -> str:
        fields = asdict(self)
        if fields["precision"] == "fp32":  # the default: files written before the field existed stay identical
            del fields["precision"]
        return json.dumps(fields, indent=2)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @staticmethod
    def load(path: str | Path) -> "ModelMetadata":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"model metadata file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"model metadata file {path} is not valid JSON: {exc}") from None
        try:
            return ModelMetadata(**raw)
        except TypeError as exc:
            raise ValueError(f"model metadata file {path} has unexpected fields: {exc}") from None


def output_names_for(metadata: ModelMetadata) -> list[str]:
    """The raw outputs a model with this metadata provides, in graph order."""
    if metadata.output_format == "roi":
        names = ["boxes", "scores", "classes", "masks"]
        return names + ["keypoint_heatmaps"] if metadata.num_keypoints else names
    names = ["boxes", "scores", "mask_coeffs", "protos"]
    return names + ["keypoints"] if metadata.num_keypoints else names


def output_trailing_dims(metadata: ModelMetadata) -> dict[str, list[int | None]]:
    """Per output, its trailing dimensions as the metadata fixes them (None: any size).

    For checking a graph's or engine's outputs against the metadata before running it.
    """
    if metadata.output_format == "roi":
        dims: dict[str, list[int | None]] = {"boxes": [4], "scores": [], "classes": [], "masks": [None, None]}
        if metadata.num_keypoints:
            dims["keypoint_heatmaps"] = [metadata.num_keypoints, None, None]
        return dims
    dims = {
        "boxes": [4],
        "scores": [metadata.num_classes],
        "mask_coeffs": [metadata.num_prototypes],
        "protos": [metadata.num_prototypes],
    }
    if metadata.num_keypoints:
        dims["keypoints"] = [metadata.num_keypoints, 3]
    return dims


def metadata_path_for(model_path: str | Path) -> Path:
    """The metadata file that belongs to a weights/ONNX/engine file."""
    return Path(model_path).with_suffix(".json")
