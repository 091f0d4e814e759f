"""Source image in, ``Detections`` out: pre-processing, backend, post-processing.

The node and every offline tool run frames through this one object, so a bag
replay computes exactly what the robot computes. No ROS, no torch here.
Post-processing follows the model's ``output_format``: ``core.postprocess`` for
YOLACT/YOLACT++ (with MaskIoU re-scoring when the metadata names its weights),
``core.postprocess_roi`` for box-first models (CenterMask).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seg_perception.core.keypoints import class_keypoint_table
from seg_perception.core.mask_rescoring import MaskIoURescorer
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact
from seg_perception.core.postprocess_roi import postprocess_roi
from seg_perception.core.preprocess import resize_for_network
from seg_perception.core.types import Detections
from seg_perception.runtime.base import Backend

# The package's default model; see README ("The shipped model").
DEFAULT_MODEL_NAME = "seg_perception_default.onnx"


def postprocess_params_from(values: Mapping[str, Any]) -> PostprocessParams:
    """Pick the post-processing tunables out of a node/tool parameter dict."""
    return PostprocessParams(
        score_threshold=float(values["score_threshold"]),
        nms_iou_threshold=float(values["nms_iou_threshold"]),
        top_k=int(values["top_k"]),
        max_detections=int(values["max_detections"]),
        mask_threshold=float(values["mask_threshold"]),
        class_agnostic=bool(values["class_agnostic_nms"]),
    )


@dataclass
class SegmentationPipeline:
    backend: Backend
    params: PostprocessParams = field(default_factory=PostprocessParams)

    def __post_init__(self) -> None:
        md = self.metadata
        if md.output_format not in ("yolact", "roi"):
            raise ValueError(f"model {md.name!r} has output_format {md.output_format!r}; "
                             "this pipeline handles 'yolact' and 'roi'")
        # Keypoints a class does not have (per-class grasp keypoints) get score 0.
        self._keypoint_table = (class_keypoint_table(md.class_names, md.num_keypoints, md.class_keypoints)
                                if md.class_keypoints else None)
        self._mask_rescorer = self._load_mask_rescorer()

    def _load_mask_rescorer(self) -> MaskIoURescorer | None:
        """YOLACT++'s MaskIoU re-scoring, if the metadata names its weights (beside the model file)."""
        name = self.metadata.maskiou_weights
        if not name:
            return None
        model_path = getattr(self.backend, "model_path", None)
        if model_path is None:
            raise ValueError(f"metadata names MaskIoU weights {name!r} but the backend has no model_path to find them by")
        return MaskIoURescorer.load(Path(model_path).parent / name)

    @property
    def metadata(self) -> ModelMetadata:
        return self.backend.metadata

    def __call__(self, rgb: np.ndarray) -> Detections:
        """Instances in ``rgb`` ((H, W, 3) uint8), in its own pixel frame."""
        return self.decode(self.forward(rgb), rgb.shape[:2])

    def forward(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Pre-processing and the network: the raw outputs for ``decode``.

        Split from ``decode`` so the node can run a frame's network while the previous
        frame is post-processed and published (the backend releases the GIL).
        """
        md = self.metadata
        return self.backend.infer(resize_for_network(rgb, md.input_width, md.input_height))

    def decode(self, raw: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> Detections:
        """``forward``'s outputs -> instances in an image of ``image_size`` (height, width)."""
        md = self.metadata
        height, width = image_size
        if md.output_format == "roi":
            heatmaps = raw.get("keypoint_heatmaps")
            return postprocess_roi(
                raw["boxes"][0], raw["scores"][0], raw["classes"][0], raw["masks"][0],
                image_width=width, image_height=height, params=self.params,
                keypoint_heatmaps=None if heatmaps is None else heatmaps[0],
                network_size=(md.input_width, md.input_height), keypoint_table=self._keypoint_table,
            )
        kpts = raw.get("keypoints")
        return postprocess_yolact(
            raw["boxes"][0], raw["scores"][0], raw["mask_coeffs"][0], raw["protos"][0],
            image_width=width, image_height=height, params=self.params,
            keypoints=None if kpts is None else kpts[0], keypoint_table=self._keypoint_table,
            mask_rescorer=self._mask_rescorer,
        )

    def close(self) -> None:
        self.backend.close()


def default_model_path() -> Path:
    """Where the shipped model lies: the installed share directory, else the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("seg_perception")) / "models" / DEFAULT_MODEL_NAME)
    except Exception:  # not a ROS install, or the package is not installed there
        pass
    candidates.append(Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL_NAME)
    for path in candidates:
        if path.exists():
            return path
    return candidates[-1]


def backend_options(backend: str, device: str, precision: str, threads: int) -> dict[str, Any]:
    """The node's uniform backend parameters, in each backend's own terms."""
    if backend == "onnxruntime":
        opts: dict[str, Any] = {"threads": threads, "fp16": precision == "fp16"}
        if device.startswith("cuda"):
            opts["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return opts
    if backend == "torch":
        return {"device": device, "half": precision == "fp16", "threads": threads}
    return {}


def load_pipeline(values: Mapping[str, Any]) -> SegmentationPipeline:
    """Build the backend named by the parameters (``backend``, ``model_path``, ...)."""
    from seg_perception.runtime.factory import create_backend, resolve_backend

    model_path = Path(str(values["model_path"])) if values["model_path"] else default_model_path()
    chosen, _ = resolve_backend(str(values["backend"]), model_path)
    opts = backend_options(chosen, str(values["device"]), str(values["precision"]), int(values["threads"]))
    backend = create_backend(chosen, model_path, **opts)
    return SegmentationPipeline(backend, postprocess_params_from(values))
