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

import pytest

from seg_perception.core.metadata import ModelMetadata
from seg_perception.pipeline import DEFAULT_MODEL_NAME

REPO = Path(__file__).resolve().parent.parent
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
    from seg_perception.tools.evaluate import dataset_frames, evaluate_frames, load_evaluation_pipeline

    record = json.loads(RECORD.read_text())
    val = record["validation_set"]
    subset = record["ci_subset"]
    annotations = write_coco_dataset(tmp_path / "val", n_images=subset["num_images"], seed=val["seed"],
                                     width=val["width"], height=val["height"])
    pipeline = load_evaluation_pipeline(MODEL, threads=2)
    try:
        report = evaluate_frames(pipeline, dataset_frames(annotations, None), annotations)
    finally:
        pipeline.close()
    assert report["images"] == subset["num_images"]
    mask_ap = report["segm"]["AP"]
    floor = subset["segm"]["AP"] - record["tolerance"]
    assert mask_ap >= floor, (f"mask AP {mask_ap:.3f} on the {subset['num_images']}-image validation subset is "
                              f"below the recorded {subset['segm']['AP']:.3f} - {record['tolerance']}")
