"""One replayed frame's outputs, and its compact JSON form (a line of a golden run).

A golden run is compared frame by frame thousands of times more often than it is
written, so each frame is one JSON line holding exactly what the node published
(boxes, scores, classes, masks as COCO compressed RLE of the mask's region,
keypoints), decoded without reading the output bag. Numbers are stored so that
they read back bit for bit (float32 values as the shortest float64 repr).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seg_perception.core.types import CroppedMask, Detections


@dataclass
class FrameResult:
    """What the node published for one image of a recording.

    bag:         key of the recording in the run (its directory or file name).
    index:       position of the image on its topic (0-based, recording order).
    stamp_ns:    header stamp of the image (and of the outputs), nanoseconds.
    bag_time_ns: the time the image was recorded in the bag, nanoseconds.
    detections:  the instances, in source-image pixels; None when the node
                 published nothing for this image (dropped in a timed replay).
    class_names: per instance, the class name the message carried.
    """

    bag: str
    index: int
    stamp_ns: int
    bag_time_ns: int
    frame_id: str
    width: int
    height: int
    detections: Detections | None
    class_names: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> bool:
        return self.detections is None

    def label(self) -> str:
        """``bag frame N (stamp s.nnnnnnnnn)``: how reports name a frame."""
        return f"{self.bag} frame {self.index} (stamp {format_stamp(self.stamp_ns)})"


def format_stamp(stamp_ns: int) -> str:
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def _f32(value: Any) -> float:
    """A float32 value as the Python float that reads back to the same float32."""
    return float(np.float32(value))


def encode_rle(mask: CroppedMask) -> str:
    """COCO compressed RLE (the ``counts`` string) of the mask's region."""
    if mask.width == 0 or mask.height == 0:
        return ""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray((mask.data != 0).astype(np.uint8)))
    return rle["counts"].decode("ascii")


def decode_rle(x: int, y: int, width: int, height: int, counts: str) -> CroppedMask:
    if width == 0 or height == 0:
        return CroppedMask(x, y, np.zeros((height, width), np.uint8))
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' decode trips NumPy 2's copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        data = mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")})
    return CroppedMask(x, y, np.ascontiguousarray(data, dtype=np.uint8))


def frame_to_json(frame: FrameResult) -> dict[str, Any]:
    """A JSON-serialisable dict of one frame (the inverse of ``frame_from_json``)."""
    out: dict[str, Any] = {
        "index": frame.index, "stamp_ns": frame.stamp_ns, "bag_time_ns": frame.bag_time_ns,
        "frame_id": frame.frame_id, "width": frame.width, "height": frame.height,
    }
    det = frame.detections
    if det is None:
        out["dropped"] = True
        return out
    instances = []
    for i in range(len(det)):
        m = det.masks[i]
        inst: dict[str, Any] = {
            "class_id": int(det.class_ids[i]),
            "class_name": frame.class_names[i] if i < len(frame.class_names) else str(int(det.class_ids[i])),
            "score": _f32(det.scores[i]),
            "box": [_f32(v) for v in det.boxes[i]],
            "id": int(det.track_ids[i]),
            "mask": [int(m.x), int(m.y), m.width, m.height, encode_rle(m)],
        }
        if det.keypoints.ndim == 3 and det.keypoints.shape[1]:
            inst["keypoints"] = [[_f32(v) for v in kp] for kp in det.keypoints[i]]
        instances.append(inst)
    out["instances"] = instances
    return out


def frame_from_json(bag: str, obj: dict[str, Any]) -> FrameResult:
    """Read back one frame written by ``frame_to_json``; KeyError/ValueError if malformed."""
    common = dict(bag=bag, index=int(obj["index"]), stamp_ns=int(obj["stamp_ns"]),
                  bag_time_ns=int(obj["bag_time_ns"]), frame_id=str(obj["frame_id"]),
                  width=int(obj["width"]), height=int(obj["height"]))
    if obj.get("dropped"):
        return FrameResult(detections=None, **common)
    insts = obj["instances"]
    n = len(insts)
    k = max((len(i.get("keypoints", [])) for i in insts), default=0)
    kpts = np.zeros((n, k, 3), np.float32)
    for i, inst in enumerate(insts):
        if inst.get("keypoints"):
            kpts[i, :len(inst["keypoints"])] = inst["keypoints"]
    det = Detections(
        boxes=np.array([i["box"] for i in insts], np.float32).reshape(n, 4),
        scores=np.array([i["score"] for i in insts], np.float32),
        class_ids=np.array([i["class_id"] for i in insts], np.int32),
        masks=[decode_rle(*i["mask"]) for i in insts],
        keypoints=kpts,
        track_ids=np.array([i.get("id", 0) for i in insts], np.uint32),
    )
    return FrameResult(detections=det, class_names=[str(i["class_name"]) for i in insts], **common)
