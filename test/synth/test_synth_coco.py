"""The synthetic COCO dataset is deterministic, valid COCO, and matches the renderer."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from seg_perception.synth import (CLASS_KEYPOINTS, CLASS_NAMES, KEYPOINT_NAMES, NUM_KEYPOINTS, generate_frame,
                                  load_depth, write_coco_dataset)
from seg_perception.synth.cli import main_generate_dataset
from seg_perception.synth.coco import save_depth

W, H, N, SEED = 128, 96, 4, 17


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_ds")
    path = write_coco_dataset(out, N, SEED, W, H)
    return out, json.loads(path.read_text())


def test_same_seed_writes_byte_identical_files(dataset, tmp_path):
    out, _ = dataset
    again = write_coco_dataset(tmp_path / "again", N, SEED, W, H, workers=2)
    assert again.read_bytes() == (out / "annotations.json").read_bytes()
    for sub in ("images", "depth", "depth_gt"):
        for f in sorted((out / sub).iterdir()):
            assert f.read_bytes() == (tmp_path / "again" / sub / f.name).read_bytes()


def test_different_seed_writes_different_data(dataset, tmp_path):
    out, _ = dataset
    other = write_coco_dataset(tmp_path / "other", 1, SEED + 1, W, H)
    assert json.loads(other.read_text())["annotations"] != [
        a for a in json.loads((out / "annotations.json").read_text())["annotations"] if a["image_id"] == 1]
    assert (tmp_path / "other/images/000000.png").read_bytes() != (out / "images/000000.png").read_bytes()


def test_document_is_loadable_coco_with_keypoint_categories(dataset):
    out, doc = dataset
    coco = COCO(str(out / "annotations.json"))
    assert sorted(coco.getCatIds()) == list(range(1, len(CLASS_NAMES) + 1))
    for cat in doc["categories"]:
        assert cat["name"] == CLASS_NAMES[cat["id"] - 1]
        assert cat["keypoints"] == KEYPOINT_NAMES
        for a, b in cat["skeleton"]:  # 1-based, within the class's own keypoints
            assert {a - 1, b - 1} <= set(CLASS_KEYPOINTS[cat["name"]])
    assert len(doc["images"]) == N
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
    assert len(doc["annotations"]) > 0


def test_annotations_match_the_rendered_frames(dataset):
    out, doc = dataset
    by_image = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for img in doc["images"]:
        frame = generate_frame(SEED, img["frame_index"], W, H)
        anns = by_image.get(img["id"], [])
        assert [a["track_id"] for a in anns] == [i.track_id for i in frame.instances]
        assert img["camera_info"]["K"] == pytest.approx(frame.camera.K.reshape(-1).tolist(), abs=1e-5)
        for a, inst in zip(anns, frame.instances):
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert isinstance(a["segmentation"]["counts"], str)
            assert np.array_equal(m, inst.mask)
            assert np.array_equal(m, frame.instance_map == a["track_id"])
            assert a["area"] == int(m.sum()) == int(mask_utils.area(a["segmentation"]))
            assert a["bbox"] == pytest.approx(mask_utils.toBbox(a["segmentation"]).tolist())
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["iscrowd"] == 0 and a["category_id"] == inst.class_id + 1
            kp = np.array(a["keypoints"], dtype=float).reshape(NUM_KEYPOINTS, 3)
            own = CLASS_KEYPOINTS[CLASS_NAMES[a["category_id"] - 1]]
            assert np.all(kp[[k for k in range(NUM_KEYPOINTS) if k not in own], 2] == 0)
            assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
            assert a["centroid_3d"] == pytest.approx(inst.centroid_3d.tolist(), abs=1e-5)
            assert len(a["keypoints_3d"]) == 3 * NUM_KEYPOINTS and len(a["rotation_3d"]) == 9


def test_depth_files_round_trip_to_metres(dataset):
    out, doc = dataset
    img = doc["images"][0]
    frame = generate_frame(SEED, img["frame_index"], W, H)
    for key, ref in (("depth_file", frame.depth), ("depth_gt_file", frame.depth_gt)):
        d = load_depth(out / img[key])
        assert d.shape == (H, W) and d.dtype == np.float32
        assert np.array_equal(np.isnan(d), ~np.isfinite(ref) | (ref > 65.535))
        ok = np.isfinite(d)
        assert np.max(np.abs(d[ok] - ref[ok])) <= 0.0005 + 1e-6
    rgb = cv2.cvtColor(cv2.imread(str(out / img["file_name"])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(rgb, frame.rgb)


def test_npy_depth_keeps_float_metres(tmp_path):
    d = np.array([[0.5, np.nan], [1.25, np.inf]], np.float32)
    save_depth(tmp_path / "d.npy", d)
    back = load_depth(tmp_path / "d.npy")
    assert back[0, 0] == 0.5 and back[1, 0] == 1.25 and np.isnan(back[0, 1]) and np.isnan(back[1, 1])


def test_dataset_cli_writes_annotations_and_a_contact_sheet(tmp_path):
    rc = main_generate_dataset([str(tmp_path / "ds"), "-n", "2", "--seed", "3", "--width", "96", "--height", "72",
                                "--quiet", "--contact-sheet", str(tmp_path / "sheet.png")])
    assert rc == 0
    doc = json.loads((tmp_path / "ds/annotations.json").read_text())
    assert len(doc["images"]) == 2
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 50 and sheet.shape[1] > 150
