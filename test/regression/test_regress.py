"""`seg-perception regress` offline: the known-answer model over the real recording (both
storage formats, raw and compressed images), golden runs, determinism, regressions, COCO AP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import HSR_IMAGE_TOPIC, HSR_MCAP, HSR_SQLITE, REPO
from support.regress_testlib import (  # noqa: F401 - hsr_golden is a fixture
    HSR_STAMPS_NS, compressed_msg, hsr_golden, hsr_rgb_frames, read_bag_messages, run_regress, siblings,
    write_bag,
)

pytest.importorskip("onnxruntime")

# The golden-set test: the shipped model (written by the training work) over a committed
# synthetic recording (test/data/synthetic_recording, see its SOURCE.md), compared with the
# committed golden run. The recording is committed rather than rendered at test time, so a
# new OpenCV or NumPy cannot change the input; `dev/regenerate_golden.sh` replays the same one.
SHIPPED_MODEL = REPO / "models" / "seg_perception_default.onnx"
SHIPPED_GOLDEN = REPO / "test" / "golden" / "seg_perception_default"
GOLDEN_RECORDING = REPO / "test" / "data" / "synthetic_recording"


def frames_of(run_dir: Path, bag: str) -> list:
    from seg_perception.regression.golden import load_run

    return load_run(run_dir).frames[bag]


def test_golden_run_records_the_known_answers_for_both_storage_formats(hsr_golden):
    from seg_perception.core.preprocess import resize_for_network
    from seg_perception.models.known_answer import brightest_cell_box, expected_outputs

    manifest = json.loads((hsr_golden / "manifest.json").read_text())
    assert manifest["mode"] == "offline" and manifest["model"]["name"] == "known_answer"
    assert len(manifest["model"]["sha256"]) == 64 and manifest["backend"]["backend"] == "onnxruntime"
    assert manifest["params"]["score_threshold"] == 0.3
    assert [(b["key"], b["storage"], b["topic"], b["frames"]) for b in manifest["bags"]] == [
        ("hsr_people_mcap", "mcap", HSR_IMAGE_TOPIC, 5), ("hsr_people_sqlite3", "sqlite3", HSR_IMAGE_TOPIC, 5)]
    rgb_frames = hsr_rgb_frames()
    for bag in ("hsr_people_mcap", "hsr_people_sqlite3"):
        frames = frames_of(hsr_golden, bag)
        assert [f.stamp_ns for f in frames] == HSR_STAMPS_NS
        for f, (bag_ns, msg) in zip(frames, rgb_frames):
            assert (f.width, f.height, f.bag_time_ns) == (640, 480, bag_ns)
            assert f.class_names == ["bottle", "person"]
            d = f.detections
            np.testing.assert_array_equal(d.boxes[0], [320, 120, 560, 360])
            assert d.scores[0] == np.float32(0.9)
            small = resize_for_network(np.asarray(msg.data, np.uint8).reshape(480, 640, 3), 160, 120)
            np.testing.assert_array_equal(d.boxes[1], brightest_cell_box(small[0]) * [640, 480, 640, 480])
            # The graph's float arithmetic may differ from the NumPy reference in the last place.
            np.testing.assert_allclose(d.scores[1], expected_outputs(small)["scores"][0, 0, 0], atol=1e-6)
            # The person's mask fills its 160 x 120 box; the official YOLACT crop (one
            # prototype pixel of padding) lets the mask's region reach a little beyond it.
            m, (x1, y1, x2, y2) = d.masks[1], d.boxes[1].astype(int)
            assert (x2 - x1, y2 - y1) == (160, 120)
            assert m.to_full(480, 640)[y1:y2, x1:x2].all()
            np.testing.assert_array_equal(d.keypoints[0, :, 2], [1, 1, 1, 1, 0])


def test_output_bags_hold_the_nodes_messages_with_our_types(hsr_golden):
    from seg_perception.core.masks import decode_mask

    msgs = read_bag_messages(hsr_golden / "outputs" / "hsr_people_sqlite3")
    topics = [t for t, _, _ in msgs]
    assert topics.count("/seg_perception/instances") == 5 and topics.count("/seg_perception/keypoints") == 5
    assert topics[0] == "/seg_perception/model_info"
    info = msgs[0][2]
    assert list(info.class_names) == ["person", "bottle", "cup"] and info.backend == "onnxruntime"
    instances = [m for t, _, m in msgs if t == "/seg_perception/instances"]
    assert [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in instances] == HSR_STAMPS_NS
    bottle = instances[0].instances[0]
    assert bottle.class_name == "bottle" and bottle.mask.encoding == "coco_rle"
    mask = decode_mask("coco_rle", bottle.mask.width, bottle.mask.height, bottle.mask.counts)
    assert mask.any() and (bottle.bbox.center_x, bottle.bbox.size_x) == (440.0, 240.0)


def test_a_second_cpu_run_gives_identical_outputs_and_matches(hsr_golden, known_answer_model, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_regress(capsys, HSR_MCAP, HSR_SQLITE, "--golden", hsr_golden, "--model", known_answer_model,
                                  "--backend", "onnxruntime", "--out", out)
    assert code == 0, stdout
    assert "MATCH: 20 instances in 10 frames agree with the golden run" in stdout
    for bag in ("hsr_people_mcap", "hsr_people_sqlite3"):  # determinism: byte for byte
        assert (out / "run" / "frames" / f"{bag}.jsonl").read_bytes() == (hsr_golden / "frames" / f"{bag}.jsonl").read_bytes()
        again = read_bag_messages(out / "run" / "outputs" / bag)
        before = read_bag_messages(hsr_golden / "outputs" / bag)
        assert [(t, ts) for t, ts, _ in again] == [(t, ts) for t, ts, _ in before]
    report = json.loads((out / "report.json").read_text())
    assert (report["status"], report["exit_code"]) == ("match", 0)
    assert report["comparison"]["drift"]["box_px"]["max"] == 0.0
    assert report["comparison"]["drift"]["score"]["max"] == 0.0
    assert report["comparison"]["drift"]["mask_iou"]["min"] == 1.0
    assert report["timing"]["frames"] == 10


def test_raising_the_score_threshold_is_a_regression_that_names_frame_and_instance(hsr_golden, known_answer_model,
                                                                                      tmp_path, capsys):
    params = tmp_path / "strict.yaml"
    text = (REPO / "config" / "seg_perception.yaml").read_text()
    params.write_text(text.replace("score_threshold: 0.3", "score_threshold: 0.8"))
    out = tmp_path / "out"
    code, stdout, _ = run_regress(capsys, HSR_MCAP, "--golden", hsr_golden, "--model", known_answer_model,
                                  "--params", params, "--out", out)
    assert code == 1
    # The image-following "person" (score 0.69..0.70) falls below 0.8; the fixed "bottle" (0.9) stays.
    assert ("hsr_people_mcap frame 0 (stamp 1556880098.522459261): lost golden instance at position 1: person score 0.693 "
            "box [320.0, 120.0, 480.0, 240.0]") in stdout
    assert "REGRESSION: 0 added, 5 lost, 0 changed instances in 5 of 5 frames" in stdout
    assert "parameter score_threshold: golden 0.3, this run 0.8" in stdout
    report = json.loads((out / "report.json").read_text())
    assert (report["status"], report["exit_code"]) == ("regression", 1)
    diffs = report["comparison"]["differences"]
    assert [(d["kind"], d["bag"], d["frame"], d["golden_index"], d["class_name"]) for d in diffs] == [
        ("lost", "hsr_people_mcap", i, 1, "person") for i in range(5)]
    assert report["comparison"]["bags"][0]["matched"] == 5  # the bottles still match


def test_png_compressed_frames_give_exactly_the_raw_outputs_and_jpeg_ones_run(hsr_golden, known_answer_model,
                                                                              tmp_path, capsys):
    frames = hsr_rgb_frames()
    png = write_bag(tmp_path / "hsr_people_mcap",
                    [("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", t, compressed_msg(m, "png"))
                     for t, m in frames], storage="sqlite3")
    code, stdout, err = run_regress(capsys, png, "--golden", hsr_golden, "--model", known_answer_model,
                                    "--out", tmp_path / "png")
    assert code == 0, stdout + err  # same recording key, lossless images: the raw golden run matches
    assert "recording hsr_people_mcap: its images differ from those the golden run was made from" in stdout
    assert ((tmp_path / "png" / "run" / "frames" / "hsr_people_mcap.jsonl").read_bytes()
            == (hsr_golden / "frames" / "hsr_people_mcap.jsonl").read_bytes())
    jpeg = write_bag(tmp_path / "jpeg", [("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", t,
                                          compressed_msg(m, "jpeg")) for t, m in frames])
    code, stdout, err = run_regress(capsys, jpeg, "--topic", "/cam/image/compressed", "--golden", tmp_path / "g",
                                    "--model", known_answer_model, "--out", tmp_path / "jpeg_out", "--update-golden")
    assert code == 0, stdout + err
    assert all(f.class_names[0] == "bottle" for f in frames_of(tmp_path / "g", "jpeg"))


def test_update_golden_replaces_the_old_run_atomically(hsr_golden, known_answer_model, tmp_path, capsys):
    golden = tmp_path / "golden"
    shutil.copytree(hsr_golden, golden)
    code, stdout, _ = run_regress(capsys, HSR_MCAP, "--golden", golden, "--model", known_answer_model,
                                  "-p", "score_threshold=0.8", "--out", tmp_path / "out", "--update-golden")
    assert code == 0 and "golden run updated" in stdout
    assert "REGRESSION" in stdout  # the old golden run is compared, for information, before it is replaced
    assert "the new golden run holds only this run's recordings; it no longer has hsr_people_sqlite3" in stdout
    manifest = json.loads((golden / "manifest.json").read_text())
    assert manifest["params"]["score_threshold"] == 0.8 and [b["key"] for b in manifest["bags"]] == ["hsr_people_mcap"]
    assert siblings(golden) == ["golden", "out"]  # no staging or retired copies left behind


def test_annotations_give_coco_ap_and_an_ap_drop_is_a_regression(hsr_golden, known_answer_model, tmp_path, capsys):
    from pycocotools import mask as mask_utils

    from seg_perception.models.known_answer import KEYPOINT_NAMES

    # Ground truth: the fixed "bottle" of every frame, its mask and its five keypoints.
    images, anns = [], []
    for i, f in enumerate(frames_of(hsr_golden, "hsr_people_mcap")):
        image_id = 100 - i  # ids in reverse frame order: only the stamps pair them
        images.append({"id": image_id, "width": 640, "height": 480, "stamp_ns": f.stamp_ns})
        rle = mask_utils.encode(np.asfortranarray(f.detections.masks[0].to_full(480, 640)))
        kps = [[x, y, 2] for x, y, _ in f.detections.keypoints[0].tolist()]
        anns.append({"id": i + 1, "image_id": image_id, "category_id": 2, "bbox": [320, 120, 240, 240],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                     "keypoints": [v for kp in kps for v in kp]})
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person"}, {"id": 2, "name": "bottle", "keypoints": KEYPOINT_NAMES}]}))
    golden = tmp_path / "golden"
    code, stdout, _ = run_regress(capsys, HSR_MCAP, "--golden", golden, "--model", known_answer_model,
                                  "--annotations", coco, "--out", tmp_path / "a", "--update-golden")
    assert code == 0, stdout
    assert "mask      AP 1.0000 AP50 1.0000 AP75 1.0000" in stdout
    assert "box       AP 1.0000 AP50 1.0000 AP75 1.0000" in stdout
    assert "keypoints AP 1.0000 AP50 1.0000 AP75 1.0000" in stdout
    assert "annotations paired with frames by stamp: 5 images" in stdout
    code, stdout, _ = run_regress(capsys, HSR_MCAP, "--golden", golden, "--model", known_answer_model,
                                  "--annotations", coco, "--out", tmp_path / "b", "-p", "score_threshold=0.95")
    assert code == 1
    assert "REGRESSION: segm AP fell from 1.0000 to 0.0000" in stdout
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["evaluation"]["segm"]["AP"] == 0.0 and report["golden_evaluation"]["segm"]["AP"] == 1.0


def test_outputs_recorded_on_a_robot_compare_like_a_run_and_missing_ones_are_dropped_frames(
        hsr_golden, tmp_path, capsys):
    # What `ros2 bag record` keeps of the node, here the golden run's own output bag (under
    # a robot's namespace), less the output of frame 3: the node dropped that frame.
    msgs = [(t.replace("/seg_perception/", "/robot/seg/"), m.__msgtype__, ts, m)
            for t, ts, m in read_bag_messages(hsr_golden / "outputs" / "hsr_people_mcap")
            if not (t.endswith("instances") and m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
                    == HSR_STAMPS_NS[3])]
    recorded = write_bag(tmp_path / "robot_outputs", msgs, storage="sqlite3")
    code, stdout, err = run_regress(capsys, HSR_MCAP, "--recorded", recorded, "--golden", hsr_golden,
                                    "--out", tmp_path / "a")
    assert code == 1, stdout + err
    assert "hsr_people_mcap frame 3: no output: the node dropped this frame" in stdout
    assert "matched" in stdout and "REGRESSION: 0 added, 0 lost, 0 changed instances" in stdout
    code, stdout, err = run_regress(capsys, HSR_MCAP, "--recorded", recorded, "--golden", hsr_golden,
                                    "--out", tmp_path / "b", "--allow-dropped")
    assert code == 0, stdout + err
    assert "MATCH: 8 instances in 4 frames agree with the golden run" in stdout
    manifest = json.loads((tmp_path / "b" / "run" / "manifest.json").read_text())
    assert manifest["mode"] == "recorded" and manifest["model"]["name"] == "known_answer"


def test_the_command_is_listed_and_documents_its_options(capsys):
    from seg_perception.tools.cli import main

    assert main(["--help"]) == 0
    assert "regress" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["regress", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--golden", "--update-golden", "--through-ros", "--rate", "--use-sim-time", "--annotations",
                   "--box-tol", "--score-tol", "--mask-iou", "--keypoint-tol", "--params", "--model", "--backend"):
        assert option in text


def test_shipped_model_matches_the_committed_golden_run(tmp_path, capsys):
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"the shipped model {SHIPPED_MODEL} does not exist yet (being trained)")
    if not (SHIPPED_GOLDEN / "manifest.json").is_file():
        pytest.skip(f"no committed golden run at {SHIPPED_GOLDEN}; create it with dev/regenerate_golden.sh "
                    "(see docs/regression.md)")
    recording = GOLDEN_RECORDING
    gt = recording / "ground_truth.json"
    code, stdout, err = run_regress(capsys, recording, "--golden", SHIPPED_GOLDEN, "--model", SHIPPED_MODEL,
                                    "--backend", "onnxruntime", "-p", "device=cpu", "--out", tmp_path / "out",
                                    *(["--annotations", gt] if gt.is_file() else []))
    assert code == 0, (stdout + err + "\nIf the change is intended, regenerate the golden run with "
                       "dev/regenerate_golden.sh and commit it (see docs/regression.md).")
