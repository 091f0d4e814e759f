"""`seg-perception regress` over a recording of two cameras (one bag, two image topics):
each camera is replayed with its own tracker and compared on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from support.regress_testlib import FRONT, LEFT, run_regress, two_camera_bag

pytest.importorskip("onnxruntime")

FRONT_KEY, LEFT_KEY = "two_cameras__front_color_image_raw", "two_cameras__left_color_image_raw"


@pytest.fixture(scope="module")
def golden(tmp_path_factory, known_answer_model, hsr_bag):
    from seg_perception.tools.regress import main

    root = tmp_path_factory.mktemp("two_cameras")
    bag = two_camera_bag(root / "two_cameras")
    code = main([str(bag), "--topic", "all", "--golden", str(root / "golden"), "--model", str(known_answer_model),
                 "--backend", "onnxruntime", "--update-golden", "--out", str(root / "out"), "--no-progress"])
    assert code == 0
    return bag, root / "golden"


def test_each_camera_of_a_recording_is_its_own_source_with_its_own_results(golden):
    from seg_perception.regression.golden import load_run

    _, golden_dir = golden
    manifest = json.loads((golden_dir / "manifest.json").read_text())
    assert [(b["key"], b["topic"], b["frames"], b.get("camera")) for b in manifest["bags"]] == [
        (FRONT_KEY, FRONT, 5, FRONT), (LEFT_KEY, LEFT, 5, LEFT)]
    frames = load_run(golden_dir).frames
    for front, left in zip(frames[FRONT_KEY], frames[LEFT_KEY]):
        assert front.class_names == left.class_names == ["bottle", "person"]
        # The person box follows the brightest cell: mirrored image, mirrored box.
        fx0, _, fx1, _ = front.detections.boxes[1]
        lx0, _, lx1, _ = left.detections.boxes[1]
        assert (lx0, lx1) == (640 - fx1, 640 - fx0)


def test_the_same_recording_matches_and_a_change_on_one_camera_is_reported_on_that_camera_only(
        golden, known_answer_model, tmp_path, capsys):
    bag, golden_dir = golden
    code, stdout, _ = run_regress(capsys, bag, "--topic", "all", "--golden", golden_dir, "--model",
                                  known_answer_model, "--backend", "onnxruntime", "--out", tmp_path / "same")
    assert code == 0, stdout
    assert "MATCH: 20 instances in 10 frames agree with the golden run" in stdout
    # The left camera now sees the scene upside down; the front camera is unchanged.
    changed = two_camera_bag(tmp_path / "two_cameras", left_image=lambda rgb: rgb[::-1, ::-1])
    code, stdout, _ = run_regress(capsys, changed, "--topic", "all", "--golden", golden_dir, "--model",
                                  known_answer_model, "--backend", "onnxruntime", "--out", tmp_path / "changed")
    assert code == 1, stdout
    report = json.loads((tmp_path / "changed" / "report.json").read_text())
    diffs = report["comparison"]["differences"]
    assert diffs and {d["bag"] for d in diffs} == {LEFT_KEY}
    by_bag = {b["bag"]: b for b in report["comparison"]["bags"]}
    assert by_bag[FRONT_KEY]["matched"] == 10 and by_bag[FRONT_KEY]["lost"] == by_bag[FRONT_KEY]["added"] == 0


def test_a_named_list_of_camera_topics_is_taken_in_the_given_order(golden):
    from seg_perception.regression.sources import inspect_bags

    bag, _ = golden
    sources = inspect_bags([bag], f"{LEFT},{FRONT}")
    assert [(s.key, s.topic, s.camera) for s in sources] == [(LEFT_KEY, LEFT, LEFT), (FRONT_KEY, FRONT, FRONT)]
    # One topic of the two: a single-camera source, as before.
    (single,) = inspect_bags([bag], FRONT)
    assert (single.key, single.camera) == ("two_cameras", "")
