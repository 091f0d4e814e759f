"""Shared helpers for the model and runtime tests (not a test module).

Keeps the expensive things (a small exported YOLACT, real camera frames) computed
once per test session, and keeps torch to a polite number of threads on shared CI
machines.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

HSR_BAG = Path("/work/shared/data/hsr_people/hsr_people_mcap")
HSR_IMAGE_TOPIC = "/hero/head_rgbd_sensor/rgb/image_raw"
SMALL_INPUT = 192  # the small YOLACT in these tests runs at 192 x 192
SMALL_CLASSES = ["person", "bottle", "cup"]
SMALL_KEYPOINTS = ["head", "left_hand", "right_hand", "left_foot"]
SMALL_SKELETON = [(0, 1), (0, 2), (0, 3)]
SEED = 1234

_exported: dict[str, Path] = {}


def limit_torch_threads() -> None:
    import torch

    torch.set_num_threads(2)


def small_yolact():
    """ResNet-18 YOLACT at 192 px with 3 classes and 4 keypoints; weights random, seeded.

    Random weights are deliberate: the tests using it check plumbing and numerical
    agreement between backends, not accuracy.
    """
    import torch

    from seg_perception.models import yolact_resnet18

    limit_torch_threads()
    torch.manual_seed(SEED)
    model = yolact_resnet18(num_classes=len(SMALL_CLASSES), input_size=SMALL_INPUT, num_keypoints=len(SMALL_KEYPOINTS))
    # Non-trivial BatchNorm statistics, so a wrong eval/train mode would show.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    return model.eval()


def small_metadata(model):
    from seg_perception.models.export import metadata_for_model

    return metadata_for_model(model, "small_test_yolact", SMALL_CLASSES, SMALL_KEYPOINTS, SMALL_SKELETON)


def exported_small_model(root: Path) -> tuple[Path, Path]:
    """``(onnx_path, checkpoint_path)`` of the small YOLACT, exported once per session.

    The checkpoint sits beside the ONNX file under its own stem with its own metadata
    sidecar, as a user would deploy them.
    """
    key = str(root)
    if key not in _exported:
        from seg_perception.models.checkpoint import save_checkpoint
        from seg_perception.models.export import export_onnx

        model = small_yolact()
        metadata = small_metadata(model)
        out = root / "small_yolact"
        onnx_path = export_onnx(model, metadata, out / "small_yolact.onnx")
        ckpt = save_checkpoint(model, out / "small_yolact_torch.pth")
        metadata.save(ckpt.with_suffix(".json"))
        _exported[key] = onnx_path
    onnx_path = _exported[key]
    return onnx_path, onnx_path.parent / "small_yolact_torch.pth"


@lru_cache(maxsize=1)
def hsr_frames() -> tuple[np.ndarray, ...]:
    """The real 640x480 RGB frames of the hsr_people bag (empty if the data is absent)."""
    if not HSR_BAG.is_dir():
        return ()
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    frames = []
    with AnyReader([HSR_BAG], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        connections = [c for c in reader.connections if c.topic == HSR_IMAGE_TOPIC]
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            assert msg.encoding == "rgb8", msg.encoding
            rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
            frames.append(rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3).copy())
    return tuple(frames)


def mask_iou(a, b, width: int, height: int) -> float:
    """IoU of two ``CroppedMask`` in a ``width x height`` image (1.0 when both are empty)."""
    fa = a.to_full(height, width).astype(bool)
    fb = b.to_full(height, width).astype(bool)
    union = np.logical_or(fa, fb).sum()
    return 1.0 if union == 0 else float(np.logical_and(fa, fb).sum() / union)
