"""`seg-perception demo` end to end: node process, real recording, output bag and PNGs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import HSR_MCAP, REPO, ros_available

pytestmark = pytest.mark.ros


def _run_demo(bag, model, out, ros_domain: str, *extra: str) -> subprocess.CompletedProcess:
    """``seg-perception demo`` in its own process, as a user runs it; it must succeed."""
    proc = subprocess.run(
        [sys.executable, "-m", "seg_perception.tools.demo", "--bag", str(bag), "--model", str(model), "--out", str(out),
         *extra],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "ROS_DOMAIN_ID": ros_domain})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_demo_writes_a_readable_output_bag_and_one_overlay_per_frame(tmp_path, hsr_bag, known_answer_model, ros_domain):
    out = tmp_path / "demo"
    proc = _run_demo(HSR_MCAP, known_answer_model, out, ros_domain)
    assert "processed 5 of 5 frames; mean latency" in proc.stdout
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]

    from rosbags.highlevel import AnyReader

    from seg_perception.bags import typestore
    from seg_perception.core.masks import decode_mask

    with AnyReader([out / "outputs"], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {"/seg_perception/instances": 5, "/seg_perception/keypoints": 5,
                          "/seg_perception/debug/markers": 5}
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            for inst in getattr(msg, "instances", []):
                m = inst.mask
                data = decode_mask(m.encoding, m.width, m.height, m.counts if m.encoding == "coco_rle" else m.data)
                assert data.any() and m.x_offset + m.width <= 640 and m.y_offset + m.height <= 480


def test_demo_names_a_missing_bag_and_fails(tmp_path, ros_domain):
    proc = subprocess.run([sys.executable, "-m", "seg_perception.tools.demo", "--bag", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bag not found" in proc.stdout


def test_demo_on_an_rgbd_recording_records_3d_boxes_and_keeps_track_ids(tmp_path, known_answer_model, ros_domain):
    """Issue 8's demo: depth gives 3D boxes in the markers, the tracker stable ids (the
    known-answer model's fixed 'bottle' is the same object in every frame)."""
    from seg_perception.synth.recording import write_recording

    bag = tmp_path / "rgbd"
    write_recording(bag, seed=3, n_frames=6, fps=15.0, width=640, height=480)
    out = tmp_path / "demo"
    proc = _run_demo(bag, known_answer_model, out, ros_domain)
    assert "processed 6 of 6 frames" in proc.stdout and " with depth" in proc.stdout
    assert len(list((out / "overlays").iterdir())) == 6

    from rosbags.highlevel import AnyReader

    from seg_perception.bags import typestore

    bottle_ids, cubes = [], 0
    with AnyReader([out / "outputs"], default_typestore=typestore()) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/seg_perception/instances":
                bottle = next(i for i in msg.instances if i.class_name == "bottle")
                assert bottle.has_3d and 0.2 < bottle.centroid.z < 5.0
                bottle_ids.append(bottle.id)
            elif conn.topic == "/seg_perception/debug/markers":
                cubes += sum(m.ns == "boxes_3d" and m.type == 1 for m in msg.markers)  # 1: CUBE
    assert len(bottle_ids) == 6 and bottle_ids[0] > 0 and len(set(bottle_ids)) == 1, bottle_ids
    assert cubes >= 6  # one 3D box per frame for the bottle at least
    assert "tracking:   " in proc.stdout


def test_demo_runs_a_two_camera_recording_through_one_node(tmp_path, hsr_bag, known_answer_model, ros_domain):
    """``--topic all``: one node with ``cameras: [front, left]``, each camera's outputs
    recorded under its own name and drawn from its own images (left is mirrored)."""
    from rosbags.highlevel import AnyReader

    from seg_perception.bags import typestore
    from support.regress_testlib import two_camera_bag

    bag = two_camera_bag(tmp_path / "two_cameras")
    out = tmp_path / "demo"
    proc = _run_demo(bag, known_answer_model, out, ros_domain, "--topic", "all")
    assert "cameras ['front', 'left']" in proc.stdout
    for camera in ("front", "left"):
        assert f"[{camera}] processed 5 of 5 frames" in proc.stdout
        assert len(list((out / "overlays" / camera).glob("frame_*.png"))) == 5
    boxes: dict[str, list] = {"front": [], "left": []}
    with AnyReader([out / "outputs"], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {f"/seg_perception/{c}/{t}": 5 for c in ("front", "left")
                          for t in ("instances", "keypoints", "debug/markers")}
        for conn, _, raw in reader.messages():
            if conn.topic.endswith("/instances"):
                msg = reader.deserialize(raw, conn.msgtype)
                camera = conn.topic.split("/")[2]
                assert msg.header.frame_id == camera
                person = next(i for i in msg.instances if i.class_name == "person")
                boxes[camera].append((person.bbox.center_x, person.bbox.size_x))
    # The known-answer model's person box follows the brightest cell: mirrored image, mirrored box.
    assert len(boxes["front"]) == len(boxes["left"]) == 5
    for (fc, fw), (lc, lw) in zip(boxes["front"], boxes["left"]):
        assert lw == fw and lc == 640 - fc
