"""Source image in, ``Detections`` out: pre-processing, backend, post-processing.

``SegmentationPipeline`` is the model half of the frame path (``FrameProcessor`` in
``pipeline.frame`` adds tracking, grasp points and 3D); every offline tool runs
frames through it, so a bag replay computes exactly what the robot computes.
No ROS, no torch here.
Post-processing follows the model's ``output_format``: ``core.postprocess`` for
YOLACT/YOLACT++ (with MaskIoU re-scoring when the metadata names its weights),
``core.postprocess_roi`` for box-first models (CenterMask).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seg_perception.core.keypoints import class_keypoint_table
from seg_perception.core.mask_rescoring import MaskIoURescorer
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact
from seg_perception.core.postprocess_roi import postprocess_roi
from seg_perception.core.preprocess import resize_for_network
from seg_perception.core.types import Detections
from seg_perception.params import to_dataclass
from seg_perception.runtime.base import Backend

# The package's default model; see docs/models.md.
DEFAULT_MODEL_NAME = "seg_perception_default.onnx"


def postprocess_params_from(values: Mapping[str, Any]) -> PostprocessParams:
    """Pick the post-processing tunables out of a node/tool parameter dict."""
    return to_dataclass(PostprocessParams, values, renames={
        "class_agnostic": "class_agnostic_nms", "candidate_threshold": "nms_candidate_threshold",
        "second_threshold": "nms_second_threshold", "clip_before_nms": "clip_boxes_before_nms"})


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
        model_path = self.backend.model_path
        if model_path is None:
            raise ValueError(f"metadata names MaskIoU weights {name!r} but the backend has no model_path to find them by")
        return MaskIoURescorer.load(Path(model_path).parent / name)

    @property
    def metadata(self) -> ModelMetadata:
        return self.backend.metadata

    def __call__(self, rgb: np.ndarray) -> Detections:
        """Instances in ``rgb`` ((H, W, 3) uint8), in its own pixel frame, with ``params``."""
        return self.decode(self.forward(rgb), rgb.shape[:2])

    def forward(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Pre-processing and the network: the raw outputs for ``decode``.

        Split from ``decode`` so the node can run a frame's network while the previous
        frame is post-processed and published (the backend releases the GIL), and so
        one backend can serve several cameras, each decoding with its own parameters.
        """
        md = self.metadata
        return self.backend.infer(resize_for_network(rgb, md.input_width, md.input_height))

    def forward_batch(self, images: Sequence[np.ndarray], times: dict[str, float] | None = None
                      ) -> list[dict[str, np.ndarray]]:
        """``forward`` for several images (of any sizes) as one network batch: each is
        pre-processed to the network size on its own, the stack runs once, and the
        outputs are split back into one raw dict per image (batch dimension 1 each).

        A model whose exported batch is fixed at 1 is run image by image by the backend
        (``Backend.infer``), so this works with every model; the batch saves the
        per-call overhead and, on a GPU, fills it. ``times`` receives the seconds of
        "preprocess" (all images) and "network" (the batch).
        """
        md = self.metadata
        t0 = time.perf_counter()
        resized = [resize_for_network(rgb, md.input_width, md.input_height) for rgb in images]
        batch = resized[0] if len(resized) == 1 else np.concatenate(resized)  # each is (1, H, W, 3)
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        t2 = time.perf_counter()
        if times is not None:
            times["preprocess"], times["network"] = t1 - t0, t2 - t1
        return [{name: out[i:i + 1] for name, out in raw.items()} for i in range(len(images))]

    def decode(self, raw: Mapping[str, np.ndarray], image_size: tuple[int, int],
               params: PostprocessParams | None = None) -> Detections:
        """``forward``'s outputs -> instances in an image of ``image_size`` (height, width),
        post-processed with ``params`` (default: this pipeline's ``params``)."""
        md = self.metadata
        height, width = image_size
        params = self.params if params is None else params
        if md.output_format == "roi":
            heatmaps = raw.get("keypoint_heatmaps")
            return postprocess_roi(
                raw["boxes"][0], raw["scores"][0], raw["classes"][0], raw["masks"][0],
                image_width=width, image_height=height, params=params,
                keypoint_heatmaps=None if heatmaps is None else heatmaps[0],
                network_size=(md.input_width, md.input_height), keypoint_table=self._keypoint_table,
            )
        kpts = raw.get("keypoints")
        if md.mask_crop == "box" and not params.box_region_masks:  # the crop the model was trained with
            params = replace(params, box_region_masks=True)
        return postprocess_yolact(
            raw["boxes"][0], raw["scores"][0], raw["mask_coeffs"][0], raw["protos"][0],
            image_width=width, image_height=height, params=params,
            keypoints=None if kpts is None else kpts[0], keypoint_table=self._keypoint_table,
            mask_rescorer=self._mask_rescorer,
        )

    def close(self) -> None:
        """Release the backend: for whoever owns the pipeline (the node, a tool), not a
        ``FrameProcessor``, which only borrows it."""
        self.backend.close()


def default_model_path() -> Path:
    """Where the shipped model lies (``resources``: the checkout's, else the installed share directory's);
    when absent, the path it was expected at, so that the error names it."""
    from seg_perception.resources import ResourceError, package_root, resource

    try:
        return resource(Path("models") / DEFAULT_MODEL_NAME)
    except ResourceError:
        return package_root() / "models" / DEFAULT_MODEL_NAME


def resolve_model_path(model_path: str | Path | None) -> Path:
    """The model a ``model_path`` parameter or ``--model`` option names: the path given,
    or the shipped model when it is empty (the one place that rule lives)."""
    return Path(str(model_path)) if model_path else default_model_path()


def backend_options(backend: str, device: str, precision: str, threads: int) -> dict[str, Any]:
    """The node's uniform backend parameters, in each backend's own terms."""
    if backend == "onnxruntime":
        opts: dict[str, Any] = {"threads": threads, "fp16": precision == "fp16", "device": device}
        if device.startswith("cuda"):
            opts["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return opts
    if backend == "torch":
        return {"device": device, "half": precision == "fp16", "threads": threads}
    return {}


def load_pipeline(values: Mapping[str, Any]) -> SegmentationPipeline:
    """Build the backend named by the parameters (``backend``, ``model_path``, ...)."""
    from seg_perception.runtime.factory import create_backend, resolve_backend

    model_path = resolve_model_path(values["model_path"])
    chosen, _ = resolve_backend(str(values["backend"]), model_path)
    opts = backend_options(chosen, str(values["device"]), str(values["precision"]), int(values["threads"]))
    backend = create_backend(chosen, model_path, **opts)
    return SegmentationPipeline(backend, postprocess_params_from(values))


def load_evaluation_pipeline(model: Path | None, backend: str = "onnxruntime", threads: int = 0,
                             score_threshold: float = 0.05, max_detections: int = 100) -> SegmentationPipeline:
    """The model on the CPU with evaluation post-processing: a low threshold (COCO practice,
    so AP sees the whole precision-recall curve) and 100 detections. The other
    post-processing parameters keep their defaults, which are the official YOLACT ones
    (``core.postprocess``)."""
    from seg_perception.runtime.factory import create_backend

    opts = backend_options(backend, "cpu", "fp32", threads)
    params = PostprocessParams(score_threshold=score_threshold, max_detections=max_detections)
    return SegmentationPipeline(create_backend(backend, resolve_model_path(model), **opts), params)
