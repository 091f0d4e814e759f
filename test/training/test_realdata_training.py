"""`seg-perception train` on a labelme-style COCO export (issue 13, items 4 and 5): bad input
is one line before anything is written; the surprises of real files are said out loud."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.realdata_testlib import labelme_style_coco

pytest.importorskip("torch")

TINY = ["--arch", "yolact_slim", "--input-size", "48", "64", "--fpn-channels", "32", "--widths", "8", "16", "32", "64",
        "--iterations", "2", "--batch-size", "2", "--workers", "0", "--threads", "1", "--eval-images", "0",
        "--no-progress"]


def train_cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    from seg_perception.tools.cli import main

    capsys.readouterr()
    code = main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_training_notes_background_empty_classes_and_a_warmup_longer_than_the_run(tmp_path, capsys):
    gt = labelme_style_coco(tmp_path / "data")
    code, out, err = train_cli(capsys, "--train", gt, "--out", tmp_path / "run", *TINY)
    assert code == 0, out + err
    assert "note: category '_background_' (labelme's unlabelled area) is not trained as a class" in out
    assert "1 of 2 classes have no annotation" in out and "plate" in out
    assert "warm-up of 100 iterations is longer than half the run (2 iterations); using 0" in out
    summary = json.loads(out[out.index("{"):])
    metadata = json.loads(Path(summary["checkpoint"]).parent.parent.joinpath("config.json").read_text())
    assert metadata["iterations"] == 2
    from seg_perception.models.checkpoint import read_checkpoint

    assert read_checkpoint(summary["checkpoint"])["class_names"] == ["cup", "plate"]


def test_a_missing_image_stops_training_before_it_starts(tmp_path, capsys):
    gt = labelme_style_coco(tmp_path / "data")
    (tmp_path / "data" / "img_1.png").unlink()
    code, out, err = train_cli(capsys, "--train", gt, "--out", tmp_path / "run", *TINY)
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert "1 of 2 images named in" in line and "img_1.png" in line and "image id 1" in line
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_missing_annotation_file_is_one_line(tmp_path, capsys):
    code, out, err = train_cli(capsys, "--train", tmp_path / "nothing.json", "--out", tmp_path / "run", *TINY)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"error: annotation file not found: {tmp_path / 'nothing.json'} (give the COCO JSON file " \
                          "of the dataset)"


def test_an_earlier_run_is_not_overwritten_without_resume_or_overwrite(tmp_path, capsys):
    gt = labelme_style_coco(tmp_path / "data")
    run = tmp_path / "run"
    assert train_cli(capsys, "--train", gt, "--out", run, *TINY)[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out, err = train_cli(capsys, "--train", gt, "--out", run, *TINY)
    assert code == 2 and "holds an earlier run" in err and "--resume" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    code, out, err = train_cli(capsys, "--train", gt, "--out", run, "--overwrite", *TINY)
    assert code == 0, out + err
    assert len((run / "log.jsonl").read_text().splitlines()) == 1  # the earlier run's line is gone


def test_a_training_checkpoint_runs_without_a_json_and_exports_with_a_size_warning(tmp_path, capsys):
    """Issue 13, item 5: model_path:=last.pth needs no JSON beside it (the checkpoint names its
    network and classes); exporting at another input size than trained warns, naming the trained size."""
    import numpy as np

    from seg_perception.pipeline import SegmentationPipeline
    from seg_perception.runtime.base import BackendError
    from seg_perception.runtime.factory import create_backend

    gt = labelme_style_coco(tmp_path / "data")
    assert train_cli(capsys, "--train", gt, "--out", tmp_path / "run", *TINY)[0] == 0
    last = tmp_path / "run" / "checkpoints" / "last.pth"
    assert not last.with_suffix(".json").exists()
    backend = create_backend("torch", last, device="cpu")
    assert backend.metadata.class_names == ["cup", "plate"]
    assert (backend.metadata.input_height, backend.metadata.input_width) == (48, 64)
    pipeline = SegmentationPipeline(backend)
    detections = pipeline(np.zeros((48, 64, 3), np.uint8))
    assert detections.keypoints.shape[1:] == (0, 3)
    pipeline.close()

    import torch

    bare = tmp_path / "bare.pth"
    torch.save(torch.load(last, weights_only=True)["state_dict"], bare)
    with pytest.raises(BackendError, match=r"bare state dict .*`seg-perception export"):
        create_backend("torch", bare, device="cpu")

    from seg_perception.tools.cli import main

    capsys.readouterr()
    code = main(["export", str(last), "--input-size", "96x72", "-o", str(tmp_path / "big.onnx"), "--no-check"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "WARNING: last.pth was trained at 64x48; exported at 96x72" in out + err
    code = main(["export", str(last), "-o", str(tmp_path / "same.onnx"), "--no-check"])
    out, err = capsys.readouterr()
    assert code == 0 and "WARNING" not in out + err
