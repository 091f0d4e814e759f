"""YOLACT++ mask re-scoring on NumPy: the MaskIoU net applied to the kept detections.

YOLACT++ multiplies each detection's class score by the IoU its ``FastMaskIoUNet``
predicts for the detection's own mask (``rescore_mask``). The net needs the assembled
masks of the detections that survive NMS, which only exist after post-processing, so
it runs here rather than in the exported graph (see ``models.yolact_plus``). It is
small (five stride-2 3x3 convs of 8..128 channels and a 1x1 conv to C classes), so
NumPy im2col convolutions cost well under a millisecond per detection.

Input masks follow the official ``postprocess``: ``sigmoid(protos @ coeff)`` at
prototype resolution, zeroed outside the box widened by one prototype pixel (``crop``
with ``padding=1``), not binarised. The weights come from ``<model>.maskiou.npz``
written by the exporter (arrays ``conv<i>.weight`` ``(O, I, k, k)``, ``conv<i>.bias``
``(O,)``, ``conv<i>.stride``); ``np.load`` reads them with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg_perception.core.postprocess import proto_crop_windows


@dataclass(frozen=True)
class _Conv:
    weight: np.ndarray  # (O, I, k, k) float32
    bias: np.ndarray  # (O,) float32
    stride: int


def crop_proto_masks(coeffs: np.ndarray, protos: np.ndarray, boxes: np.ndarray, padding: int = 1) -> np.ndarray:
    """``(D, Hp, Wp)`` float32 mask probabilities, zero outside each box (the MaskIoU input).

    coeffs: (D, P) coefficients; protos: (Hp, Wp, P); boxes: (D, 4) normalised x1, y1,
    x2, y2 of the network input (corners in any order). The kept window is
    ``core.postprocess.proto_crop_windows`` (the official ``crop``, the same one the
    masks are assembled from).
    """
    coeffs = np.asarray(coeffs, np.float32)
    protos = np.asarray(protos, np.float32)
    hp, wp = protos.shape[:2]
    with np.errstate(over="ignore"):
        masks = 1.0 / (1.0 + np.exp(-np.einsum("hwp,dp->dhw", protos, coeffs)))
    c0, c1, r0, r1 = proto_crop_windows(boxes, hp, wp, padding)
    cols = np.arange(wp)
    rows = np.arange(hp)
    keep_x = (cols[None, :] >= c0[:, None]) & (cols[None, :] < c1[:, None])
    keep_y = (rows[None, :] >= r0[:, None]) & (rows[None, :] < r1[:, None])
    return (masks * (keep_y[:, :, None] & keep_x[:, None, :])).astype(np.float32)


def _conv2d(x: np.ndarray, conv: _Conv) -> np.ndarray:
    """Valid (unpadded) strided convolution + bias: ``(D, I, H, W)`` -> ``(D, O, Ho, Wo)``."""
    o, i, k, _ = conv.weight.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::conv.stride, ::conv.stride]
    d, _, ho, wo = windows.shape[:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(d * ho * wo, i * k * k)
    out = cols @ conv.weight.reshape(o, i * k * k).T + conv.bias
    return out.reshape(d, ho, wo, o).transpose(0, 3, 1, 2)


class MaskIoURescorer:
    """Predicts each detection's mask IoU with YOLACT++'s MaskIoU net, on NumPy.

    ``predict`` maps ``(D, H, W)`` masks to ``(D, C)`` IoUs; calling the object with the
    raw outputs of the kept detections returns the ``(D,)`` factor for their scores.
    """

    def __init__(self, convs: list[_Conv]) -> None:
        if not convs:
            raise ValueError("MaskIoU net without layers")
        self.convs = convs
        self.num_classes = int(convs[-1].weight.shape[0])

    @classmethod
    def load(cls, path: str | Path) -> "MaskIoURescorer":
        """Read ``<model>.maskiou.npz``; ValueError naming the file if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MaskIoU re-scoring weights not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path} is not a MaskIoU weights file: {exc}") from None
        convs = []
        i = 0
        while f"conv{i}.weight" in arrays:
            w = arrays[f"conv{i}.weight"].astype(np.float32)
            b = arrays.get(f"conv{i}.bias")
            if w.ndim != 4 or w.shape[2] != w.shape[3] or b is None or b.shape != (w.shape[0],):
                raise ValueError(f"{path}: conv{i} has weight {w.shape} and bias {None if b is None else b.shape}")
            if convs and convs[-1].weight.shape[0] != w.shape[1]:
                raise ValueError(f"{path}: conv{i} takes {w.shape[1]} channels, conv{i - 1} gives {convs[-1].weight.shape[0]}")
            convs.append(_Conv(w, b.astype(np.float32), int(arrays.get(f"conv{i}.stride", np.array(1)))))
            i += 1
        if not convs or convs[0].weight.shape[1] != 1:
            raise ValueError(f"{path} holds no MaskIoU net taking one-channel masks")
        return cls(convs)

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """``(D, H, W)`` mask probabilities -> ``(D, C)`` predicted IoUs (ReLU, max over the map)."""
        x = np.asarray(masks, np.float32)[:, None]
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        for conv in self.convs:
            x = np.maximum(_conv2d(x, conv), 0)
        return x.max(axis=(2, 3)).astype(np.float32)

    def __call__(self, coeffs: np.ndarray, protos: np.ndarray, boxes: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """``(D,)`` IoU factors for the kept detections (see ``crop_proto_masks`` for the inputs)."""
        class_ids = np.asarray(class_ids, np.int64)
        if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= self.num_classes):
            raise ValueError(f"class ids outside 0..{self.num_classes - 1} for a MaskIoU net of {self.num_classes} classes")
        iou = self.predict(crop_proto_masks(coeffs, protos, boxes))
        return iou[np.arange(len(class_ids)), class_ids]


__all__ = ["MaskIoURescorer", "crop_proto_masks"]
