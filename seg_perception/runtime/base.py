"""The one interface the node and tools use to run a network."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.core.metadata import ModelMetadata


class BackendError(RuntimeError):
    """A model could not be loaded or run; the message names the file and the reason."""


class Backend(ABC):
    """Runs a network on a batch of pre-processed images.

    ``infer`` takes ``(B, H, W, 3)`` uint8 RGB at the model's input size and returns
    the raw outputs of the model's contract as NumPy arrays: ``core.metadata.YOLACT_OUTPUTS``
    or ``ROI_OUTPUTS``, by ``metadata.output_format`` (``output_names_for`` lists them).
    """

    name: str = "base"
    precision: str = "fp32"
    # What callers report (ModelInfo, the regression manifest) and where files that
    # belong to the model are found (MaskIoU weights beside it): every backend sets both.
    model_path: Path | None = None  # the file the backend loaded
    device: Any = "cpu"  # where it runs: "cpu", "cuda", "cuda:N" (a torch.device for torch; str() it)

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata

    @abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        ...

    def close(self) -> None:
        """Release sessions, engines and device memory."""
