"""Deterministic synthetic RGB-D scenes for training and testing the shipped model.

NumPy + OpenCV only (no torch, no ROS). A procedural 2.5D ray-casting renderer
places household objects (box, bottle, can, mug, ball, tool, banana) on tables and
floors under a pinhole camera and returns exact instance masks, depth, grasp
keypoints with visibility, track ids and 3D centroids, plus realistic colour and
depth-sensor imperfections.

Main entry points::

    generate_frame(seed, index, width, height)            -> Frame   (training)
    generate_sequence(seed, n_frames, fps, width, height) -> Iterator[Frame]
    write_coco_dataset(out_dir, n_images, seed, width, height) -> annotations.json
    write_recording(bag_path, seed, n_frames, fps, width, height, storage)
    save_contact_sheet(frames, path)

Class and keypoint tables: ``CLASS_NAMES``, ``KEYPOINT_NAMES``, ``SKELETON``,
``CLASS_KEYPOINTS`` (see ``synth.classes``).
"""

from seg_perception.synth.classes import (CLASS_KEYPOINTS, CLASS_NAMES, KEYPOINT_NAMES, KEYPOINT_SIGMAS,
                                          NUM_CLASSES, NUM_KEYPOINTS, SKELETON, class_id, class_skeleton,
                                          make_metadata, metadata_fields)
from seg_perception.synth.geometry import CameraModel
from seg_perception.synth.scene import (Frame, InstanceTruth, SceneConfig, SequenceConfig, generate_frame,
                                        generate_sequence)

__all__ = [
    "CLASS_KEYPOINTS", "CLASS_NAMES", "KEYPOINT_NAMES", "KEYPOINT_SIGMAS", "NUM_CLASSES", "NUM_KEYPOINTS",
    "SKELETON", "class_id", "class_skeleton", "make_metadata", "metadata_fields",
    "CameraModel", "Frame", "InstanceTruth", "SceneConfig", "SequenceConfig", "generate_frame",
    "generate_sequence", "write_coco_dataset", "write_recording", "save_contact_sheet", "make_contact_sheet",
    "load_depth",
]


def __getattr__(name: str):
    # Writers pull in pycocotools/rosbags; import them only when asked for.
    if name in ("write_coco_dataset", "load_depth"):
        from seg_perception.synth import coco

        return getattr(coco, name)
    if name == "write_recording":
        from seg_perception.synth.recording import write_recording

        return write_recording
    if name in ("save_contact_sheet", "make_contact_sheet"):
        from seg_perception.synth import preview

        return getattr(preview, name)
    raise AttributeError(f"module 'seg_perception.synth' has no attribute {name!r}")
