"""Reliability: bad input never kills the node, every fault is named, the next frame works.

Each bad-input case publishes the fault to a running node (its own process, real
DDS), then checks: the node is alive, /diagnostics carries a WARN/ERROR status
naming the problem, the log has exactly one line for it although it was sent
three times (throttled), and a good frame sent afterwards is processed.
"""

from __future__ import annotations

import itertools
import signal
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
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

from seg_perception.core.image import encode_rgb_to
from seg_perception.tools.soak import process_rss_bytes, process_threads_and_fds

pytestmark = pytest.mark.ros

WARN, ERROR = b"\x01", b"\x02"
_stamps = itertools.count(100_000)
RNG = np.random.default_rng(7)
GOOD_RGB = RNG.integers(0, 255, (120, 160, 3), dtype=np.uint8)


def next_stamp(msg):
    msg.header.stamp.sec = next(_stamps)
    return msg


def raw_image(rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = "camera") -> "Image":
    raw = encode_rgb_to(rgb, encoding)
    msg = Image(height=raw.height, width=raw.width, encoding=raw.encoding, step=raw.step,
                is_bigendian=int(raw.is_bigendian), data=bytes(raw.data))
    msg.header.frame_id = frame_id
    return next_stamp(msg)


def bad_image(encoding="rgb8", width=160, height=120, step=480, data=b"", frame_id="camera") -> "Image":
    msg = Image(height=height, width=width, encoding=encoding, step=step, data=data)
    msg.header.frame_id = frame_id
    return next_stamp(msg)


def compressed(data: bytes, fmt: str = "jpeg") -> "CompressedImage":
    msg = CompressedImage(format=fmt, data=data)
    msg.header.frame_id = "camera"
    return next_stamp(msg)


def jpeg(rgb=GOOD_RGB) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def png(rgb=GOOD_RGB) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


K_160 = [200.0, 0.0, 79.5, 0.0, 200.0, 59.5, 0.0, 0.0, 1.0]  # intrinsics of the 160x120 GOOD_RGB frames


def colour_info() -> "CameraInfo":
    return CameraInfo(width=160, height=120, k=K_160)


def depth_image(depth: np.ndarray, encoding: str | None = None, data: bytes | None = None,
                stamp_offset_ns: int = 8_000_000) -> "Image":
    """A depth Image of ``depth`` (32FC1 metres, or 16UC1 for uint16) whose stamp is an
    *offset* from the colour frame's (``Harness.publish_rgbd`` adds the colour stamp)."""
    enc = encoding or ("16UC1" if depth.dtype == np.uint16 else "32FC1")
    arr = np.ascontiguousarray(depth.astype("<u2" if depth.dtype == np.uint16 else "<f4"))
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=enc, step=arr.strides[0],
                data=arr.tobytes() if data is None else data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_offset_ns, 1_000_000_000)
    return msg


class Harness:
    """A node process, a camera/consumer (colour and depth), and every /diagnostics message seen."""

    def __init__(self, tmp_path, model, namespace, overrides=None, **launch_values):
        values = {"namespace": namespace, "image": f"/{namespace}/cam/image", "camera_info": f"/{namespace}/cam/info",
                  "depth": f"/{namespace}/cam/depth", "depth_camera_info": f"/{namespace}/cam/depth_info",
                  "model_path": str(model), **launch_values}
        self.spec = node_launch_spec(values, REPO)
        self.spec.overrides["log_throttle_period"] = THROTTLE_S
        self.spec.overrides["depth_wait"] = 0.5  # depth sent just before colour must not miss on a loaded machine
        self.spec.overrides.update(overrides or {})
        self.namespace = namespace
        self.proc = NodeProcess(self.spec, tmp_path / f"{namespace}.log")
        self.player = CameraAndConsumer(namespace=namespace, image_topic=f"/{namespace}/cam/image",
                                        camera_info_topic=f"/{namespace}/cam/info",
                                        compressed=launch_values.get("use_compressed") == "true")
        self.diagnostics: list = []
        self.player.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.depth_pub = self.player.node.create_publisher(Image, f"/{namespace}/cam/depth", 5)
        self.depth_info_pub = self.player.node.create_publisher(CameraInfo, f"/{namespace}/cam/depth_info", 5)

    def close(self):
        self.player.close()
        return self.proc.stop()

    def status_with(self, text: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in list(self.diagnostics):
                for s in msg.status:
                    if s.name.startswith(f"/{self.namespace}/{self.spec.name}:") and (text in s.message or
                                                             any(text in kv.value for kv in s.values)):
                        return s
            time.sleep(0.05)
        return None

    def publish_rgbd(self, depth: "Image | None", depth_info: "CameraInfo | None" = None, timeout: float = 20.0):
        """A good colour frame (with its camera_info) and a depth image of the same stamp,
        moved by ``depth.header.stamp`` offsets already set; the InstanceArray or None."""
        colour = raw_image(GOOD_RGB)
        if depth_info is not None:
            depth_info.header = colour.header
            self.depth_info_pub.publish(depth_info)
        if depth is not None:
            depth.header.frame_id = colour.header.frame_id
            depth.header.stamp.sec += colour.header.stamp.sec
            self.depth_pub.publish(depth)
        return self.player.publish_and_wait(colour, timeout, camera_info=colour_info())

    def good_rgbd_frame_processed(self) -> bool:
        result = self.publish_rgbd(depth_image(np.full((120, 160), 1.0, np.float32)))
        return result is not None and any(i.has_3d for i in result.instances)

    def good_frame_processed(self) -> bool:
        is_compressed = self.player.image_pub.msg_type is CompressedImage
        msg = compressed(png(), "png") if is_compressed else raw_image(GOOD_RGB)
        return self.player.publish_and_wait(msg, timeout=20) is not None


@pytest.fixture(scope="module")
def raw_node(tmp_path_factory, known_answer_model, ros_domain):
    h = Harness(tmp_path_factory.mktemp("raw"), known_answer_model, "matrix_raw")
    h.player.wait_for_node(h.proc)
    yield h
    h.close()


@pytest.fixture(scope="module")
def compressed_node(tmp_path_factory, known_answer_model, ros_domain):
    h = Harness(tmp_path_factory.mktemp("compressed"), known_answer_model, "matrix_compressed", use_compressed="true")
    h.player.wait_for_node(h.proc)
    yield h
    h.close()


# ----------------------------------------------------------------------------- supported encodings


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "yuv422",
                                      "bayer_rggb8"])
def test_every_supported_encoding_is_processed(raw_node, encoding):
    result = raw_node.player.publish_and_wait(raw_image(GOOD_RGB, encoding), timeout=20)
    assert result is not None and (result.image_width, result.image_height) == (160, 120)
    assert {i.class_name for i in result.instances} == {"bottle", "person"}


def test_an_8k_frame_is_processed(raw_node):
    big = np.zeros((4320, 7680, 3), np.uint8)
    big[:1080, :1920] = 255  # brightest cell top-left
    result = raw_node.player.publish_and_wait(raw_image(big), timeout=60)
    assert result is not None and (result.image_width, result.image_height) == (7680, 4320)


# ----------------------------------------------------------------------------- the bad-input matrix

RAW_CASES = {
    "unsupported_encoding": (lambda: bad_image("32FC1", step=640, data=bytes(640 * 120)), "unsupported image encoding '32FC1'", WARN),
    "unknown_encoding": (lambda: bad_image("rgb9", data=bytes(480 * 120)), "unsupported image encoding 'rgb9'", WARN),
    "data_too_short": (lambda: bad_image(data=bytes(1000)), "data has 1000 bytes, expected at least 57600", WARN),
    "empty_data": (lambda: bad_image(data=b""), "data has 0 bytes", WARN),
    "step_too_small": (lambda: bad_image(step=100, data=bytes(480 * 120)), "step 100 is smaller than width", WARN),
    "height_larger_than_data": (lambda: bad_image(height=240, data=bytes(480 * 120)), "expected at least 115200", WARN),
    "width_larger_than_step": (lambda: bad_image(width=320, data=bytes(480 * 120)), "step 480 is smaller than width x bytes per pixel = 320", WARN),
    "zero_width": (lambda: bad_image(width=0, step=0, data=b""), "zero or negative size 0x120", WARN),
    "zero_height": (lambda: bad_image(height=0, data=b""), "zero or negative size 160x0", WARN),
    "beyond_the_size_limit": (lambda: bad_image(width=100_000, height=100_000, step=300_000, data=bytes(16)), "exceeds the limit", WARN),
    "odd_width_yuv422": (lambda: bad_image("yuv422", width=161, step=322, data=bytes(322 * 120)), "needs an even width", WARN),
}

COMPRESSED_CASES = {
    "corrupt_jpeg": (lambda: compressed(jpeg()[:200] + bytes(3000) + jpeg()[-2:]), "is corrupt: the decoder rejected it", WARN),
    "truncated_jpeg": (lambda: compressed(jpeg()[: len(jpeg()) // 2]), "is truncated: no end-of-image marker", WARN),
    "truncated_png": (lambda: compressed(png()[: len(png()) // 2], "png"), "is truncated: no IEND chunk", WARN),
    "corrupt_png": (lambda: compressed(png()[:40] + bytes(len(png()) - 56) + png()[-16:], "png"), "PNG data (", WARN),
    "empty_compressed": (lambda: compressed(b""), "has no data", WARN),
    "not_an_image": (lambda: compressed(b"GIF89a" + bytes(100), "jpeg"), "neither JPEG nor PNG", WARN),
    "unsupported_format": (lambda: compressed(png(), "bmp"), "unsupported compressed image format 'bmp'", WARN),
}


THROTTLE_S = 1.0  # the matrix nodes' log_throttle_period


def assert_reported_once(harness, text, level, log_before, recovered, failure):
    """The fault is on /diagnostics at ``level`` or worse, the node lives, ``recovered()``
    (the next good frame is processed), and the log names it once (throttled)."""
    status = harness.status_with(text)
    assert status is not None, f"/diagnostics never named '{text}'\n{harness.proc.log_tail()}"
    assert status.level in (WARN, ERROR) and status.level >= level
    assert harness.proc.alive()
    assert recovered(), failure
    new_log = harness.proc.log_tail(10_000_000)[log_before:]
    assert new_log.count(text) == 1, f"expected one throttled log line for '{text}'\n{new_log}"


def check_case(harness, make, text, level):
    time.sleep(THROTTLE_S)  # a fault of the same shape in the previous case is no longer throttled
    log_before = len(harness.proc.log_tail(10_000_000))
    for _ in range(3):
        harness.player.publish(make())
        time.sleep(0.05)
    assert_reported_once(harness, text, level, log_before, harness.good_frame_processed,
                         "the next good frame was not processed")


@pytest.mark.parametrize("case", RAW_CASES)
def test_bad_raw_frame(raw_node, case):
    check_case(raw_node, *RAW_CASES[case])


@pytest.mark.parametrize("case", COMPRESSED_CASES)
def test_bad_compressed_frame(compressed_node, case):
    check_case(compressed_node, *COMPRESSED_CASES[case])


# Each: (depth image or None, depth camera_info or None) -> what diagnostics must name.
DEPTH_CASES = {
    "depth_all_nan": (lambda: (depth_image(np.full((120, 160), np.nan, np.float32)), None), "has no valid readings"),
    "depth_all_inf": (lambda: (depth_image(np.full((120, 160), np.inf, np.float32)), None), "has no valid readings"),
    "depth_all_zero_mm": (lambda: (depth_image(np.zeros((120, 160), np.uint16)), None), "has no valid readings"),
    "depth_other_aspect": (lambda: (depth_image(np.ones((90, 160), np.float32)), None), "different aspect ratios"),
    "depth_unsupported_encoding": (lambda: (depth_image(np.ones((120, 160), np.float32), "rgb8"), None),
                                   "unsupported depth encoding 'rgb8'"),
    "depth_data_too_short": (lambda: (depth_image(np.ones((120, 160), np.float32), data=bytes(100)), None),
                             "data has 100 bytes"),
    "depth_other_clock": (lambda: (depth_image(np.ones((120, 160), np.float32), stamp_offset_ns=400_000_000), None),
                          "within depth_sync_slop"),
    "depth_camera_info_zeros": (lambda: (None, CameraInfo(width=160, height=120)), "ignoring depth camera_info"),
}


def check_depth_case(harness, make, text, level=WARN):
    """As ``check_case``, for a fault of the depth stream: each faulty depth image comes
    with a good colour frame, which must still be published (without 3D)."""
    time.sleep(THROTTLE_S)
    log_before = len(harness.proc.log_tail(10_000_000))
    for _ in range(3):
        depth, info = make()
        result = harness.publish_rgbd(depth, info)
        assert result is not None, f"the colour frame was not published\n{harness.proc.log_tail()}"
        assert depth is None or not any(i.has_3d for i in result.instances)
    assert_reported_once(harness, text, level, log_before, harness.good_rgbd_frame_processed,
                         "the next good colour + depth frame was not processed with 3D")


@pytest.mark.parametrize("case", DEPTH_CASES)
def test_bad_depth(raw_node, case):
    check_depth_case(raw_node, *DEPTH_CASES[case])


@pytest.mark.parametrize("depth", [
    np.full((120, 160), 1.0, np.float32),  # 32FC1 metres, same size
    np.full((120, 160), 1000, np.uint16),  # 16UC1 millimetres
    np.full((60, 80), 1.0, np.float32),  # a decimated registered stream: same view, resampled
], ids=["32FC1", "16UC1", "half_size"])
def test_supported_depth_gives_3d(raw_node, depth):
    result = raw_node.publish_rgbd(depth_image(depth))
    assert result is not None
    bottle = next(i for i in result.instances if i.class_name == "bottle")
    assert bottle.has_3d and abs(bottle.centroid.z - 1.0) < 1e-3 and bottle.num_points > 100


def test_stamps_going_backwards_are_reported_and_frames_still_processed(raw_node):
    h = raw_node
    newer = raw_image(GOOD_RGB)
    older = raw_image(GOOD_RGB)
    older.header.stamp.sec = newer.header.stamp.sec - 50
    assert h.player.publish_and_wait(newer, timeout=20) is not None
    assert h.player.publish_and_wait(older, timeout=20) is not None
    assert h.status_with("stamps went backwards") is not None
    assert h.good_frame_processed()


def test_an_empty_frame_id_is_reported_and_the_frame_still_processed(raw_node):
    h = raw_node
    assert h.player.publish_and_wait(raw_image(GOOD_RGB, frame_id=""), timeout=20) is not None
    assert h.status_with("empty frame_id") is not None


@pytest.mark.parametrize("case, info, text", [
    ("all_zero", dict(width=0, height=0), "needs a size and positive focal lengths"),
    ("zero_focal", dict(width=160, height=120, k=[0.0] * 9), "needs a size and positive focal lengths"),
    ("other_size", dict(width=640, height=480, k=[500.0, 0, 320, 0, 500.0, 240, 0, 0, 1]), "camera_info is for 640x480"),
])
def test_bad_camera_info_is_reported_and_frames_still_processed(raw_node, case, info, text):
    h = raw_node
    msg = CameraInfo(**info)
    h.player.info_pub.publish(msg)
    time.sleep(0.2)
    assert h.player.publish_and_wait(raw_image(GOOD_RGB), timeout=20) is not None
    assert h.status_with(text) is not None, h.proc.log_tail()


def set_param(player, node_path, name, value, kind):
    field = {ParameterType.PARAMETER_DOUBLE: "double_value", ParameterType.PARAMETER_STRING: "string_value",
             ParameterType.PARAMETER_INTEGER: "integer_value", ParameterType.PARAMETER_BOOL: "bool_value"}[kind]
    req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(type=kind, **{field: value}))])
    return call(player, SetParameters, f"{node_path}/set_parameters", req).results[0]


def call(player, srv_type, name, request, timeout=15.0):
    client = player.node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f"service {name} did not answer"
        return future.result()
    finally:
        player.node.destroy_client(client)


@pytest.mark.parametrize("name, value, kind, text, reported", [
    # Ranges live in the descriptors (for `ros2 param describe` and rqt sliders), so
    # rclpy itself refuses these, with the parameter, range and value in the reason.
    ("score_threshold", 7.0, "PARAMETER_DOUBLE", "Parameter score_threshold out of range", False),
    ("top_k", -3, "PARAMETER_INTEGER", "Parameter top_k out of range", False),
    # Types and choices are checked by the node, which also reports them in diagnostics.
    ("top_k", "many", "PARAMETER_STRING", "top_k must be int, got str 'many'", True),
    ("backend", "opencl", "PARAMETER_STRING", "backend='opencl' is not one of", True),
])
def test_bad_parameter_updates_are_refused_and_the_node_keeps_working(raw_node, name, value, kind, text, reported):
    h = raw_node  # kind names a ParameterType constant (module-level use would break collection without ROS)
    result = set_param(h.player, f"/{h.namespace}/seg_perception_node", name, value, getattr(ParameterType, kind))
    assert not result.successful and text in result.reason, result.reason
    if reported:
        status = h.status_with(f"refused parameter update: {text}")
        assert status is not None and status.level == WARN
    assert h.good_frame_processed()


def test_a_bad_value_in_the_params_file_is_reported_and_replaced_by_the_default(tmp_path, known_answer_model, ros_domain):
    text = (REPO / "config" / "seg_perception.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("top_k: 200", "top_k: many").replace("score_threshold: 0.3", "score_threshold: 3.5"))
    assert bad.read_text() != text
    h = Harness(tmp_path, known_answer_model, "bad_params_file", params_file=str(bad))
    try:
        h.player.wait_for_node(h.proc)
        status = h.status_with("top_k must be int")
        assert status is not None and status.level == ERROR
        log = h.proc.log_tail()
        assert "top_k must be int, got str 'many'; using the default 200" in log
        assert "Parameter score_threshold out of range" in log and "using the default 0.3" in log
        assert h.good_frame_processed()
    finally:
        h.close()


# ----------------------------------------------------------------------------- bad models


def _garbage_models(tmp_path, good):
    onnx_bytes = good.read_bytes()
    meta = good.with_suffix(".json").read_text()
    cases = {}
    for name, payload, sidecar in [
        ("truncated", onnx_bytes[: len(onnx_bytes) // 2], meta),
        ("corrupt", b"\x00garbage" * 100, meta),
        ("bad_metadata", onnx_bytes, "{not json"),
    ]:
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(payload)
        path.with_suffix(".json").write_text(sidecar)
        cases[name] = path
    cases["missing"] = tmp_path / "missing.onnx"
    return cases


# Seen once in ~20 runs (a full CI suite): no diagnostics and an empty node log within 30 s, the
# node process apparently not yet started; passes on its own every time. Tracked in the closing note.
@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("case", ["missing", "truncated", "corrupt", "bad_metadata"])
def test_a_bad_model_file_is_named_and_a_good_one_can_be_configured_after(tmp_path, known_answer_model, ros_domain, case):
    path = _garbage_models(tmp_path, known_answer_model)[case]
    h = Harness(tmp_path, path, f"model_{case}")
    try:
        status = h.status_with(path.name, timeout=30)
        assert status is not None and status.level == ERROR, h.proc.log_tail()
        assert h.proc.alive()
        node = f"/{h.namespace}/seg_perception_node"
        assert set_param(h.player, node, "model_path", str(known_answer_model), ParameterType.PARAMETER_STRING).successful
        assert call(h.player, GetState, f"{node}/get_state", GetState.Request()).current_state.label == "unconfigured"
        for tid in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert call(h.player, ChangeState, f"{node}/change_state", ChangeState.Request(transition=Transition(id=tid))).success
        h.player.wait_for_subscriber()
        assert h.good_frame_processed()
    finally:
        h.close()


@pytest.mark.skip(reason="needs TensorRT and a GPU: an engine built elsewhere is refused by the TensorRT backend's sidecar check")
def test_an_engine_built_for_another_gpu_is_refused():
    pass


# ----------------------------------------------------------------------------- lifecycle churn and shutdown


def test_fifty_lifecycle_cycles_leave_no_threads_handles_or_memory(tmp_path, known_answer_model, ros_domain):
    h = Harness(tmp_path, known_answer_model, "churn")
    node = f"/{h.namespace}/seg_perception_node"

    def transition(tid):
        assert call(h.player, ChangeState, f"{node}/change_state", ChangeState.Request(transition=Transition(id=tid))).success

    def cycle():
        transition(Transition.TRANSITION_DEACTIVATE)
        transition(Transition.TRANSITION_CLEANUP)
        transition(Transition.TRANSITION_CONFIGURE)
        transition(Transition.TRANSITION_ACTIVATE)

    try:
        h.player.wait_for_node(h.proc)
        for _ in range(5):  # warm-up: allocator pools, DDS entities, ORT arenas
            cycle()
        pid = h.proc.proc.pid
        threads0, fds0 = process_threads_and_fds(pid)
        rss0 = process_rss_bytes(pid)
        for _ in range(50):
            cycle()
        threads1, fds1 = process_threads_and_fds(pid)
        rss1 = process_rss_bytes(pid)
        assert threads1 <= threads0, f"threads {threads0} -> {threads1}"
        assert fds1 <= fds0, f"file descriptors {fds0} -> {fds1}"
        assert rss1 < rss0 * 1.05, f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB"
        h.player.wait_for_subscriber()
        assert h.good_frame_processed()
    finally:
        h.close()


# Once (2026-12-03, the Jazzy leg of a full CI run) SIGINT took 10 s; not seen again in 18
# runs of this test alone on Jazzy. The node is now sent SIGABRT when it hangs, so a local
# failure shows every thread's stack; CI reruns it once rather than going red on it.
@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_shut_the_node_down_within_two_seconds(tmp_path, known_answer_model, ros_domain, sig):
    h = Harness(tmp_path, known_answer_model, f"signal_{sig.name.lower()}")
    try:
        h.player.wait_for_node(h.proc)
        for _ in range(3):
            h.player.publish(raw_image(GOOD_RGB))
        seconds = h.proc.stop(sig)
        assert h.proc.proc.returncode is not None
        # A node that hangs is sent SIGABRT after 10 s: its log then holds every thread's stack.
        assert seconds < 2.0, (f"{sig.name} shutdown took {seconds:.2f} s; node log:\n"
                               + h.proc.log_path.read_text(errors="replace")[-8000:])
    finally:
        h.close()


# ----------------------------------------------------------------------------- graph churn


def test_a_restarted_camera_and_a_late_consumer_are_served(tmp_path, known_answer_model, ros_domain):
    h = Harness(tmp_path, known_answer_model, "graph")
    try:
        h.player.wait_for_node(h.proc)
        assert h.good_frame_processed()
        # The camera process goes away and comes back (a new participant, new publisher).
        h.player.close()
        h.player = CameraAndConsumer(namespace="graph", image_topic="/graph/cam/image", node_name="camera_restarted")
        h.player.wait_for_node(h.proc)
        assert h.good_frame_processed()
        late = CameraAndConsumer(namespace="graph", image_topic="/graph/unused", node_name="late_consumer")
        try:
            assert late.wait_for(lambda r: bool(r.model_info), 10), "late consumer missed the transient-local model_info"
            got = False
            for _ in range(10):  # until discovery has matched the late subscription
                msg = raw_image(GOOD_RGB)
                assert h.player.publish_and_wait(msg, timeout=20) is not None
                if late.wait_for(lambda r: any(m.header.stamp == msg.header.stamp for m in r.instances), 1.0):
                    got = True
                    break
            assert got, "late consumer never received instances"
        finally:
            late.close()
    finally:
        h.close()
