"""The object classes of the synthetic world and their grasp keypoints.

One flat keypoint list serves every class; each class uses a subset of it
(``CLASS_KEYPOINTS``), so a network predicts ``K`` keypoints per instance and the
consumer keeps the ones its class owns. Keypoints are chosen for grasping: the
ends of an axis to align a gripper with (cap/base, tip/handle end), the top face
of a box, the handle of a mug.

Box corners are ordered from the camera's point of view, not the box's, because a
box has no front: corner 0 is the top corner lowest in the image (nearest the
robot when looking down) and the rest follow clockwise in the image. That keeps
the labels learnable from pixels alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the metadata module is only needed by ``make_metadata``
    from seg_perception.core.metadata import ModelMetadata

CLASS_NAMES: list[str] = ["box", "bottle", "can", "mug", "ball", "tool", "banana"]

KEYPOINT_NAMES: list[str] = [
    "box_top_0", "box_top_1", "box_top_2", "box_top_3",   # 0-3
    "bottle_cap", "bottle_neck", "bottle_base",            # 4-6
    "can_top", "can_bottom",                                # 7-8
    "mug_top", "mug_bottom", "mug_handle",                  # 9-11
    "ball_centre",                                          # 12
    "tool_tip", "tool_handle_end",                          # 13-14
    "banana_stem", "banana_tip",                            # 15-16
]

# Edges between keypoints of the same class, as 0-based indices into KEYPOINT_NAMES.
SKELETON: list[tuple[int, int]] = [
    (0, 1), (1, 2), (2, 3), (3, 0),
    (4, 5), (5, 6),
    (7, 8),
    (9, 10), (9, 11),
    (13, 14),
    (15, 16),
]

CLASS_KEYPOINTS: dict[str, list[int]] = {
    "box": [0, 1, 2, 3],
    "bottle": [4, 5, 6],
    "can": [7, 8],
    "mug": [9, 10, 11],
    "ball": [12],
    "tool": [13, 14],
    "banana": [15, 16],
}

# Keypoints inside the solid rather than on its surface (a grasp centre): they count
# as visible when the camera sees their object there, not when nothing is in front.
INTERIOR_KEYPOINTS: frozenset[str] = frozenset({"bottle_neck", "ball_centre"})

NUM_CLASSES = len(CLASS_NAMES)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# COCO-style per-keypoint OKS sigmas (fraction of object scale) for evaluation:
# tighter for crisp geometric points (corners, caps), looser for points that are
# ill-defined on the image (a ball's centre, the curved end of a banana).
KEYPOINT_SIGMAS: list[float] = [
    0.05, 0.05, 0.05, 0.05,
    0.05, 0.07, 0.07,
    0.06, 0.07,
    0.06, 0.07, 0.06,
    0.10,
    0.05, 0.06,
    0.07, 0.07,
]


def class_id(name: str) -> int:
    """0-based index of a class name (COCO category id is this + 1)."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown synthetic class {name!r}; known: {CLASS_NAMES}") from None


def class_skeleton(name: str) -> list[tuple[int, int]]:
    """The skeleton edges (0-based, flat keypoint indices) between one class's keypoints."""
    own = set(CLASS_KEYPOINTS[name])
    return [(a, b) for a, b in SKELETON if a in own and b in own]


def metadata_fields() -> dict:
    """The class/keypoint fields of ``ModelMetadata`` for a model trained on this data."""
    return {
        "class_names": list(CLASS_NAMES),
        "keypoint_names": list(KEYPOINT_NAMES),
        "skeleton": [tuple(e) for e in SKELETON],
        "class_keypoints": {k: list(v) for k, v in CLASS_KEYPOINTS.items()},
    }


def make_metadata(name: str, architecture: str, input_width: int, input_height: int,
                  **kwargs) -> "ModelMetadata":
    """``ModelMetadata`` for a network trained on the synthetic classes and keypoints."""
    from seg_perception.core.metadata import ModelMetadata

    return ModelMetadata(name=name, architecture=architecture, input_width=input_width,
                         input_height=input_height, **metadata_fields(), **kwargs)


def _check() -> None:
    # Import-time consistency check of the tables above: cheap and catches edits
    # that forget one of the parallel lists.
    assert len(KEYPOINT_SIGMAS) == NUM_KEYPOINTS
    assert set(CLASS_KEYPOINTS) == set(CLASS_NAMES)
    seen: set[int] = set()
    for idx in CLASS_KEYPOINTS.values():
        assert not seen.intersection(idx)
        seen.update(idx)
    assert seen == set(range(NUM_KEYPOINTS))
    for a, b in SKELETON:
        assert any(a in v and b in v for v in CLASS_KEYPOINTS.values())


_check()
