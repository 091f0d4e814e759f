"""A tiny real ONNX model whose outputs a test can predict exactly.

For plumbing tests of the node and tools: it honours the YOLACT raw-output contract
(``core.metadata.YOLACT_OUTPUTS``) but computes its answer from the image in a few
simple, exactly reproducible ways, so a test can assert the final masks pixel for
pixel and tell frames apart. ``expected_outputs`` is the NumPy reference.

Network input: ``(1, 120, 160, 3)`` uint8 RGB (non-square on purpose, so a swapped
width/height shows). The graph does not normalise (it ignores the metadata mean/std).
Classes ``person, bottle, cup``; keypoints ``top_left, top_right, bottom_right,
bottom_left, center`` (skeleton: the box outline). N = 8 detections, P = 2 prototypes
at the input resolution (so a source image of 160x120 needs no mask resampling).

Detection 0, "person" (follows the image):
  box    the brightest cell of a 4 x 4 grid over the image (cells of 40 x 30 px,
         brightness = mean of R, G, B over the cell; ties go to the first cell in
         row-major order), i.e. ``(col/4, row/4, (col+1)/4, (row+1)/4)`` normalised;
  score  ``0.5 + 0.49 * mean(image) / 255`` (mean over all pixels and channels);
  mask   the whole box (coefficients (1, 0) on a constant prototype);
  keypoints the box corners and centre, visibility 1.
Detection 1, "bottle" (fixed):
  box    ``KNOWN_BOX`` = (0.5, 0.25, 0.875, 0.75) -> pixels (80, 30, 140, 90);
  score  0.9;
  mask   the ellipse inscribed in the box (``ellipse_mask``): pixel (x, y) is in when
         its centre satisfies ((x+.5)/W - cx)²/rx² + ((y+.5)/H - cy)²/ry² <= 1;
  keypoints the box corners (visibility 1) and centre (visibility 0).
Detections 2..7: fixed boxes with score 0.01 for every class (below any sane
threshold), mask logits -20 everywhere.

Mask logits are exactly +20 or -20 (sigmoid 1 - 2e-9 or 2e-9), so any threshold in
(0, 1) gives the same binary mask. Prototypes are non-negative (the contract's ReLU):
proto 0 is 20 everywhere, proto 1 is 40 inside the ellipse and 0 outside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg_perception.core.metadata import ModelMetadata

INPUT_HEIGHT = 120
INPUT_WIDTH = 160
GRID = 4
NUM_DETECTIONS = 8
CLASS_NAMES = ["person", "bottle", "cup"]
KEYPOINT_NAMES = ["top_left", "top_right", "bottom_right", "bottom_left", "center"]
SKELETON = [(0, 1), (1, 2), (2, 3), (3, 0)]
KNOWN_BOX = (0.5, 0.25, 0.875, 0.75)  # x1, y1, x2, y2 normalised; detection 1
KNOWN_SCORE = 0.9
LOW_SCORE = 0.01
MASK_LOGIT = 20.0

_FILLER_BOXES = np.array(
    [
        [0.0, 0.0, 0.125, 0.125],
        [0.875, 0.0, 1.0, 0.125],
        [0.0, 0.875, 0.125, 1.0],
        [0.875, 0.875, 1.0, 1.0],
        [0.25, 0.25, 0.5, 0.5],
        [0.5, 0.5, 0.75, 0.75],
    ],
    dtype=np.float32,
)


def ellipse_mask(height: int = INPUT_HEIGHT, width: int = INPUT_WIDTH) -> np.ndarray:
    """``(height, width)`` uint8 0/1: the ellipse inscribed in ``KNOWN_BOX`` (pixel centres)."""
    x1, y1, x2, y2 = KNOWN_BOX
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    u = (np.arange(width, dtype=np.float64) + 0.5) / width
    v = (np.arange(height, dtype=np.float64) + 0.5) / height
    inside = ((u[None, :] - cx) / rx) ** 2 + ((v[:, None] - cy) / ry) ** 2 <= 1.0
    return inside.astype(np.uint8)


def _box_keypoints(box: np.ndarray, centre_visibility: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array(
        [[x1, y1, 1.0], [x2, y1, 1.0], [x2, y2, 1.0], [x1, y2, 1.0],
         [(x1 + x2) / 2, (y1 + y2) / 2, centre_visibility]],
        dtype=np.float32,
    )


def brightest_cell_box(image: np.ndarray) -> np.ndarray:
    """``(4,)`` float32 normalised box of the brightest grid cell of one ``(H, W, 3)`` image."""
    gray = image.astype(np.float64).mean(axis=2)
    ch, cw = INPUT_HEIGHT // GRID, INPUT_WIDTH // GRID
    cells = gray.reshape(GRID, ch, GRID, cw).mean(axis=(1, 3))
    row, col = divmod(int(np.argmax(cells)), GRID)  # argmax: first maximum, row-major
    return np.array([col / GRID, row / GRID, (col + 1) / GRID, (row + 1) / GRID], dtype=np.float32)


def expected_outputs(images: np.ndarray) -> dict[str, np.ndarray]:
    """NumPy reference for the graph's outputs on ``(B, 120, 160, 3)`` uint8 images."""
    if images.dtype != np.uint8 or images.shape[1:] != (INPUT_HEIGHT, INPUT_WIDTH, 3):
        raise ValueError(f"expected (B, {INPUT_HEIGHT}, {INPUT_WIDTH}, 3) uint8, got {images.shape} {images.dtype}")
    b = images.shape[0]
    c = len(CLASS_NAMES)
    k = len(KEYPOINT_NAMES)
    boxes = np.zeros((b, NUM_DETECTIONS, 4), np.float32)
    scores = np.full((b, NUM_DETECTIONS, c), LOW_SCORE, np.float32)
    keypoints = np.zeros((b, NUM_DETECTIONS, k, 3), np.float32)
    known = np.array(KNOWN_BOX, np.float32)
    for i, image in enumerate(images):
        box_a = brightest_cell_box(image)
        boxes[i, 0] = box_a
        scores[i, 0] = [0.5 + 0.49 * image.astype(np.float64).mean() / 255.0, 0.0, 0.0]
        keypoints[i, 0] = _box_keypoints(box_a, 1.0)
    boxes[:, 1] = known
    boxes[:, 2:] = _FILLER_BOXES
    scores[:, 1] = [0.0, KNOWN_SCORE, 0.0]
    keypoints[:, 1] = _box_keypoints(known, 0.0)
    coeffs = np.tile(np.array([[-1.0, 0.0]], np.float32), (NUM_DETECTIONS, 1))
    coeffs[0] = [1.0, 0.0]
    coeffs[1] = [-1.0, 1.0]
    protos = np.stack(
        [np.full((INPUT_HEIGHT, INPUT_WIDTH), MASK_LOGIT, np.float32),
         2 * MASK_LOGIT * ellipse_mask().astype(np.float32)],
        axis=-1,
    )
    return {
        "boxes": boxes,
        "scores": scores,
        "mask_coeffs": np.broadcast_to(coeffs, (b, NUM_DETECTIONS, 2)).copy(),
        "protos": np.broadcast_to(protos, (b, INPUT_HEIGHT, INPUT_WIDTH, 2)).copy(),
        "keypoints": keypoints,
    }


class KnownAnswerYolact(nn.Module):
    """The torch module behind the known-answer graph (see the module docstring).

    ``forward`` takes ``(B, 120, 160, 3)`` uint8 images and returns the tuple
    ``(boxes, scores, mask_coeffs, protos, keypoints)`` in ``output_names`` order.
    """

    output_names = ["boxes", "scores", "mask_coeffs", "protos", "keypoints"]
    num_classes = len(CLASS_NAMES)
    num_keypoints = len(KEYPOINT_NAMES)
    num_prototypes = 2
    input_size = (INPUT_HEIGHT, INPUT_WIDTH)

    def __init__(self) -> None:
        super().__init__()
        # The image-independent parts are constants taken from the NumPy reference.
        ref = expected_outputs(np.zeros((1, INPUT_HEIGHT, INPUT_WIDTH, 3), np.uint8))
        for name in ("boxes", "scores", "keypoints"):
            self.register_buffer(f"fixed_{name}", torch.from_numpy(ref[name][0, 1:].copy()))
        self.register_buffer("coeffs", torch.from_numpy(ref["mask_coeffs"][0].copy()))
        self.register_buffer("protos", torch.from_numpy(ref["protos"][0].copy()))
        # Keypoints of a box (x1, y1, x2, y2) as a linear map: (5, 2) = M @ box.
        kp_map = torch.tensor(
            [
                [[1, 0, 0, 0], [0, 1, 0, 0]],  # top_left     (x1, y1)
                [[0, 0, 1, 0], [0, 1, 0, 0]],  # top_right    (x2, y1)
                [[0, 0, 1, 0], [0, 0, 0, 1]],  # bottom_right (x2, y2)
                [[1, 0, 0, 0], [0, 0, 0, 1]],  # bottom_left  (x1, y2)
                [[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]],  # center
            ],
            dtype=torch.float32,
        )
        self.register_buffer("kp_map", kp_map.reshape(-1, 4).t().contiguous())  # (4, 10)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        x = images.to(torch.float32)
        b = x.shape[0]
        gray = x.mean(dim=3, keepdim=True).permute(0, 3, 1, 2)  # (B, 1, H, W)
        cells = F.avg_pool2d(gray, kernel_size=(INPUT_HEIGHT // GRID, INPUT_WIDTH // GRID)).flatten(1)
        index = torch.argmax(cells, dim=1).to(torch.float32)  # (B,)
        row = torch.floor(index / GRID)
        col = index - row * GRID
        box_a = torch.stack([col, row, col + 1, row + 1], dim=1) / GRID  # (B, 4)

        score_a = 0.5 + 0.49 * x.mean(dim=(1, 2, 3)) / 255.0
        zeros = torch.zeros_like(score_a)
        scores_a = torch.stack([score_a, zeros, zeros], dim=1)

        kp_xy = (box_a @ self.kp_map).reshape(b, len(KEYPOINT_NAMES), 2)  # (B, 5, 2)
        kp_a = torch.cat([kp_xy, torch.ones_like(kp_xy[..., :1])], dim=-1)

        boxes = torch.cat([box_a[:, None], self.fixed_boxes.expand(b, -1, -1)], dim=1)
        scores = torch.cat([scores_a[:, None], self.fixed_scores.expand(b, -1, -1)], dim=1)
        keypoints = torch.cat([kp_a[:, None], self.fixed_keypoints.expand(b, -1, -1, -1)], dim=1)
        coeffs = self.coeffs.expand(b, -1, -1)
        protos = self.protos.expand(b, -1, -1, -1)
        return boxes, scores, coeffs, protos, keypoints


def known_answer_metadata(name: str = "known_answer") -> ModelMetadata:
    """Metadata of the known-answer model (3 classes, 5 keypoints, 2 prototypes, 160x120)."""
    return ModelMetadata(
        name=name,
        architecture="known_answer",
        class_names=list(CLASS_NAMES),
        input_width=INPUT_WIDTH,
        input_height=INPUT_HEIGHT,
        keypoint_names=list(KEYPOINT_NAMES),
        skeleton=list(SKELETON),
        num_prototypes=2,
    )


def write_known_answer_model(out_dir: str | Path, name: str = "known_answer", dynamic_batch: bool = False) -> Path:
    """Write ``<out_dir>/<name>.onnx`` and ``<name>.json``; return the ONNX path (about 0.2 s).
    ``dynamic_batch``: a symbolic batch dimension (several cameras in one network run)."""
    from seg_perception.models.export import export_image_model  # keeps this module's import light

    out_path = Path(out_dir) / f"{name}.onnx"
    return export_image_model(KnownAnswerYolact(), known_answer_metadata(name), out_path, dynamic_batch=dynamic_batch)


__all__ = [
    "INPUT_HEIGHT",
    "INPUT_WIDTH",
    "CLASS_NAMES",
    "KEYPOINT_NAMES",
    "SKELETON",
    "KNOWN_BOX",
    "KNOWN_SCORE",
    "LOW_SCORE",
    "KnownAnswerYolact",
    "ellipse_mask",
    "brightest_cell_box",
    "expected_outputs",
    "known_answer_metadata",
    "write_known_answer_model",
]
