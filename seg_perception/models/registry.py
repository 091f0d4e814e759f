"""Model names -> builder functions: a plain dict, one entry per named variant.

The name is what ``ModelMetadata.architecture`` and our checkpoints record, so a
backend can rebuild the network from a checkpoint plus its metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from seg_perception.models.yolact import yolact_im700, yolact_resnet18, yolact_resnet50, yolact_resnet101

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "yolact_resnet18": yolact_resnet18,
    "yolact_resnet50": yolact_resnet50,
    "yolact_resnet101": yolact_resnet101,
    "yolact_base": yolact_resnet101,  # the official config's name for the same network
    "yolact_im700": yolact_im700,
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
