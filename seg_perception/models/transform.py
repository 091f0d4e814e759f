"""The input side of every exported network, as an explicit module.

The deployed graph's input is the contract's ``images`` tensor: ``(B, H, W, 3)`` uint8
RGB already resized to the model's input size (``core.metadata.INPUT_NAME``). The
cast, the mean/std normalisation (RGB order, 0-255 scale, values from the model
metadata) and the NHWC -> NCHW permute happen here, inside the graph, so that every
backend feeds the same bytes and no backend re-implements normalisation. Training
code skips this module and feeds normalised float NCHW batches to the model directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (123.68, 116.78, 103.94)  # RGB, 0-255 (ModelMetadata's defaults)
IMAGENET_STD = (58.40, 57.12, 57.38)


class InputNormalizer(nn.Module):
    """``(B, H, W, 3)`` uint8 RGB -> ``(B, 3, H, W)`` float32 ``(pixel - mean) / std``.

    The permuted tensor is channels-last in memory (a view of the NHWC input), which
    is what a channels-last model wants anyway.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        # Not persistent: the values live in the model metadata, not in checkpoints.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        # cast first: TensorRT takes a UINT8 network input only straight into a Cast
        # (onnx-tensorrt: "UINT8 is only supported as network input or output tensor types")
        x = images.to(torch.float32).permute(0, 3, 1, 2)
        return (x - self.mean) / self.std


class ImageInputModel(nn.Module):
    """Wraps a model so it takes contract images and returns a tuple of contract outputs.

    ``model`` must take a normalised ``(B, 3, H, W)`` float tensor, return a dict of
    tensors and expose ``output_names`` (the order of the returned tuple, which is the
    order of the ONNX graph's outputs). The model may run in half precision: the
    normalised input is cast to the dtype of its parameters and every output is cast
    back to float32, as the contract requires.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalizer = InputNormalizer(mean, std)
        self.model = model
        self.output_names: list[str] = list(model.output_names)  # type: ignore[arg-type]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        x = self.normalizer(images)
        dtype = next(self.model.parameters()).dtype
        outputs = self.model(x.to(dtype))
        return tuple(outputs[name].to(torch.float32) for name in self.output_names)


__all__ = ["InputNormalizer", "ImageInputModel"]


def input_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """RGB mean and std (0-255) the model expects: its ``input_mean``/``input_std`` if it declares
    them (detectron2's for CenterMask, which its checkpoints were trained with), else ImageNet's.

    Training, ``torch_predictor`` and the export must agree, or the ONNX graph would
    normalise differently from what the weights learnt.
    """
    mean = getattr(model, "input_mean", None)
    std = getattr(model, "input_std", None)
    return (tuple(float(v) for v in (mean if mean is not None else IMAGENET_MEAN)),
            tuple(float(v) for v in (std if std is not None else IMAGENET_STD)))
