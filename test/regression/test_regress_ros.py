"""`seg-perception regress --through-ros`: the real node in its own process, fed over DDS,
gives what the offline run gives, message for message."""

from __future__ import annotations

import json

import pytest

from conftest import HSR_MCAP, HSR_SQLITE
from support.regress_testlib import (  # noqa: F401 - hsr_golden is a fixture
    compressed_msg, hsr_golden, hsr_rgb_frames, message_fields, read_bag_messages, run_regress, write_bag,
)

pytestmark = pytest.mark.ros
pytest.importorskip("onnxruntime")


def test_lockstep_replay_through_the_node_matches_the_offline_golden_run(hsr_golden, known_answer_model, ros_domain,
                                                                          tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_regress(capsys, HSR_MCAP, HSR_SQLITE, "--through-ros", "--golden", hsr_golden,
                                    "--model", known_answer_model, "--out", out)
    assert code == 0, stdout + err + (out / "node.log").read_text()
    assert "MATCH: 20 instances in 10 frames agree with the golden run" in stdout
    assert "golden run made offline, this run through_ros" in stdout
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert manifest["mode"] == "through_ros" and manifest["model"]["sha256"]
    for bag in ("hsr_people_mcap", "hsr_people_sqlite3"):
        # Same records byte for byte, and the same messages field for field (the CDR bytes differ
        # only in padding, which rclpy leaves uninitialised).
        assert (out / "run" / "frames" / f"{bag}.jsonl").read_bytes() == (hsr_golden / "frames" / f"{bag}.jsonl").read_bytes()
        node_msgs = read_bag_messages(out / "run" / "outputs" / bag)
        offline_msgs = read_bag_messages(hsr_golden / "outputs" / bag)
        assert [(t, ts) for t, ts, _ in node_msgs] == [(t, ts) for t, ts, _ in offline_msgs]
        for (topic, _, a), (_, _, b) in zip(node_msgs, offline_msgs):
            fa, fb = message_fields(a), message_fields(b)
            if topic.endswith("model_info"):  # the node stamps model_info with its own clock
                fa.pop("header"), fb.pop("header")
            assert fa == fb, topic
    # The node's output bag (rclpy's CDR, as `ros2 bag record` stores it) read back as a recorded run.
    code, stdout, err = run_regress(capsys, HSR_SQLITE, "--recorded", out / "run" / "outputs" / "hsr_people_sqlite3",
                                    "--golden", hsr_golden, "--out", tmp_path / "recorded")
    assert code == 0, stdout + err
    assert "MATCH: 10 instances in 5 frames" in stdout


def test_timed_replay_with_sim_time_keeps_the_bag_timing_and_matches(hsr_golden, known_answer_model, ros_domain,
                                                                    tmp_path, capsys):
    out = tmp_path / "out"
    # The recording spans 57 s (five snapshots); at 20x it takes about 2.8 s.
    code, stdout, err = run_regress(capsys, HSR_MCAP, "--through-ros", "--rate", "20", "--use-sim-time",
                                    "--golden", hsr_golden, "--model", known_answer_model, "--out", out)
    assert code == 0, stdout + err + (out / "node.log").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["comparison"]["totals"]["matched"] == 10 and report["comparison"]["totals"]["frames_dropped"] == 0
    assert report["timing"]["seconds"] > 57.0 / 20
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert (manifest["rate"], manifest["use_sim_time"]) == (20.0, True)
    assert manifest["params"]["score_threshold"] == 0.3


def test_compressed_frames_reach_the_node_on_its_compressed_topic(hsr_golden, known_answer_model, ros_domain,
                                                                  tmp_path, capsys):
    # PNG is lossless: the node's outputs equal the raw recording's golden run (same recording key).
    bag = write_bag(tmp_path / "hsr_people_mcap", [("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", t,
                                                    compressed_msg(m, "png")) for t, m in hsr_rgb_frames()])
    out = tmp_path / "out"
    code, stdout, err = run_regress(capsys, bag, "--through-ros", "--golden", hsr_golden,
                                    "--model", known_answer_model, "--out", out, "--timeout", "10")
    assert code == 0, stdout + err + (out / "node.log").read_text()
    assert "MATCH: 10 instances in 5 frames" in stdout
    assert "/camera/image/compressed" in (out / "node.log").read_text()


def test_sim_time_reaches_the_node_through_its_private_clock_topic(known_answer_model, ros_domain, tmp_path):
    """The node started with use_sim_time follows the clock the player publishes (its /clock is remapped)."""
    from pathlib import Path

    from diagnostic_msgs.msg import DiagnosticArray

    from conftest import REPO
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

    spec = node_launch_spec({"namespace": "simtime", "image": "camera/image", "model_path": str(known_answer_model),
                             "params_file": str(REPO / "config" / "seg_perception.yaml")}, Path(REPO))
    spec.overrides["use_sim_time"] = True
    spec.remappings.append(("/clock", "/simtime/clock"))
    node = NodeProcess(spec, tmp_path / "node.log")
    player = CameraAndConsumer(namespace="simtime", image_topic="camera/image", clock_topic="/simtime/clock")
    got: list = []
    player.node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    try:
        player.wait_for_node(node)
        start = 12345_000_000_000  # the node's diagnostics carry its clock: they must show this time
        for i in range(40):
            player.publish_clock(start + i * 100_000_000)
            if any(12345 <= m.header.stamp.sec <= 12349 for m in got):
                break
            player.wait_for(lambda r: False, 0.1)
        assert any(12345 <= m.header.stamp.sec <= 12349 for m in got), [m.header.stamp.sec for m in got]
    finally:
        player.close()
        node.stop()
