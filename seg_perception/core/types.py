"""Plain data types passed between the layers.

Everything here is in the pixel frame of the *source* image (the camera frame as
received), never the network input, so the ROS layer and the tools can use the
values without knowing how the network saw the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CroppedMask:
    """A binary instance mask cut to an integer region of the source image.

    ``data`` is ``(height, width)`` uint8 with 1 for foreground and 0 elsewhere;
    ``(x, y)`` is the top-left pixel of the region in the source image.
    """

    x: int
    y: int
    data: np.ndarray

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    def to_full(self, image_height: int, image_width: int) -> np.ndarray:
        """Paste into an all-zero ``(image_height, image_width)`` uint8 mask."""
        full = np.zeros((image_height, image_width), dtype=np.uint8)
        full[self.y:self.y + self.height, self.x:self.x + self.width] = self.data
        return full


@dataclass
class Detections:
    """Instances found in one source image (N instances, K keypoints each).

    boxes:      (N, 4) float32, x1, y1, x2, y2 in source-image pixels.
    scores:     (N,) float32 in [0, 1].
    class_ids:  (N,) int32, index into ``ModelMetadata.class_names``.
    masks:      N cropped masks; each lies inside the image and covers the box.
    keypoints:  (N, K, 3) float32 x, y (source pixels), score in [0, 1]; K may be 0.
    track_ids:  (N,) uint32; 0 when tracking is off.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    masks: list[CroppedMask]
    keypoints: np.ndarray
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.track_ids is None:
            self.track_ids = np.zeros(len(self.scores), dtype=np.uint32)

    def __len__(self) -> int:
        return int(len(self.scores))

    @staticmethod
    def empty(num_keypoints: int = 0) -> "Detections":
        return Detections(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int32),
            masks=[],
            keypoints=np.zeros((0, num_keypoints, 3), np.float32),
        )
