"""Synthetic rosbag2 recordings read back with rosbags like a camera driver's bag."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from seg_perception.synth import generate_sequence, write_recording
from seg_perception.synth.cli import main_generate_recording
from seg_perception.synth.recording import COLOR_INFO_TOPIC, COLOR_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC

W, H, N, FPS, SEED = 96, 72, 5, 10.0, 4


@pytest.fixture(scope="module")
def frames():
    return list(generate_sequence(SEED, N, FPS, W, H))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_reads_back_with_topics_counts_encodings_and_stamps(storage, frames, tmp_path):
    bag = tmp_path / f"rec_{storage}"
    gt_path = write_recording(bag, SEED, N, FPS, W, H, storage=storage)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    with AnyReader([bag], default_typestore=typestore) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {COLOR_TOPIC: "sensor_msgs/msg/Image", DEPTH_TOPIC: "sensor_msgs/msg/Image",
                          COLOR_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
                          DEPTH_INFO_TOPIC: "sensor_msgs/msg/CameraInfo"}
        seen: dict[str, list] = {t: [] for t in topics}
        for conn, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
            assert msg.header.frame_id == "camera_color_optical_frame"
            seen[conn.topic].append((stamp, msg))
    for topic, msgs in seen.items():
        assert len(msgs) == N, topic
        stamps = [s for s, _ in msgs]
        assert np.all(np.diff(stamps) == int(1e9 / FPS))
        assert stamps == [f.stamp_ns for f in frames]
    for (_, img), (_, dep), (_, info), f in zip(seen[COLOR_TOPIC], seen[DEPTH_TOPIC], seen[COLOR_INFO_TOPIC], frames):
        assert (img.encoding, img.height, img.width, img.step, img.is_bigendian) == ("rgb8", H, W, 3 * W, 0)
        assert np.array_equal(np.asarray(img.data).reshape(H, W, 3), f.rgb)
        assert (dep.encoding, dep.step) == ("32FC1", 4 * W)
        depth = np.frombuffer(np.asarray(dep.data).tobytes(), dtype="<f4").reshape(H, W)
        assert np.array_equal(depth, f.depth, equal_nan=True)
        assert info.distortion_model == "plumb_bob" and np.all(np.asarray(info.d) == 0)
        assert np.allclose(np.asarray(info.k).reshape(3, 3), f.camera.K)
        assert np.allclose(np.asarray(info.p).reshape(3, 4)[:, :3], f.camera.K)
    gt = json.loads(gt_path.read_text())
    assert [im["frame_index"] for im in gt["images"]] == list(range(N))
    assert [im["stamp_ns"] for im in gt["images"]] == [f.stamp_ns for f in frames]
    assert sum(len(f.instances) for f in frames) == len(gt["annotations"])
    assert all("track_id" in a and len(a["centroid_3d"]) == 3 for a in gt["annotations"])


def test_existing_bag_is_never_overwritten(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError):
        write_recording(tmp_path / "bag", 0, 1, 10.0, 32, 24)


def test_recording_cli(tmp_path):
    rc = main_generate_recording([str(tmp_path / "cli_bag"), "-n", "2", "--fps", "5", "--width", "64",
                                  "--height", "48", "--storage", "sqlite3", "--quiet"])
    assert rc == 0
    assert (tmp_path / "cli_bag" / "metadata.yaml").exists()
    assert (tmp_path / "cli_bag" / "ground_truth.json").exists()
    assert main_generate_recording([str(tmp_path / "cli_bag"), "-n", "1", "--quiet"]) == 2
