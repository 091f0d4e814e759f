"""The frame's whole path from image to result, used by the node and offline regression alike.

- ``segmentation``: ``SegmentationPipeline``, the model: pre-processing, backend, post-processing
  (``forward`` / ``decode``), and how a model is found and loaded (``load_pipeline``).
- ``frame``: ``FrameProcessor``, one camera's path after the network: tracking with its
  publish rule, grasp keypoints, depth pairing and 3D.
- ``tracking``, ``depth``: the stages it runs.

No ROS and no torch here (torch only inside the torch backend, imported lazily).
"""

from seg_perception.pipeline.frame import FrameProcessor, ProcessedFrame, Inferred
from seg_perception.pipeline.segmentation import (
    DEFAULT_MODEL_NAME, SegmentationPipeline, backend_options, default_model_path, load_evaluation_pipeline, load_pipeline,
    postprocess_params_from, resolve_model_path,
)

__all__ = ["DEFAULT_MODEL_NAME", "FrameProcessor", "ProcessedFrame", "Inferred", "SegmentationPipeline",
           "backend_options", "default_model_path", "load_evaluation_pipeline", "load_pipeline", "postprocess_params_from", "resolve_model_path"]
