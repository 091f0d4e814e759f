"""Bad input to `seg-perception regress`: a clear error naming file, topic and frame, exit
status 2, and the golden run left exactly as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import HSR_MCAP, HSR_SQLITE
from support.regress_testlib import hsr_golden, image_msg, run_regress, siblings, tree_digest, write_bag  # noqa: F401

pytest.importorskip("onnxruntime")


@pytest.fixture
def golden_copy(hsr_golden, tmp_path) -> tuple[Path, dict[str, str]]:
    """A golden run each test may try (and must fail) to overwrite, with its file digests."""
    golden = tmp_path / "g" / "golden"  # alone in its directory: leftovers beside it would show
    shutil.copytree(hsr_golden, golden)
    return golden, tree_digest(golden)


def regress_fails(capsys, golden_copy, known_answer_model, tmp_path, *bags_and_options) -> str:
    """Run with --update-golden; assert exit 2, an untouched golden run and an error report; return stderr."""
    golden, digest = golden_copy
    out = tmp_path / "out"
    code, stdout, stderr = run_regress(capsys, *bags_and_options, "--golden", golden, "--model", known_answer_model,
                                       "--out", out, "--update-golden")
    assert code == 2, stdout + stderr
    assert tree_digest(golden) == digest and siblings(golden) == ["golden"]
    assert f"the golden run {golden} was not changed" in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "error" and report["exit_code"] == 2 and report["error"]
    return stderr


def small_frames(n: int = 3) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(1_000_000_000 * (i + 1) + 100, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for i in range(n)]


def test_a_missing_bag_is_named(capsys, golden_copy, known_answer_model, tmp_path):
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, tmp_path / "nowhere")
    assert f"error: bag not found: {tmp_path / 'nowhere'}" in err


def test_an_unreadable_bag_is_named(capsys, golden_copy, known_answer_model, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag\n")
    (junk / "junk_0.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, junk)
    assert f"cannot read bag {junk}" in err


@pytest.mark.parametrize("source", [HSR_MCAP, HSR_SQLITE], ids=["mcap", "sqlite3"])
def test_a_truncated_bag_is_named(capsys, golden_copy, known_answer_model, tmp_path, source, hsr_bag):
    broken = tmp_path / source.name  # the golden run's own key: a partial run would replace its frames
    broken.mkdir()
    data = next(p for p in source.iterdir() if p.suffix in (".mcap", ".db3"))
    (broken / data.name).write_bytes(data.read_bytes()[: data.stat().st_size * 2 // 3])
    shutil.copy(source / "metadata.yaml", broken / "metadata.yaml")
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, broken)
    assert f"cannot read bag {broken}" in err


def test_a_recording_that_ends_before_its_index_says_names_topic_and_frame(capsys, golden_copy, known_answer_model,
                                                                            tmp_path, hsr_bag):
    import sqlite3

    short = tmp_path / "hsr_people_sqlite3"
    shutil.copytree(HSR_SQLITE, short)
    for p in short.iterdir():
        p.chmod(0o644)
    with sqlite3.connect(short / "hsr_people_sqlite3.db3") as db:  # the last two colour frames are gone
        db.execute("DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m JOIN topics t ON m.topic_id = t.id "
                   "WHERE t.name LIKE '%rgb/image_raw' ORDER BY m.timestamp DESC LIMIT 2)")
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, short)
    assert (f"bag {short}, topic /hero/head_rgbd_sensor/rgb/image_raw: the recording ended after 3 of the 5 "
            "frames its index lists") in err


def test_a_message_that_cannot_be_deserialised_names_topic_and_frame(capsys, golden_copy, known_answer_model,
                                                                      tmp_path):
    from seg_perception.bags import typestore

    frames = small_frames()
    cdr = [typestore().serialize_cdr(image_msg(rgb, t), "sensor_msgs/msg/Image") for t, rgb in frames]
    bag = tmp_path / "garbled"
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=typestore())
        for i, ((t, _), raw) in enumerate(zip(frames, cdr)):
            w.write(conn, t, raw if i != 1 else raw[:30])  # frame 1 cut short inside its header
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, bag)
    assert "topic /cam/image, message 1: cannot deserialise" in err
    assert f"(bag {bag}, topic /cam/image, reading frame 1 of 3; frames 0..0 were read)" in err


def test_a_missing_topic_is_named_with_the_topics_there_are(capsys, golden_copy, known_answer_model, tmp_path, hsr_bag):
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, HSR_MCAP, "--topic", "/nope")
    assert f"{HSR_MCAP}: no image topic '/nope'; topics:" in err and "/hero/head_rgbd_sensor/rgb/image_raw" in err


def test_a_topic_of_an_unknown_message_type_is_named(capsys, golden_copy, known_answer_model, tmp_path):
    from rosbags.typesys import get_types_from_msg

    blob_types = get_types_from_msg("uint8[] payload\nstring note", "acme_msgs/msg/Blob")
    blob = None
    from seg_perception.bags import typestore

    store = typestore()
    store.register(blob_types)
    blob = store.types["acme_msgs/msg/Blob"](payload=np.zeros(3, np.uint8), note="x")
    bag = write_bag(tmp_path / "blobs", [("/cam/blob", "acme_msgs/msg/Blob", 5, blob)], extra_types=blob_types)
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, bag, "--topic", "/cam/blob")
    assert (f"{bag}: topic /cam/blob has message type acme_msgs/msg/Blob, which regress cannot replay "
            "(it reads sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage)") in err
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, bag)  # and when searching for one
    assert f"{bag}: no sensor_msgs Image or CompressedImage topic" in err


@pytest.mark.parametrize("through_ros", [False, True], ids=["offline", "through_ros"])
def test_a_frame_that_fails_to_decode_is_named_by_bag_topic_and_frame(capsys, golden_copy, known_answer_model,
                                                                      tmp_path, through_ros, request):
    frames = small_frames()
    msgs = [image_msg(rgb, t, data=bytes(1000) if i == 2 else None) for i, (t, rgb) in enumerate(frames)]
    bag = write_bag(tmp_path / "hsr_people_mcap", [("/cam/image", "sensor_msgs/msg/Image", t, m)
                                                   for (t, _), m in zip(frames, msgs)])
    if through_ros:
        request.getfixturevalue("ros_domain")
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, bag,
                        *(["--through-ros"] if through_ros else []))
    assert f"bag {bag}, topic /cam/image, frame 2 (stamp 3.000000100): cannot decode the image:" in err
    assert "1000" in err  # the decoder's reason: the buffer is too short


def test_comparing_without_a_golden_run_or_with_a_recording_it_lacks_is_an_error(capsys, hsr_golden,
                                                                                  known_answer_model, tmp_path):
    code, _, err = run_regress(capsys, HSR_MCAP, "--golden", tmp_path / "none", "--model", known_answer_model,
                               "--out", tmp_path / "o")
    assert code == 2 and f"no golden run at {tmp_path / 'none'}; create one with --update-golden" in err
    bag = write_bag(tmp_path / "other", [("/cam/image", "sensor_msgs/msg/Image", t, image_msg(rgb, t))
                                         for t, rgb in small_frames(1)])
    code, _, err = run_regress(capsys, bag, "--golden", hsr_golden, "--model", known_answer_model,
                               "--out", tmp_path / "o")
    assert code == 2 and "has no recording other (it has: hsr_people_mcap, hsr_people_sqlite3)" in err


def test_bad_parameters_and_a_missing_model_are_errors(capsys, golden_copy, known_answer_model, tmp_path, hsr_bag):
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, HSR_MCAP, "-p", "score_threshold=1.5")
    assert "parameters: score_threshold=1.5 is above the maximum 1.0" in err
    golden, digest = golden_copy
    code, _, err = run_regress(capsys, HSR_MCAP, "--golden", golden, "--model", tmp_path / "missing.onnx",
                               "--backend", "onnxruntime", "--out", tmp_path / "o2", "--update-golden")
    assert code == 2 and f"ONNX model not found: {tmp_path / 'missing.onnx'}" in err
    assert tree_digest(golden) == digest


def test_a_recorded_output_bag_without_the_nodes_instances_is_named(capsys, golden_copy, known_answer_model,
                                                                      tmp_path, hsr_bag):
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, HSR_MCAP, "--recorded", HSR_SQLITE)
    assert f"{HSR_SQLITE}: no seg_perception/msg/InstanceArray topic (record the node's 'instances')" in err
    err = regress_fails(capsys, golden_copy, known_answer_model, tmp_path, HSR_MCAP, HSR_SQLITE,
                        "--recorded", HSR_SQLITE)
    assert "--recorded needs one output bag per recording: 2 recordings, 1 output bags" in err
