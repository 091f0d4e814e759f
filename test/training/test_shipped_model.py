"""The shipped default model: present, small, CPU-runnable, and as accurate as recorded.

``models/seg_perception_default.eval.json`` records the model's COCO figures on the
held-out synthetic validation set (generator seed and size in the file) and on its
first ``ci_subset.num_images`` images. Image ``i`` of a synthetic dataset depends only
on (seed, i), so this test regenerates exactly that subset and fails when mask AP
falls more than ``tolerance`` below the recorded figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seg_perception.core.metadata import ModelMetadata
from seg_perception.pipeline import DEFAULT_MODEL_NAME

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / DEFAULT_MODEL_NAME
RECORD = MODEL.with_suffix(".eval.json")
MAX_ONNX_BYTES = 25 * 1024 * 1024


def test_the_shipped_model_is_small_and_describes_the_synthetic_classes():
    from seg_perception import synth

    assert MODEL.exists(), f"the shipped model is missing at {MODEL}"
    assert MODEL.stat().st_size <= MAX_ONNX_BYTES
    md = ModelMetadata.load(MODEL.with_suffix(".json"))
    assert md.class_names == synth.CLASS_NAMES
    assert md.keypoint_names == synth.KEYPOINT_NAMES
    assert [tuple(e) for e in md.skeleton] == [tuple(e) for e in synth.SKELETON]
    assert md.class_keypoints == synth.CLASS_KEYPOINTS
    assert md.output_format == "yolact"


def test_the_shipped_model_keeps_its_recorded_mask_ap_on_the_validation_subset(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("pycocotools")
    from seg_perception.synth import write_coco_dataset
    from seg_perception.evaluation.evaluator import dataset_frames, evaluate_model
    from seg_perception.pipeline import load_evaluation_pipeline

    record = json.loads(RECORD.read_text())
    val = record["validation_set"]
    subset = record["ci_subset"]
    annotations = write_coco_dataset(tmp_path / "val", n_images=subset["num_images"], seed=val["seed"],
                                     width=val["width"], height=val["height"])
    pipeline = load_evaluation_pipeline(MODEL, threads=2)
    try:
        report = evaluate_model(pipeline, dataset_frames(annotations, None), annotations)
    finally:
        pipeline.close()
    assert report["images"] == subset["num_images"]
    mask_ap = report["segm"]["AP"]
    floor = subset["segm"]["AP"] - record["tolerance"]
    assert mask_ap >= floor, (f"mask AP {mask_ap:.3f} on the {subset['num_images']}-image validation subset is "
                              f"below the recorded {subset['segm']['AP']:.3f} - {record['tolerance']}")


def test_masks_follow_the_crop_the_model_was_trained_with(tmp_path: Path):
    """Our trainer's mask loss sees only pixels inside the box, so the shipped model's metadata says
    ``mask_crop: box`` and its masks end at the box; the same network read as an official YOLACT file
    (``mask_crop: prototype``) gets the official padded crop, whose masks reach past the box."""
    import shutil

    from seg_perception.bags import read_images
    from seg_perception.pipeline import SegmentationPipeline
    from seg_perception.regression.sources import frame_rgb, inspect_bag
    from seg_perception.runtime.factory import create_backend

    pytest.importorskip("onnxruntime")
    assert ModelMetadata.load(MODEL.with_suffix(".json")).mask_crop == "box"
    official = tmp_path / "as_official.onnx"
    shutil.copy(MODEL, official)
    md = json.loads(MODEL.with_suffix(".json").read_text())
    official.with_suffix(".json").write_text(json.dumps({**md, "mask_crop": "prototype"}))
    recording = REPO / "test" / "data" / "synthetic_recording"
    source = inspect_bag(recording, None)
    frame = next(iter(read_images(recording)))
    rgb = frame_rgb(source, frame, 10**8)

    def beyond_box(model: Path) -> int:
        """Mask pixels outside their box's pixel region, over all instances of the frame."""
        pipeline = SegmentationPipeline(create_backend("onnxruntime", model, threads=1))
        try:
            dets = pipeline(rgb)
        finally:
            pipeline.close()
        assert len(dets) > 3
        outside = 0
        for box, mask in zip(dets.boxes, dets.masks):
            full = mask.to_full(*rgb.shape[:2]).astype(bool)
            x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
            x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
            full[max(y1, 0):y2, max(x1, 0):x2] = False
            outside += int(full.sum())
        return outside

    assert beyond_box(MODEL) == 0
    assert beyond_box(official) > 0
