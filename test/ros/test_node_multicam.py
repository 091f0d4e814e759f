"""Three cameras, one node, one model, over real DDS.

The node runs in its own process with ``cameras:=[front, left, right]`` (as the launch
file passes it) and the known-answer model exported with a dynamic batch on ONNX
Runtime; one player per camera publishes that camera's frames of the real HSR recording
under ``/<ns>/<camera>/`` and listens to that camera's outputs.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from conftest import REPO, ros_available

if ros_available() is None:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

from seg_perception.bags import read_images

pytestmark = pytest.mark.ros

NS = "mc_test"
CAMERAS = ("front", "left", "right")


def frame_for(template: "Image", camera: str, sec: int, scale: float = 1.0) -> "Image":
    """``template`` restamped ``sec`` with the camera's frame_id (scaled: another resolution)."""
    msg = deserialize_message(serialize_message(template), Image)
    msg.header.frame_id = f"{camera}_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 1000 * (1 + CAMERAS.index(camera))
    if scale != 1.0:
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 3]
        rgb = cv2.resize(rgb.reshape(msg.height, msg.width, 3), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        msg.height, msg.width = rgb.shape[:2]
        msg.step = msg.width * 3
        msg.data = rgb.tobytes()
    return msg


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def hsr_frames(hsr_bag, ros_domain) -> list:
    return [deserialize_message(f.raw, Image) for f in read_images(hsr_bag, "/hero/head_rgbd_sensor/rgb/image_raw")]


@pytest.fixture(scope="module")
def rig(tmp_path_factory, ros_domain):
    pytest.importorskip("torch", reason="writing the known-answer ONNX graph needs torch")
    from seg_perception.models.known_answer import write_known_answer_model

    tmp = tmp_path_factory.mktemp("multicam")
    model = write_known_answer_model(tmp, dynamic_batch=True)
    spec = node_launch_spec({"namespace": NS, "cameras": "[" + ", ".join(CAMERAS) + "]", "model_path": str(model),
                             "params_file": str(REPO / "config" / "seg_perception.yaml")}, REPO)
    proc = NodeProcess(spec, tmp / "node.log")
    players = {}
    try:
        for camera in CAMERAS:
            players[camera] = CameraAndConsumer(namespace=f"/{NS}/{camera}", image_topic="image",
                                                camera_info_topic="camera_info", node_name=f"player_{camera}",
                                                model_info_topic=f"/{NS}/model_info")
            players[camera].wait_for_node(proc)
        yield proc, players
    finally:
        for player in players.values():
            player.close()
        proc.stop()


def diagnostics_of(player, seconds: float = 2.5) -> dict[str, dict]:
    """The newest status per name from /diagnostics over ``seconds``: {name: {key: value, level, message}}."""
    got = []
    sub = player.node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    time.sleep(seconds)
    player.node.destroy_subscription(sub)
    statuses = {}
    for msg in got:
        for s in msg.status:
            if s.name.startswith(f"/{NS}/seg_perception_node:"):
                statuses[s.name.split(": ", 1)[1]] = {**{kv.key: kv.value for kv in s.values},
                                                      "level": s.level, "message": s.message}
    return statuses


def wait_all(players, stamps, timeout=60.0) -> dict:
    results = {}
    for camera, stamp in stamps.items():
        player = players[camera]
        ok = player.wait_for(lambda r: any(stamp_of(m) == stamp for m in r.instances), timeout)
        results[camera] = player.instances_for(stamp) if ok else None
    return results


def test_each_camera_gets_outputs_with_its_own_header_one_model_info_and_batched_frames(rig, hsr_frames):
    proc, players = rig
    assert all(p.received.model_info for p in players.values())
    scales = {"front": 1.0, "left": 1.0, "right": 0.5}  # right: another resolution
    for k, template in enumerate(hsr_frames[:4]):
        sent = {c: frame_for(template, c, 100 + k, scales[c]) for c in CAMERAS}
        for camera, msg in sent.items():  # together: frames of all cameras share a batch
            players[camera].publish(msg)
        results = wait_all(players, {c: stamp_of(m) for c, m in sent.items()})
        for camera, result in results.items():
            assert result is not None, f"no instances on {camera} for frame {k}\n{proc.log_tail()}"
            assert result.header.frame_id == f"{camera}_optical"
            assert (result.image_width, result.image_height) == (sent[camera].width, sent[camera].height)
            assert sorted(i.class_name for i in result.instances) == ["bottle", "person"]
    # No camera ever received another camera's output.
    for camera, player in players.items():
        assert {m.header.frame_id for m in player.received.instances} == {f"{camera}_optical"}
        assert {m.header.frame_id for m in player.received.keypoints} <= {f"{camera}_optical"}
    statuses = diagnostics_of(players["front"])
    assert set(statuses) == {"backend", *(f"camera {c}" for c in CAMERAS)}
    backend = statuses["backend"]
    assert backend["model"] == "known_answer" and backend["cameras"] == ",".join(CAMERAS)
    # Every processed frame went through a batch (whether frames of several cameras met in one
    # depends on their arrival; that batching takes them together is tested without DDS in
    # test/pipeline/test_multicam_batching.py).
    processed = sum(int(statuses[f"camera {c}"]["frames_processed"]) for c in CAMERAS)
    assert int(backend["frames_batched"]) >= processed and int(backend["batches"]) <= int(backend["frames_batched"])
    for camera in CAMERAS:
        values = statuses[f"camera {camera}"]
        assert int(values["frames_processed"]) >= 4
        for stage in ("decode", "preprocess", "network", "postprocess", "tracking_3d", "build", "publish"):
            assert float(values[f"stage_{stage}_p95_ms"]) >= 0.0, stage


def test_bad_frames_on_one_camera_do_not_touch_the_others(rig, hsr_frames):
    proc, players = rig
    for k in range(3):
        bad = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(1000))
        bad.header.frame_id = "left_optical"
        bad.header.stamp.sec = 400 + k
        players["left"].publish(bad)
        sent = {c: frame_for(hsr_frames[k], c, 500 + k) for c in ("front", "right")}
        for camera, msg in sent.items():
            players[camera].publish(msg)
        results = wait_all(players, {c: stamp_of(m) for c, m in sent.items()})
        assert all(r is not None and len(r.instances) == 2 for r in results.values()), proc.log_tail()
    statuses = diagnostics_of(players["front"])
    assert "data has 1000 bytes" in statuses["camera left"].get("problem.input", "")
    for camera in ("front", "right"):
        assert not any(k.startswith("problem.") for k in statuses[f"camera {camera}"]), statuses[f"camera {camera}"]
    assert "[left] dropped a frame on /mc_test/left/image" in proc.log_tail(20000)
    # The camera that sent bad frames is served again with its next good one.
    good = frame_for(hsr_frames[0], "left", 600)
    assert players["left"].publish_and_wait(good, timeout=30) is not None


def test_when_one_camera_stops_the_others_go_on(rig, hsr_frames):
    proc, players = rig
    # front stops (its last frame was earlier); left and right keep streaming at 10 Hz.
    served = {"left": 0, "right": 0}
    for k in range(15):
        stamps = {}
        for camera in served:
            msg = frame_for(hsr_frames[k % len(hsr_frames)], camera, 700 + k)
            players[camera].publish(msg)
            stamps[camera] = stamp_of(msg)
        time.sleep(0.1)
    time.sleep(3.0)
    for camera in served:
        served[camera] = sum(1 for m in players[camera].received.instances if 700 <= m.header.stamp.sec < 715)
    assert min(served.values()) >= 10, served
    assert proc.alive()


def test_a_camera_list_with_a_bad_name_is_reported_and_the_node_keeps_one_camera(ros_domain):
    import rclpy
    from rclpy.context import Context

    from seg_perception.ros.node import SegPerceptionNode

    context = Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "cameras:=[front,1x]", "-p", "autostart:=false"])
    node = None
    try:
        node = SegPerceptionNode(context=context)
        assert node.param_values()["cameras"] == []
        assert "'1x' is not a relative topic name" in node._problems.active()[0][1].message
        assert node.resolve_topic_name(node._single.inputs.image_topic()[1]).endswith("/image")
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
