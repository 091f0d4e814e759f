"""``seg-perception export``: official-format weights -> ONNX + metadata that the pipeline runs.

The weight files here have the official layouts (a centermask2 ``{"model": state_dict}``
with detectron2's extra buffers, a bare YOLACT++ state dict) but random seeded weights
(``parity_testlib``), at small input sizes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from support.models_testlib import hsr_frames, limit_torch_threads  # noqa: E402
from support.parity_testlib import CLASSES, skimage_images, small_centermask, small_yolact_plus  # noqa: E402

from seg_perception.core.metadata import COCO_CLASSES, ModelMetadata  # noqa: E402
from seg_perception.core.postprocess import PostprocessParams  # noqa: E402
from seg_perception.pipeline import SegmentationPipeline  # noqa: E402
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from seg_perception.tools.export import main, read_name_list, read_skeleton  # noqa: E402

limit_torch_threads()


@pytest.fixture(scope="module")
def classes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("classes") / "classes.txt"
    path.write_text("# the three classes\nperson\nbottle\n\ncup  # mugs too\n")
    return path


@pytest.fixture(scope="module")
def centermask2_pth(tmp_path_factory):
    """A file as centermask2's trainer writes it: {"model": ..., "iteration": ...}, FrozenBN, pixel_mean."""
    model = small_centermask("centermask_lite_vovnet19_slim_dw", 64)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    state["pixel_std"] = torch.ones(3, 1, 1)
    path = tmp_path_factory.mktemp("cm2") / "centermask2-lite-V-19-slim-dw-eSE-FPN-ms-4x.pth"
    torch.save({"model": state, "iteration": 359999}, path)
    return path


def test_name_lists_and_skeletons_read_from_files_or_coco(tmp_path, classes_file):
    assert read_name_list(str(classes_file), "classes", COCO_CLASSES) == CLASSES
    assert read_name_list("coco", "classes", COCO_CLASSES)[:3] == ["person", "bicycle", "car"]
    assert len(read_name_list("coco", "classes", COCO_CLASSES)) == 80
    edges = tmp_path / "skeleton.txt"
    edges.write_text("head left_hand\n0 2\n")
    assert read_skeleton(str(edges), ["head", "left_hand", "right_hand"], []) == [(0, 1), (0, 2)]


def test_centermask2_checkpoint_exports_and_the_pipeline_runs_it(centermask2_pth, classes_file, tmp_path, capsys):
    out = tmp_path / "models" / "lite.onnx"
    rc = main([str(centermask2_pth), "--arch", "centermask_lite_vovnet19_slim_dw", "--classes", str(classes_file),
               "--input-size", "64", "-o", str(out)])
    log = capsys.readouterr().err
    assert rc == 0, log
    assert "[5/5] running the graph once" in log and "ignored 2 training-only/legacy keys" in log
    md = ModelMetadata.load(out.with_suffix(".json"))
    assert (md.output_format, md.class_names, md.input_width, md.architecture) == (
        "roi", CLASSES, 64, "centermask_lite_vovnet19_slim_dw")
    pipeline = SegmentationPipeline(OnnxRuntimeBackend(out, threads=2), PostprocessParams(score_threshold=0.05))
    frames = hsr_frames() or tuple(skimage_images(1))
    if not frames:
        pytest.skip("no real image available")
    detections = pipeline(frames[0])
    h, w = frames[0].shape[:2]
    assert len(detections) > 0  # the test weights fire
    assert detections.boxes[:, 2].max() <= w and detections.boxes[:, 3].max() <= h
    for mask, box in zip(detections.masks, detections.boxes):
        assert mask.x <= box[0] + 1 and mask.x + mask.width >= box[2] - 1


@pytest.mark.slow  # a ResNet-50 at 256 px, the smallest input MaskIoU re-scoring accepts
def test_yolact_plus_export_writes_the_rescoring_weights_the_pipeline_uses(tmp_path, capsys):
    model = small_yolact_plus("yolact_plus_resnet50", 256)
    weights = tmp_path / "yolact_plus_resnet50_54_800000.pth"
    torch.save({k: v for k, v in model.state_dict().items()}, weights)  # a bare state dict, as official files
    (tmp_path / "c.json").write_text(json.dumps(CLASSES))
    rc = main([str(weights), "--arch", "yolact_plus_resnet50", "--classes", str(tmp_path / "c.json"),
               "--input-size", "256", "--no-check"])
    assert rc == 0, capsys.readouterr().err
    onnx_path = weights.with_suffix(".onnx")
    md = ModelMetadata.load(onnx_path.with_suffix(".json"))
    assert md.maskiou_weights == "yolact_plus_resnet50_54_800000.maskiou.npz"
    assert (tmp_path / md.maskiou_weights).is_file()
    pipeline = SegmentationPipeline(OnnxRuntimeBackend(onnx_path, threads=2), PostprocessParams(score_threshold=0.3))
    assert pipeline._mask_rescorer is not None and pipeline._mask_rescorer.num_classes == 3
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)
    pipeline(image)  # runs end to end with re-scoring
    (tmp_path / md.maskiou_weights).unlink()
    with pytest.raises(FileNotFoundError, match="MaskIoU re-scoring weights not found"):
        SegmentationPipeline(OnnxRuntimeBackend(onnx_path, threads=2))


def test_errors_say_what_to_change(centermask2_pth, classes_file, tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    torch.save(torch.load(centermask2_pth, weights_only=True)["model"], bare)
    assert main([str(bare), "--classes", "coco"]) == 1
    assert "bare state dict" in capsys.readouterr().err
    assert main([str(bare), "--arch", "centermask_lite_vovnet19_slim_dw", "--classes", "coco"]) == 1
    assert "predicts 3 classes but the class list has 80" in capsys.readouterr().err
    assert main([str(bare), "--arch", "centermask_lite_vovnet39", "--classes", str(classes_file)]) == 1
    assert "does not fit CenterMask" in capsys.readouterr().err
    assert main([str(bare), "--arch", "centermask_lite_vovnet19_slim_dw", "--classes", str(classes_file),
                 "--opset", "13"]) == 1
    assert "--opset must be at least 17" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.pth"), "--arch", "x"])
    assert "weights file not found" in capsys.readouterr().err
