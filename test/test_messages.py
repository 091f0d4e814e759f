"""One message builder over two type tables: what the node publishes (rclpy classes) and
what an offline run writes (a rosbags typestore) are the same messages on the wire, 3D
included, and the readers give back what went in. (Compared after deserialising: rclpy
leaves the CDR alignment padding uninitialised, rosbags writes zeros.)"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ros_available
from seg_perception.core.depth3d import CameraIntrinsics, Depth3DParams
from seg_perception.core.grasp import grasp_keypoints
from seg_perception.core.masks import COCO_RLE, MONO8
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.types import CroppedMask, Detections
from seg_perception.messages import MessageBuilder, detections_from_instance_array
from seg_perception.pipeline.depth import frame_3d

pytestmark = pytest.mark.ros

MD = ModelMetadata(name="m", architecture="yolact_resnet18", class_names=["person", "bottle"], input_width=64,
                   input_height=64, keypoint_names=["a", "b"], skeleton=[(0, 1)])


def _frame() -> tuple[Detections, np.ndarray, np.ndarray]:
    h, w = 60, 80
    box = np.zeros((20, 30), bool)
    box[4:16, 5:25] = True
    masks = [CroppedMask(10, 10, box), CroppedMask(40, 30, np.ones((20, 30), bool))]
    dets = Detections(boxes=np.array([[10, 10, 40, 30], [40, 30, 70, 50]], np.float32),
                      scores=np.array([0.912345, 0.4], np.float32), class_ids=np.array([0, 1], np.int32),
                      masks=masks, keypoints=np.array([[[12, 12, 0.9], [30, 20, 0.2]], [[50, 40, 0.8], [60, 45, 0.7]]],
                                                      np.float32),
                      track_ids=np.array([7, 0], np.uint32))
    depth = np.full((h, w), 2.0, np.float32)
    depth[:5] = np.nan
    return dets, depth, np.zeros(0)


@pytest.mark.parametrize("encoding", [COCO_RLE, MONO8])
def test_rclpy_and_rosbags_messages_are_the_same_on_the_wire(encoding):
    reason = ros_available()
    if reason:
        pytest.skip(reason)
    from rclpy.serialization import deserialize_message, serialize_message

    from seg_perception.bags import typestore
    from seg_perception.ros.conversions import BUILDER

    dets, depth, _ = _frame()
    grasp = grasp_keypoints(dets.masks).keypoints
    f3d = frame_3d(dets, depth, CameraIntrinsics(80.0, 80.0, 39.5, 29.5), depth.shape, Depth3DParams(min_points=5),
                   grasp)
    store = typestore()
    offline = MessageBuilder.from_typestore(store)
    for d3 in (None, f3d):
        outs = []
        for builder in (BUILDER, offline):
            header = builder.header(1_700_000_000_123_456_789, "camera")
            msgs = builder.detections(dets, header, 80, 60, MD, encoding, instances_3d=None if d3 is None else d3.instances,
                                      grasp=grasp, grasp_positions=None if d3 is None else d3.grasp,
                                      grasp_valid=None if d3 is None else d3.grasp_valid)
            msgs += (builder.model_info(MD, "onnxruntime", "cpu", "fp32", "/m.onnx", header),
                     builder.image(header, np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3) % 251, "rgb8"))
            outs.append(msgs)
        for ours, theirs in zip(*outs):
            kind = type(ours)
            assert deserialize_message(serialize_message(ours), kind) == deserialize_message(offline.serialize(theirs), kind)
        assert d3 is None or any(i.has_3d for i in outs[0][0].instances)
        back = detections_from_instance_array(outs[1][0])
        np.testing.assert_array_equal(back.track_ids, dets.track_ids)
        assert all((a.to_full(60, 80) == b.to_full(60, 80)).all() for a, b in zip(back.masks, dets.masks))
