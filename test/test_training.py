"""Training: data, augmentation, losses, and a short run whose loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pycocotools")

from seg_perception.synth import KEYPOINT_NAMES  # noqa: E402
from seg_perception.training.augment import TrainAugment, flip_permutation  # noqa: E402
from seg_perception.training.dataset import CocoInstanceDataset, collate  # noqa: E402
from seg_perception.training.losses import YolactLossConfig, match_priors, yolact_losses  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seg_perception.synth import write_coco_dataset

    return write_coco_dataset(tmp_path_factory.mktemp("synth"), n_images=4, seed=3, width=128, height=96)


def test_flip_swaps_the_clockwise_box_corners_and_left_right_names():
    perm = flip_permutation(KEYPOINT_NAMES)
    assert perm[:4] == [0, 3, 2, 1]
    assert perm[4:] == list(range(4, len(KEYPOINT_NAMES)))
    assert flip_permutation(["nose", "left_eye", "right_eye"]) == [0, 2, 1]


def test_dataset_reads_masks_boxes_and_keypoints_of_the_coco_file(tiny_dataset: Path):
    ds = CocoInstanceDataset(tiny_dataset)
    doc = json.loads(tiny_dataset.read_text())
    assert ds.info.class_names == [c["name"] for c in doc["categories"]]
    assert len(ds.info.keypoint_names) == len(KEYPOINT_NAMES)
    s = ds[0]
    n = len(s["labels"])
    assert s["image"].shape == (3, 96, 128) and s["masks"].shape == (n, 96, 128)
    assert s["keypoints"].shape == (n, len(KEYPOINT_NAMES), 3)
    # The annotated box is the box of the mask.
    for m, b in zip(s["masks"], s["boxes"]):
        ys, xs = np.nonzero(m.numpy())
        assert abs(xs.min() - float(b[0])) <= 1 and abs(xs.max() + 1 - float(b[2])) <= 1


def test_augmentation_moves_masks_boxes_and_keypoints_together(tiny_dataset: Path):
    torch.manual_seed(0)
    import random

    random.seed(0)
    ds = CocoInstanceDataset(tiny_dataset, transform=TrainAugment((64, 96), KEYPOINT_NAMES, flip_probability=1.0,
                                                                  crop_probability=0.0, photometric=False))
    raw = ds.load_raw(0)
    s = ds[0]
    assert s["image"].shape == (3, 64, 96) and s["masks"].shape[1:] == (64, 96)
    for m, b in zip(s["masks"], s["boxes"]):
        ys, xs = np.nonzero(m.numpy())
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(int(v) for v in b)
    # Flipped: a visible keypoint's x mirrors (x' = W - x, after the 0.75 scale).
    k0 = raw["keypoints"][..., 2] > 0
    if k0.any():
        perm = torch.tensor(flip_permutation(KEYPOINT_NAMES))
        got = s["keypoints"][:, perm][..., 0][k0[: len(s["keypoints"])]] if len(s["keypoints"]) == len(raw["keypoints"]) else None
        if got is not None:
            want = 96 - raw["keypoints"][..., 0][k0] * 0.75
            assert torch.allclose(got, want, atol=1.0)


def test_matching_marks_overlapping_priors_positive_and_gives_each_object_a_prior():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.1, 0.1]])
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.45, 0.45, 0.56, 0.56]])
    state, index = match_priors(priors, gt, torch.zeros((0, 4)), YolactLossConfig())
    assert state.tolist() == [1, 0, 1]
    assert index[0] == 0 and index[2] == 1


def test_losses_are_finite_and_positive_for_a_real_batch(tiny_dataset: Path):
    from seg_perception.models.yolact import yolact_slim
    from seg_perception.training.trainer import normalise

    ds = CocoInstanceDataset(tiny_dataset, transform=TrainAugment((96, 128), KEYPOINT_NAMES))
    images, targets = collate([ds[0], ds[1]])
    model = yolact_slim(7, input_size=(96, 128), fpn_channels=32, widths=(8, 16, 32, 64), num_keypoints=17,
                        semantic_seg_head=True)
    losses = yolact_losses(model.forward_raw(normalise(images, torch.device("cpu"))), targets, (96, 128))
    assert set(losses) == {"class", "box", "mask", "semantic", "keypoint", "visibility"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_a_short_training_run_lowers_the_loss_and_exports_a_model(tiny_dataset: Path, tmp_path: Path):
    from seg_perception.core.metadata import ModelMetadata
    from seg_perception.training.trainer import TrainConfig, train

    config = TrainConfig(
        train_annotations=str(tiny_dataset), out_dir=str(tmp_path / "run"), input_size=(96, 128),
        model_kwargs={"fpn_channels": 32, "widths": [8, 16, 32, 64]}, iterations=20, batch_size=2, lr=3e-3,
        warmup_iterations=0, checkpoint_every=10, eval_every=1000, log_every=4, workers=0, seed=0, threads=1,
        progress=False, export_path=str(tmp_path / "m.onnx"),
    )
    summary = train(config, log=lambda _: None)
    totals = [json.loads(line)["total"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(totals) == 5
    assert np.mean(totals[-2:]) < 0.7 * totals[0], totals
    assert (tmp_path / "run" / "checkpoints" / "last.pth").exists()
    assert (tmp_path / "run" / "loss_curve.png").exists()
    md = ModelMetadata.load(tmp_path / "m.json")
    assert md.architecture == "yolact_slim" and md.num_keypoints == 17 and md.class_keypoints["box"] == [0, 1, 2, 3]
    assert summary["iterations"] == 20


def test_training_resumes_from_the_last_checkpoint(tiny_dataset: Path, tmp_path: Path):
    from seg_perception.training.trainer import TrainConfig, train

    common = dict(train_annotations=str(tiny_dataset), out_dir=str(tmp_path / "run"), input_size=(96, 128),
                  model_kwargs={"fpn_channels": 32, "widths": [8, 16, 32, 64]}, batch_size=2, warmup_iterations=0,
                  checkpoint_every=3, eval_every=1000, log_every=3, workers=0, threads=1, progress=False)
    train(TrainConfig(iterations=3, **common), log=lambda _: None)
    messages: list[str] = []
    summary = train(TrainConfig(iterations=6, resume=True, **common), log=messages.append)
    assert summary["iterations"] == 6
    assert any("resumed" in m and "iteration 3" in m for m in messages)
