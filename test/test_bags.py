"""Reading recordings (both storage formats) and writing output bags with our types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import HSR_IMAGE_TOPIC, HSR_MCAP, HSR_SQLITE
from seg_perception.bags import BagError, OutputBag, read_camera_infos, read_images, typestore


@pytest.mark.parametrize("bag", [HSR_MCAP, HSR_SQLITE], ids=["mcap", "sqlite3"])
def test_both_storage_formats_give_the_same_frames(bag, hsr_bag):
    frames = list(read_images(bag))
    assert [f.topic for f in frames] == [HSR_IMAGE_TOPIC] * 5  # depth topic is not chosen automatically
    assert all(f.msg.encoding == "rgb8" and (f.msg.width, f.msg.height) == (640, 480) for f in frames)
    stamps = [f.timestamp_ns for f in frames]
    assert stamps == sorted(stamps)
    other = list(read_images(HSR_SQLITE if bag == HSR_MCAP else HSR_MCAP))
    assert all(np.array_equal(a.msg.data, b.msg.data) for a, b in zip(frames, other))


def test_missing_bag_and_missing_topic_are_named(tmp_path, hsr_bag):
    with pytest.raises(BagError, match="bag not found: .*nowhere"):
        list(read_images(tmp_path / "nowhere"))
    with pytest.raises(BagError, match="no image topic '/nope'.*image_raw"):
        list(read_images(hsr_bag, "/nope"))


def test_a_truncated_bag_gives_a_bag_error(tmp_path, hsr_bag):
    src = next(Path(hsr_bag).glob("*.mcap"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / src.name).write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    (broken / "metadata.yaml").write_text((Path(hsr_bag) / "metadata.yaml").read_text())
    with pytest.raises(BagError, match="broken"):
        list(read_images(broken))


def test_camera_info_is_read(hsr_bag):
    infos = read_camera_infos(hsr_bag)
    k = infos["/hero/head_rgbd_sensor/rgb/camera_info"].k
    assert 500 < k[0] < 600


def test_output_bag_round_trips_our_message_types(tmp_path):
    from rosbags.highlevel import AnyReader

    store = typestore()
    msg_cls = store.types["seg_perception/msg/InstanceArray"]
    assert "instances" in msg_cls.__dataclass_fields__
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    empty = msg_cls(header=Header(stamp=Time(sec=5, nanosec=7), frame_id="cam"), image_width=640, image_height=480,
                    instances=[])
    cdr = store.serialize_cdr(empty, "seg_perception/msg/InstanceArray")
    with OutputBag(tmp_path / "out") as bag:
        bag.write("/instances", "seg_perception/msg/InstanceArray", 5_000_000_007, cdr)
    with pytest.raises(BagError, match="already exists"):
        OutputBag(tmp_path / "out")
    with AnyReader([tmp_path / "out"], default_typestore=typestore()) as reader:
        (conn, t, raw), = list(reader.messages())
        back = reader.deserialize(raw, conn.msgtype)
    assert (t, back.header.frame_id, back.image_width) == (5_000_000_007, "cam", 640)


def test_each_colour_frame_is_paired_with_its_depth_and_camera_info(hsr_bag):
    from rosbags.typesys import Stores, get_typestore

    from seg_perception.bags import read_companions

    frames = list(read_images(hsr_bag))
    pairs = read_companions(hsr_bag, frames)
    store = get_typestore(Stores.ROS2_KILTED)
    assert len(pairs) == 5 and all(p.depth and p.camera_info for p in pairs)
    for frame, pair in zip(frames, pairs):
        depth = store.deserialize_cdr(pair.depth, "sensor_msgs/msg/Image")
        info = store.deserialize_cdr(pair.camera_info, "sensor_msgs/msg/CameraInfo")
        assert depth.encoding == "32FC1" and (depth.width, depth.height) == (640, 480)
        assert abs((depth.header.stamp.sec - frame.msg.header.stamp.sec)) <= 1
        assert info.header.frame_id and info.k[0] > 500


def test_each_camera_of_a_multi_camera_recording_gets_its_own_depth_and_camera_info(tmp_path):
    """Two cameras, each with camera_info and depth: a colour topic pairs with the topics
    sharing most of its name, never with the other camera's."""
    from seg_perception.bags import read_companions
    from support.regress_testlib import image_msg, write_bag

    t = typestore().types
    messages = []
    for camera, fx, metres in (("front", 500.0, 1.0), ("left", 600.0, 2.0)):
        for k in range(3):
            stamp = 1_000_000_000 * (k + 1)
            header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=k + 1, nanosec=0),
                                              frame_id=camera)
            rgb = np.full((4, 6, 3), k, np.uint8)
            info = t["sensor_msgs/msg/CameraInfo"](
                header=header, height=4, width=6, distortion_model="plumb_bob", d=np.zeros(5),
                k=np.array([fx, 0, 3, 0, fx, 2, 0, 0, 1.0]), r=np.eye(3).ravel(), p=np.zeros(12),
                binning_x=0, binning_y=0, roi=t["sensor_msgs/msg/RegionOfInterest"](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            depth = t["sensor_msgs/msg/Image"](header=header, height=4, width=6, encoding="32FC1", is_bigendian=0,
                                               step=24, data=np.full((4, 6), metres, np.float32).view(np.uint8).ravel())
            messages += [(f"/{camera}/color/image_raw", "sensor_msgs/msg/Image", stamp, image_msg(rgb, stamp, camera)),
                         (f"/{camera}/color/camera_info", "sensor_msgs/msg/CameraInfo", stamp, info),
                         (f"/{camera}/depth/image_raw", "sensor_msgs/msg/Image", stamp, depth),
                         (f"/{camera}/depth/camera_info", "sensor_msgs/msg/CameraInfo", stamp, info)]
    bag = write_bag(tmp_path / "two_rgbd", messages)
    store = typestore()
    for camera, fx, metres in (("front", 500.0, 1.0), ("left", 600.0, 2.0)):
        frames = list(read_images(bag, f"/{camera}/color/image_raw"))
        pairs = read_companions(bag, frames)
        assert len(pairs) == 3
        for pair in pairs:
            info = store.deserialize_cdr(pair.camera_info, "sensor_msgs/msg/CameraInfo")
            depth = store.deserialize_cdr(pair.depth, "sensor_msgs/msg/Image")
            depth_info = store.deserialize_cdr(pair.depth_camera_info, "sensor_msgs/msg/CameraInfo")
            assert info.k[0] == depth_info.k[0] == fx and info.header.frame_id == camera
            assert np.frombuffer(bytes(depth.data), np.float32).tolist() == [metres] * 24
