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
# Network input: "images", (B, H, W, 3) uint8 RGB, already resized to input size;
# normalisation (mean/std below, RGB order, 0-255 scale) happens inside the graph.
INPUT_NAME = "images"

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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

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


def metadata_path_for(model_path: str | Path) -> Path:
    """The metadata file that belongs to a weights/ONNX/engine file."""
    return Path(model_path).with_suffix(".json")
