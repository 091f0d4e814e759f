"""Networks (torch, torchvision): YOLACT, YOLACT++, CenterMask(-Lite), checkpoints and ONNX export.

Importing this package imports torch; the ROS node and the ONNX Runtime/TensorRT
backends never do.
"""

from seg_perception.models.registry import MODEL_BUILDERS, build_model
from seg_perception.models.centermask import (
    CenterMask,
    centermask_lite_vovnet19,
    centermask_lite_vovnet19_slim,
    centermask_lite_vovnet19_slim_dw,
    centermask_lite_vovnet19_slim_dw_320,
    centermask_lite_vovnet39,
    centermask_resnet50,
    centermask_vovnet39,
    centermask_vovnet57,
)
from seg_perception.models.yolact import Yolact, yolact_im700, yolact_resnet18, yolact_resnet50, yolact_resnet101
from seg_perception.models.yolact_plus import YolactPlus, yolact_plus_resnet50, yolact_plus_resnet101

__all__ = [
    "MODEL_BUILDERS",
    "build_model",
    "Yolact",
    "yolact_resnet18",
    "yolact_resnet50",
    "yolact_resnet101",
    "yolact_im700",
    "YolactPlus",
    "yolact_plus_resnet50",
    "yolact_plus_resnet101",
    "CenterMask",
    "centermask_lite_vovnet19",
    "centermask_lite_vovnet19_slim",
    "centermask_lite_vovnet19_slim_dw",
    "centermask_lite_vovnet19_slim_dw_320",
    "centermask_lite_vovnet39",
    "centermask_vovnet39",
    "centermask_vovnet57",
    "centermask_resnet50",
]
