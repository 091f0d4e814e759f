"""`seg-perception demo` end to end: node process, real recording, output bag and PNGs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import HSR_MCAP, REPO, ros_available

pytestmark = pytest.mark.ros


def test_demo_writes_a_readable_output_bag_and_one_overlay_per_frame(tmp_path, hsr_bag, known_answer_model, ros_domain):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "seg_perception.tools.demo", "--bag", str(HSR_MCAP), "--model", str(known_answer_model),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "ROS_DOMAIN_ID": ros_domain})
    assert proc.returncode == 0, proc.stdout + proc.stderr
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
