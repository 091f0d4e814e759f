"""Networks (torch, torchvision): YOLACT and friends, checkpoints and ONNX export.

Importing this package imports torch; the ROS node and the ONNX Runtime/TensorRT
backends never do.
"""

from seg_perception.models.registry import MODEL_BUILDERS, build_model
from seg_perception.models.yolact import Yolact, yolact_im700, yolact_resnet18, yolact_resnet50, yolact_resnet101

__all__ = [
    "MODEL_BUILDERS",
    "build_model",
    "Yolact",
    "yolact_resnet18",
    "yolact_resnet50",
    "yolact_resnet101",
    "yolact_im700",
]
