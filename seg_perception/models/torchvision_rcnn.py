"""torchvision's Mask R-CNN and Keypoint R-CNN as node models (``output_format == "roi"``).

The exported graph's boundary: everything torchvision's ``GeneralizedRCNN`` does in
eval mode *except* its ``GeneralizedRCNNTransform`` resize and its final
``transform.postprocess`` (mask pasting, keypoint decoding, rescaling to the original
image). So the graph holds the normalisation (``transform.ImageInputModel``, torchvision's
mean/std on the 0-255 scale), the zero padding to a multiple of 32 that torchvision's
``batch_images`` applies, the backbone + FPN, the RPN, the box head with torchvision's
own ``postprocess_detections`` (score threshold, per-class NMS, top ``max_detections``),
and the mask / keypoint heads on the surviving boxes. Its outputs are our
``core.metadata.ROI_OUTPUTS``; ``core.postprocess_roi`` pastes the 28x28 mask
probabilities into the source image and decodes the 56x56 keypoint heatmaps, the same
code that serves CenterMask. Fixed input size: the resize to it is the pipeline's.

Why not export torchvision's pasted masks and decoded keypoints: pasted masks are
``(N, 1, H, W)`` floats at network resolution (megabytes per detection, then resized
again to the source image), and torchvision decodes keypoints inside a scripted loop;
the per-box grids are small, resolution-independent and already decoded by our core.

Classes: torchvision's COCO labels are the 91 COCO category ids (``N/A`` gaps
included); the graph maps them to the 80 contiguous ``COCO_CLASSES`` indices and gives
a gap label score 0 (a padding row). Trained weights never score a gap label above
torchvision's 0.05 threshold; random weights can.

Keypoint R-CNN has no mask head. Its node model is a *combined* graph: Keypoint
R-CNN finds the people and their keypoints, and a Mask R-CNN (its own backbone and
FPN, its COCO mask head, the ``person`` channel) computes each person's mask at the
Keypoint R-CNN box, exactly as Mask R-CNN computes masks for its own detections. The
node therefore never publishes a person without a real mask; the price is a second
backbone (measured in docs/maskrcnn.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg_perception.core.metadata import COCO_CLASSES, COCO_PERSON_KEYPOINTS

# torchvision's GeneralizedRCNNTransform defaults (0-1 scale), here on the 0-255 scale.
TORCHVISION_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCHVISION_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
SIZE_DIVISIBLE = 32  # torchvision's batch_images pads every image to a multiple of this
PERSON_LABEL = 1  # COCO category id 1, torchvision's label for "person" in both models


@dataclass(frozen=True)
class RCNNSpec:
    """One torchvision architecture: its builder, weights enum and what it predicts."""

    builder: str  # name in torchvision.models.detection
    weights_enum: str  # name of its weights enum in torchvision.models.detection
    num_labels: int  # torchvision's num_classes (background included)
    keypoints: bool


TORCHVISION_RCNN = {
    "maskrcnn_resnet50_fpn": RCNNSpec("maskrcnn_resnet50_fpn", "MaskRCNN_ResNet50_FPN_Weights", 91, False),
    "maskrcnn_resnet50_fpn_v2": RCNNSpec("maskrcnn_resnet50_fpn_v2", "MaskRCNN_ResNet50_FPN_V2_Weights", 91, False),
    "keypointrcnn_resnet50_fpn": RCNNSpec("keypointrcnn_resnet50_fpn", "KeypointRCNN_ResNet50_FPN_Weights", 2, True),
}
MASK_ARCHITECTURES = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
DEFAULT_INPUT_SIZE = (480, 640)  # (height, width): a 4:3 camera at its own resolution


def coco_label_table() -> list[int]:
    """torchvision COCO label (0..90) -> index into ``COCO_CLASSES``, -1 for background and N/A."""
    from torchvision.models._meta import _COCO_CATEGORIES

    index = {name: i for i, name in enumerate(COCO_CLASSES)}
    return [index.get(name, -1) for name in _COCO_CATEGORIES]


def build_torchvision_detector(architecture: str, **kwargs: Any) -> nn.Module:
    """A randomly initialised torchvision detector (no download); ``kwargs`` go to its builder."""
    import torchvision.models.detection as tvd

    spec = TORCHVISION_RCNN[architecture]
    extra: dict[str, Any] = {"num_keypoints": len(COCO_PERSON_KEYPOINTS)} if spec.keypoints else {}
    return getattr(tvd, spec.builder)(weights=None, weights_backbone=None, num_classes=spec.num_labels,
                                      **extra, **kwargs).eval()


class TorchvisionRCNN(nn.Module):
    """A torchvision R-CNN as a ``roi``-format model: normalised NCHW in, ``ROI_OUTPUTS`` out.

    ``detector`` holds the torchvision model (its state dict is torchvision's under the
    prefix ``detector.``); for Keypoint R-CNN, ``mask_model`` holds the Mask R-CNN whose
    mask head gives each person its mask (prefix ``mask_model.``).

    Args:
        architecture: a key of ``TORCHVISION_RCNN``.
        input_size: (height, width) of the network input, fixed in the graph.
        num_classes / num_keypoints: must be what the architecture predicts (80 COCO
            classes / 0 keypoints, or 1 class ``person`` / 17 keypoints); present so the
            generic export and torch backend checks apply.
        mask_architecture: the Mask R-CNN that masks Keypoint R-CNN's people.
        max_detections: detections per image (torchvision's ``box_detections_per_img``),
            the fixed row count D of the outputs.
        score_threshold, nms_threshold: torchvision's ``box_score_thresh`` / ``box_nms_thresh``.
    """

    output_format = "roi"
    input_mean = TORCHVISION_MEAN
    input_std = TORCHVISION_STD

    def __init__(
        self,
        architecture: str = "maskrcnn_resnet50_fpn",
        input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
        num_classes: int | None = None,
        num_keypoints: int | None = None,
        mask_architecture: str = "maskrcnn_resnet50_fpn",
        max_detections: int = 100,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if architecture not in TORCHVISION_RCNN:
            raise ValueError(f"unknown torchvision architecture {architecture!r}; known: {', '.join(TORCHVISION_RCNN)}")
        spec = TORCHVISION_RCNN[architecture]
        self.architecture = architecture
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_classes = 1 if spec.keypoints else len(COCO_CLASSES)
        self.num_keypoints = len(COCO_PERSON_KEYPOINTS) if spec.keypoints else 0
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise ValueError(f"{architecture} predicts {self.num_classes} classes, not {num_classes}")
        if num_keypoints is not None and int(num_keypoints) != self.num_keypoints:
            raise ValueError(f"{architecture} predicts {self.num_keypoints} keypoints, not {num_keypoints}")
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self.max_detections = int(max_detections)
        common = dict(box_detections_per_img=self.max_detections, box_score_thresh=float(score_threshold),
                      box_nms_thresh=float(nms_threshold))
        self.detector = build_torchvision_detector(architecture, **common)
        self.mask_architecture = ""
        if spec.keypoints:
            if mask_architecture not in MASK_ARCHITECTURES:
                raise ValueError(f"mask_architecture must be one of {', '.join(MASK_ARCHITECTURES)}")
            self.mask_architecture = mask_architecture
            self.mask_model = build_torchvision_detector(mask_architecture)
            table = [-1] * spec.num_labels
            table[PERSON_LABEL] = 0
        else:
            table = coco_label_table()
        self.register_buffer("label_to_class", torch.tensor(table, dtype=torch.int64), persistent=False)
        self.output_names = ["boxes", "scores", "classes", "masks"] + (["keypoint_heatmaps"] if spec.keypoints else [])
        self.build_kwargs = {"input_size": list(self.input_size),
                             "mask_architecture": mask_architecture, "max_detections": self.max_detections,
                             "score_threshold": float(score_threshold), "nms_threshold": float(nms_threshold)}

    def load_torchvision_state(self, detector: dict[str, Tensor], mask_model: dict[str, Tensor] | None = None,
                               ) -> dict[str, Tensor]:
        """The state dict of this module from torchvision state dicts of its parts."""
        state = {f"detector.{k}": v for k, v in detector.items()}
        if mask_model is not None:
            state.update({f"mask_model.{k}": v for k, v in mask_model.items()})
        return state

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W)`` normalised -> ``ROI_OUTPUTS`` with D = ``max_detections`` rows per image."""
        from torchvision.models.detection.image_list import ImageList
        from torchvision.models.detection.roi_heads import maskrcnn_inference

        h, w = int(x.shape[-2]), int(x.shape[-1])
        pad_h = (SIZE_DIVISIBLE - h % SIZE_DIVISIBLE) % SIZE_DIVISIBLE
        pad_w = (SIZE_DIVISIBLE - w % SIZE_DIVISIBLE) % SIZE_DIVISIBLE
        x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros after normalisation, as torchvision's batch_images
        sizes = [(h, w)] * x.shape[0]
        images = ImageList(x, sizes)
        det = self.detector
        heads = det.roi_heads
        features = det.backbone(x)
        proposals, _ = det.rpn(images, features)
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals, sizes)

        if self.num_keypoints:
            mask_net = self.mask_model
            mask_features = mask_net.backbone(x)
            mask_labels = [torch.full_like(lab, PERSON_LABEL) for lab in labels]
        else:
            mask_net, mask_features, mask_labels = det, features, labels
        mh = mask_net.roi_heads
        mask_logits = mh.mask_predictor(mh.mask_head(mh.mask_roi_pool(mask_features, boxes, sizes)))
        masks = maskrcnn_inference(mask_logits, mask_labels)  # per image (n, 1, M, M) probabilities
        heatmaps: list[Tensor] = []
        if self.num_keypoints:
            kp = heads.keypoint_predictor(heads.keypoint_head(heads.keypoint_roi_pool(features, boxes, sizes)))
            heatmaps = list(kp.split([b.shape[0] for b in boxes]))

        scale = torch.tensor([w, h, w, h], dtype=x.dtype, device=x.device)
        out: dict[str, list[Tensor]] = {name: [] for name in self.output_names}
        for i in range(len(boxes)):
            classes = self.label_to_class[labels[i]]
            out["boxes"].append(self._pad(boxes[i] / scale))
            out["scores"].append(self._pad(scores[i] * (classes >= 0).to(scores[i].dtype)))
            out["classes"].append(self._pad(classes.clamp(min=0).to(x.dtype)))
            out["masks"].append(self._pad(masks[i][:, 0]))
            if self.num_keypoints:
                out["keypoint_heatmaps"].append(self._pad(heatmaps[i]))
        return {name: torch.stack(values) for name, values in out.items()}

    def _pad(self, rows: Tensor) -> Tensor:
        """``rows`` padded with zero rows (score 0: padding) to exactly ``max_detections``.

        Concatenate-then-slice keeps the traced graph free of data-dependent pad sizes:
        the output has D rows whatever the number of detections.
        """
        filler = rows.new_zeros((self.max_detections, *rows.shape[1:]))
        return torch.cat([rows, filler])[: self.max_detections]


def torchvision_rcnn(architecture: str, **kwargs: Any) -> TorchvisionRCNN:
    """Registry builder: ``kwargs`` as ``TorchvisionRCNN`` takes them."""
    return TorchvisionRCNN(architecture, **kwargs)


class WeightsUnavailable(RuntimeError):
    """torchvision's COCO weights are neither cached nor downloadable; the message says where to put them."""


def coco_weights_file(architecture: str) -> tuple[str, str]:
    """(file name, URL) of torchvision's COCO weights for ``architecture``, as its weights API caches them."""
    import os
    from urllib.parse import urlparse

    import torchvision.models.detection as tvd

    weights = getattr(tvd, TORCHVISION_RCNN[architecture].weights_enum).DEFAULT
    return os.path.basename(urlparse(weights.url).path), weights.url


def hub_checkpoint_dir() -> str:
    """The folder torchvision's weights API reads and downloads into (``$TORCH_HOME/hub/checkpoints``)."""
    import os

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def load_coco_weights(architecture: str, progress: bool = True) -> dict[str, Tensor]:
    """torchvision's COCO state dict for ``architecture`` through its weights enum.

    A file of the expected name in ``hub_checkpoint_dir()`` is loaded as it is (torchvision
    checks the hash in the name only when it downloads); otherwise it is downloaded with a
    progress bar and hash-checked. Offline: ``WeightsUnavailable`` naming the file and folder.
    """
    import torchvision.models.detection as tvd

    weights = getattr(tvd, TORCHVISION_RCNN[architecture].weights_enum).DEFAULT
    name, url = coco_weights_file(architecture)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
        reason = str(getattr(exc, "reason", exc)).splitlines()[0]
        raise WeightsUnavailable(
            f"cannot get torchvision's COCO weights for {architecture} ({reason}): download {url} on a machine "
            f"with internet and put it, named {name}, into {hub_checkpoint_dir()} (or set TORCH_HOME)"
        ) from None


__all__ = [
    "TORCHVISION_RCNN", "MASK_ARCHITECTURES", "RCNNSpec", "TorchvisionRCNN", "torchvision_rcnn",
    "build_torchvision_detector", "coco_label_table", "coco_weights_file", "hub_checkpoint_dir",
    "load_coco_weights", "WeightsUnavailable",
]
