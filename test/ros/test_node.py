"""seg_perception_node in its own process, fed over real DDS from this process.

The node is started with exactly the parameters and remappings the launch file
passes (``node_launch_spec``), runs the known-answer ONNX model on ONNX Runtime,
and receives frames of the real HSR recording.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from conftest import REPO, ros_available

if ros_available() is None:
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from seg_perception.messages import detections_from_instance_array as detections_from_msg, mask_from_message as mask_from_msg
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

from seg_perception.bags import read_images
from seg_perception.core.image import decode_image
from seg_perception.core.preprocess import resize_for_network

pytestmark = pytest.mark.ros

NS = "seg_test"
IMAGE_TOPIC = "/cam/color/image_raw"
INFO_TOPIC = "/cam/color/camera_info"


def start_node(tmp_path, model, namespace=NS, **launch_values) -> "NodeProcess":
    values = {"namespace": namespace, "image": IMAGE_TOPIC, "camera_info": INFO_TOPIC, "model_path": str(model),
              "params_file": str(REPO / "config" / "seg_perception.yaml"), **launch_values}
    return NodeProcess(node_launch_spec(values, REPO), tmp_path / f"node_{time.monotonic_ns()}.log")


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def restamped(frame: "Image", add_sec: int) -> "Image":
    """A copy of ``frame`` with its stamp moved, so results of separate tests never collide."""
    copy = deserialize_message(serialize_message(frame), type(frame))
    copy.header.stamp.sec += add_sec
    return copy


def rgb_image(rgb: np.ndarray, template: "Image", sec: int) -> "Image":
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                data=np.ascontiguousarray(rgb).tobytes())
    msg.header.frame_id = template.header.frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 12345
    return msg


@pytest.fixture(scope="module")
def hsr_frames(hsr_bag, ros_domain) -> list:
    return [deserialize_message(f.raw, Image) for f in read_images(hsr_bag, "/hero/head_rgbd_sensor/rgb/image_raw")]


@pytest.fixture(scope="module")
def node(tmp_path_factory, known_answer_model, ros_domain):
    """One running node plus a camera/consumer in the same namespace."""
    proc = start_node(tmp_path_factory.mktemp("node"), known_answer_model)
    player = CameraAndConsumer(namespace=NS, image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC,
                               subscribe_debug_image=True)
    try:
        player.wait_for_node(proc)
        yield proc, player
    finally:
        player.close()
        proc.stop()


def call(player, srv_type, name, request, timeout=10.0):
    client = player.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    player.node.destroy_client(client)
    assert future.done(), f"service {name} did not answer"
    return future.result()


def set_param(player, name, value, kind):
    field = {ParameterType.PARAMETER_DOUBLE: "double_value", ParameterType.PARAMETER_STRING: "string_value",
             ParameterType.PARAMETER_INTEGER: "integer_value", ParameterType.PARAMETER_BOOL: "bool_value"}[kind]
    pv = ParameterValue(type=kind, **{field: value})
    req = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
    return call(player, SetParameters, f"/{NS}/seg_perception_node/set_parameters", req).results[0]


# ---------------------------------------------------------------------------- outputs


def test_outputs_carry_the_input_header_and_source_pixel_geometry(node, hsr_frames):
    _, player = node
    for frame in hsr_frames:
        result = player.publish_and_wait(frame, timeout=30)
        assert result is not None, "no instances for a frame of the real recording"
        assert stamp_of(result) == stamp_of(frame)
        assert result.header.frame_id == frame.header.frame_id
        assert (result.image_width, result.image_height) == (frame.width, frame.height) == (640, 480)
        dets = detections_from_msg(result)
        names = [inst.class_name for inst in result.instances]
        assert sorted(names) == ["bottle", "person"]
        bottle, person = names.index("bottle"), names.index("person")
        for mask in dets.masks:
            assert mask.x >= 0 and mask.y >= 0
            assert mask.x + mask.width <= 640 and mask.y + mask.height <= 480
            assert mask.data.any()
        # The fixed detection lies at KNOWN_BOX of the network input, scaled to 640x480.
        np.testing.assert_allclose(dets.boxes[bottle], [320, 120, 560, 360], atol=0.5)
        # The image-following detection is the brightest cell of what the network saw.
        rgb = decode_image(frame.encoding, frame.width, frame.height, frame.step, frame.data)
        from seg_perception.models.known_answer import brightest_cell_box, expected_outputs

        small = resize_for_network(rgb, 160, 120)
        np.testing.assert_allclose(dets.boxes[person], brightest_cell_box(small[0]) * [640, 480, 640, 480], atol=0.5)
        np.testing.assert_allclose(dets.scores[person], expected_outputs(small)["scores"][0, 0, 0], atol=1e-5)


def test_masks_match_the_model_exactly_at_network_resolution(node, hsr_frames):
    from seg_perception.models.known_answer import ellipse_mask

    _, player = node
    rgb = decode_image(hsr_frames[0].encoding, 640, 480, hsr_frames[0].step, hsr_frames[0].data)
    small = cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA)
    result = player.publish_and_wait(rgb_image(small, hsr_frames[0], sec=1000), timeout=30)
    assert result is not None
    bottle = next(i for i in result.instances if i.class_name == "bottle")
    assert bottle.mask.encoding == "coco_rle"
    mask = mask_from_msg(bottle.mask)
    # The official YOLACT crop (the known-answer model's metadata keeps the default) reaches up
    # to one prototype pixel (2 px here) beyond the box (80, 30, 60, 60); the pixels are exact.
    assert 78 <= mask.x <= 80 and 28 <= mask.y <= 30 and mask.x + mask.width >= 140 and mask.y + mask.height >= 90
    np.testing.assert_array_equal(mask.to_full(120, 160), ellipse_mask())
    person = next(i for i in result.instances if i.class_name == "person")
    b = person.bbox
    x, y = int(round(b.center_x - b.size_x / 2)), int(round(b.center_y - b.size_y / 2))
    full = mask_from_msg(person.mask).to_full(120, 160)
    assert full[y:y + int(round(b.size_y)), x:x + int(round(b.size_x))].all()  # the whole box


def test_keypoints_topic_follows_instances_in_source_pixels(node, hsr_frames):
    _, player = node
    frame = hsr_frames[1]
    result = player.publish_and_wait(frame, timeout=30)
    assert player.wait_for(lambda r: any(stamp_of(k) == stamp_of(frame) for k in r.keypoints), 5)
    poses = next(k for k in player.received.keypoints if stamp_of(k) == stamp_of(frame))
    model = [p for p in poses.poses if p.keypoint_set == "model"]
    assert len(model) == len(result.instances)
    # Every instance also has the model-free "grasp" set (test_node_3d checks its geometry).
    assert [p.instance_index for p in poses.poses if p.keypoint_set == "grasp"] == list(range(len(result.instances)))
    for pose, inst in zip(model, result.instances):
        assert pose.keypoint_set == "model" and pose.class_id == inst.class_id
        corners = [(k.x, k.y) for k in pose.keypoints[:4]]
        b = inst.bbox
        x1, y1, x2, y2 = b.center_x - b.size_x / 2, b.center_y - b.size_y / 2, b.center_x + b.size_x / 2, b.center_y + b.size_y / 2
        np.testing.assert_allclose(corners, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)], atol=0.5)


def test_debug_image_is_an_overlay_of_the_source_frame(node, hsr_frames):
    _, player = node
    frame = hsr_frames[2]
    player.publish_and_wait(frame, timeout=30)
    assert player.wait_for(lambda r: any(stamp_of(m) == stamp_of(frame) for m in r.debug_images), 5)
    overlay_msg = next(m for m in player.received.debug_images if stamp_of(m) == stamp_of(frame))
    assert (overlay_msg.width, overlay_msg.height, overlay_msg.encoding) == (640, 480, "rgb8")
    overlay = decode_image("rgb8", 640, 480, overlay_msg.step, overlay_msg.data)
    source = decode_image(frame.encoding, 640, 480, frame.step, frame.data)
    changed = np.any(overlay != source, axis=2)
    assert changed[200:280, 400:480].mean() > 0.9  # inside the bottle ellipse: tinted
    assert not changed[470:, :300].any()  # bottom-left corner: no instance there


def test_model_info_reaches_a_subscriber_that_joins_late(node):
    late = CameraAndConsumer(namespace=NS, image_topic="/unused", node_name="late_joiner")
    try:
        assert late.wait_for(lambda r: bool(r.model_info), 10), "late subscriber got no model_info"
        info = late.received.model_info[-1]
        assert list(info.class_names) == ["person", "bottle", "cup"]
        assert list(info.keypoint_names) == ["top_left", "top_right", "bottom_right", "bottom_left", "center"]
        assert list(info.skeleton) == [0, 1, 1, 2, 2, 3, 3, 0]
        assert (info.input_width, info.input_height, info.backend) == (160, 120, "onnxruntime")
    finally:
        late.close()


def test_diagnostics_report_rates_latency_and_backend(node, hsr_frames):
    _, player = node
    got = []
    sub = player.node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    for frame in hsr_frames[:3]:
        player.publish_and_wait(frame, timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
            s.name.startswith(f"/{NS}/seg_perception_node:") for m in got for s in m.status):
        time.sleep(0.05)
    player.node.destroy_subscription(sub)
    status = next(s for m in reversed(got) for s in m.status if s.name.startswith(f"/{NS}/seg_perception_node:"))
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend"] == "onnxruntime" and values["model"] == "known_answer"
    assert values["state"] == "active"
    assert int(values["frames_processed"]) >= 3
    for key in ("input_rate_hz", "output_rate_hz", "latency_p50_ms", "latency_p95_ms", "frames_dropped"):
        assert key in values
    assert float(values["latency_p50_ms"]) > 0


# ---------------------------------------------------------------------------- parameters and bad input


def test_runtime_parameters_are_range_checked_and_take_effect(node, hsr_frames):
    _, player = node
    refused = set_param(player, "score_threshold", 1.5, ParameterType.PARAMETER_DOUBLE)
    assert not refused.successful
    refused = set_param(player, "mask_encoding", "png", ParameterType.PARAMETER_STRING)
    assert not refused.successful and "mask_encoding" in refused.reason
    refused = set_param(player, "score_threshold", "high", ParameterType.PARAMETER_STRING)
    assert not refused.successful

    assert set_param(player, "mask_encoding", "mono8", ParameterType.PARAMETER_STRING).successful
    # The image-following detection scores 0.5..0.99; 0.995 leaves none.
    assert set_param(player, "score_threshold", 0.995, ParameterType.PARAMETER_DOUBLE).successful
    try:
        frame = rgb_image(np.zeros((120, 160, 3), np.uint8), hsr_frames[0], sec=2000)
        result = player.publish_and_wait(frame, timeout=30)
        assert result is not None and len(result.instances) == 0
        assert set_param(player, "score_threshold", 0.3, ParameterType.PARAMETER_DOUBLE).successful
        frame = rgb_image(np.zeros((120, 160, 3), np.uint8), hsr_frames[0], sec=2001)
        result = player.publish_and_wait(frame, timeout=30)
        assert [i.mask.encoding for i in result.instances] == ["mono8", "mono8"]
        from seg_perception.models.known_answer import ellipse_mask

        bottle = next(i for i in result.instances if i.class_name == "bottle")
        assert mask_from_msg(bottle.mask).data.sum() == ellipse_mask().sum()
    finally:
        set_param(player, "mask_encoding", "coco_rle", ParameterType.PARAMETER_STRING)
        set_param(player, "score_threshold", 0.3, ParameterType.PARAMETER_DOUBLE)


def test_a_malformed_frame_is_reported_and_the_next_good_frame_processed(node, hsr_frames):
    proc, player = node
    bad = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(1000))
    bad.header.frame_id = "camera"
    bad.header.stamp.sec = 3000
    got = []
    sub = player.node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    player.publish(bad)

    def warned():
        return [s for m in got for s in m.status if s.level == b"\x01" and "data has 1000 bytes" in s.message]

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not warned():
        time.sleep(0.05)
    player.node.destroy_subscription(sub)
    assert warned(), "diagnostics did not name the malformed frame"
    assert proc.alive()
    assert player.publish_and_wait(hsr_frames[3], timeout=30) is not None, "good frame after a bad one not processed"
    assert "data has 1000 bytes" in proc.log_tail()


# ---------------------------------------------------------------------------- input variants and lifecycle


def test_compressed_input_gives_the_same_result_as_raw(tmp_path, node, known_answer_model, hsr_frames):
    _, raw_player = node
    proc = start_node(tmp_path, known_answer_model, namespace="compressed", use_compressed="true")
    player = CameraAndConsumer(namespace="compressed", image_topic=IMAGE_TOPIC, compressed=True, node_name="compressed_player")
    try:
        player.wait_for_node(proc)
        for frame in hsr_frames[:3]:
            frame = restamped(frame, 10_000)  # distinct from the raw node's earlier results
            raw = raw_player.publish_and_wait(frame, timeout=30)
            rgb = decode_image(frame.encoding, 640, 480, frame.step, frame.data)
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            compressed = CompressedImage(header=frame.header, format="rgb8; png compressed bgr8", data=png.tobytes())
            result = player.publish_and_wait(compressed, timeout=30)
            assert result is not None and raw is not None
            a, b = detections_from_msg(raw), detections_from_msg(result)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.scores, b.scores)
            for ma, mb in zip(a.masks, b.masks):
                assert (ma.x, ma.y) == (mb.x, mb.y)
                np.testing.assert_array_equal(ma.data, mb.data)
    finally:
        player.close()
        proc.stop()


def test_lifecycle_deactivate_stops_outputs_and_cleanup_configure_restores_them(tmp_path, known_answer_model, hsr_frames):
    proc = start_node(tmp_path, known_answer_model, namespace="lifecycle")
    player = CameraAndConsumer(namespace="lifecycle", image_topic=IMAGE_TOPIC)
    service = "/lifecycle/seg_perception_node"

    def transition(tid):
        return call(player, ChangeState, f"{service}/change_state",
                    ChangeState.Request(transition=Transition(id=tid))).success

    def state():
        return call(player, GetState, f"{service}/get_state", GetState.Request()).current_state.label

    try:
        player.wait_for_node(proc)
        assert state() == "active"
        assert player.publish_and_wait(hsr_frames[0], timeout=30) is not None
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
        frame = restamped(hsr_frames[1], 20_000)
        assert player.publish_and_wait(frame, timeout=2) is None, "an inactive node published"
        assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
        player.wait_for_subscriber()
        assert player.publish_and_wait(restamped(frame, 1), timeout=30) is not None, "no output after re-activation"
        shutdown_seconds = proc.stop()
        assert shutdown_seconds < 2.0, f"SIGINT shutdown took {shutdown_seconds:.2f} s"
    finally:
        player.close()
        proc.stop()


def test_auto_reliability_follows_a_best_effort_camera(tmp_path, known_answer_model, hsr_frames):
    proc = start_node(tmp_path, known_answer_model, namespace="best_effort", image="/be_cam/image")
    player = CameraAndConsumer(namespace="best_effort", image_topic="/be_cam/image",
                               camera_reliability=ReliabilityPolicy.BEST_EFFORT)
    try:
        player.wait_for_node(proc)
        rgb = decode_image(hsr_frames[0].encoding, 640, 480, hsr_frames[0].step, hsr_frames[0].data)
        small = cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA)  # fits one UDP datagram
        deadline = time.monotonic() + 20
        result = None
        sec = 4000
        while result is None and time.monotonic() < deadline:
            sec += 1
            result = player.publish_and_wait(rgb_image(small, hsr_frames[0], sec=sec), timeout=1.0)
        assert result is not None, f"no output for a best-effort camera\n{proc.log_tail()}"
        assert "resubscribing best_effort" in proc.log_tail() or "(best_effort" in proc.log_tail()
    finally:
        player.close()
        proc.stop()


def test_incompatible_qos_is_reported_with_the_fix(tmp_path, known_answer_model):
    # Forced reliable input against a best-effort camera: DDS refuses to match them.
    spec = node_launch_spec({"namespace": "strict", "image": "/strict_cam/image",
                             "model_path": str(known_answer_model)}, REPO)
    spec.overrides["input_reliability"] = "reliable"
    proc = NodeProcess(spec, tmp_path / "strict.log")
    player = CameraAndConsumer(namespace="strict", image_topic="/strict_cam/image",
                               camera_reliability=ReliabilityPolicy.BEST_EFFORT)
    try:
        player.wait_for_node(proc, timeout=60)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "incompatible" not in proc.log_tail():
            time.sleep(0.1)
        log = proc.log_tail()
        assert "incompatible" in log and "input_reliability" in log, log
    finally:
        player.close()
        proc.stop()
