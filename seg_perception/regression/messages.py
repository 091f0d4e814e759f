"""Our output topics in bags, and the regression record of a published InstanceArray.

Messages are built and read by ``seg_perception.messages`` (one builder for rclpy and
rosbags); this module adds what regression runs need on top: where output bags put
the node's topics and the record (``FrameResult``) of one frame.
"""

from __future__ import annotations

from typing import Any

from seg_perception.core.stamps import stamp_ns
from seg_perception.messages import INSTANCE_ARRAY, MODEL_INFO, POSE_KEYPOINTS_ARRAY, detections_from_instance_array
from seg_perception.regression.records import FrameResult

__all__ = ["INSTANCE_ARRAY", "MODEL_INFO", "OUTPUT_TOPICS", "POSE_KEYPOINTS_ARRAY", "frame_from_instance_array"]

# Where output bags put the node's topics (as `seg-perception demo` does).
OUTPUT_TOPICS = {
    INSTANCE_ARRAY: "/seg_perception/instances",
    POSE_KEYPOINTS_ARRAY: "/seg_perception/keypoints",
    MODEL_INFO: "/seg_perception/model_info",
}


def frame_from_instance_array(msg: Any, bag: str, index: int, bag_time_ns: int) -> FrameResult:
    """The regression record of one published InstanceArray (rclpy or rosbags)."""
    return FrameResult(
        bag=bag, index=index, stamp_ns=stamp_ns(msg.header.stamp), bag_time_ns=int(bag_time_ns),
        frame_id=str(msg.header.frame_id), width=int(msg.image_width), height=int(msg.image_height),
        detections=detections_from_instance_array(msg), class_names=[str(i.class_name) for i in msg.instances],
    )
