"""Model names -> builder functions: a plain dict, one entry per named variant.

The name is what ``ModelMetadata.architecture`` and our checkpoints record, so a
backend can rebuild the network from a checkpoint plus its metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from seg_perception.models.centermask import (
    centermask_lite_vovnet19,
    centermask_lite_vovnet19_slim,
    centermask_lite_vovnet19_slim_dw,
    centermask_lite_vovnet19_slim_dw_320,
    centermask_lite_vovnet39,
    centermask_resnet50,
    centermask_vovnet39,
    centermask_vovnet57,
)
from seg_perception.models.torchvision_rcnn import TORCHVISION_RCNN, TorchvisionRCNN
from seg_perception.models.yolact import yolact_im700, yolact_resnet18, yolact_resnet50, yolact_resnet101, yolact_slim
from seg_perception.models.yolact_plus import yolact_plus_resnet50, yolact_plus_resnet101

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "yolact_resnet18": yolact_resnet18,
    "yolact_resnet50": yolact_resnet50,
    "yolact_resnet101": yolact_resnet101,
    "yolact_base": yolact_resnet101,  # the official config's name for the same network
    "yolact_im700": yolact_im700,
    "yolact_slim": yolact_slim,  # CPU-trainable from scratch; the shipped default model
    "yolact_plus_resnet50": yolact_plus_resnet50,
    "yolact_plus_resnet101": yolact_plus_resnet101,
    "yolact_plus_base": yolact_plus_resnet101,  # the official config's name
    "centermask_lite_vovnet19": centermask_lite_vovnet19,
    "centermask_lite_vovnet19_slim": centermask_lite_vovnet19_slim,
    "centermask_lite_vovnet19_slim_dw": centermask_lite_vovnet19_slim_dw,
    "centermask_lite_vovnet19_slim_dw_320": centermask_lite_vovnet19_slim_dw_320,  # small CPU/embedded variant
    "centermask_lite_vovnet39": centermask_lite_vovnet39,
    "centermask_vovnet39": centermask_vovnet39,
    "centermask_vovnet57": centermask_vovnet57,
    "centermask_resnet50": centermask_resnet50,
    # torchvision's Mask R-CNN / Keypoint R-CNN wrapped as roi-format models.
    **{name: partial(TorchvisionRCNN, name) for name in TORCHVISION_RCNN},
}


def build_model(architecture: str, **kwargs: Any) -> nn.Module:
    """Build a (randomly initialised) model by name; ``kwargs`` go to its builder."""
    try:
        builder = MODEL_BUILDERS[architecture]
    except KeyError:
        raise ValueError(
            f"unknown model architecture {architecture!r}; known: {', '.join(sorted(MODEL_BUILDERS))}"
        ) from None
    return builder(**kwargs)


__all__ = ["MODEL_BUILDERS", "build_model"]
