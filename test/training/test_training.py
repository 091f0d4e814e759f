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


TINY_MODEL = {"fpn_channels": 32, "widths": [8, 16, 32, 64]}  # yolact_slim small enough for seconds of CPU


def tiny_config(dataset: Path, out_dir: Path, **overrides):
    """A ``TrainConfig`` for a quiet run of the tiny model on the tiny dataset."""
    from seg_perception.training.trainer import TrainConfig

    values = dict(train_annotations=str(dataset), out_dir=str(out_dir), input_size=(96, 128),
                  model_kwargs=dict(TINY_MODEL), batch_size=2, warmup_iterations=0, eval_every=1000, workers=0,
                  threads=1, progress=False)
    return TrainConfig(**(values | overrides))


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
    model = yolact_slim(7, input_size=(96, 128), num_keypoints=17, semantic_seg_head=True, **TINY_MODEL)
    losses = yolact_losses(model.forward_raw(normalise(images, torch.device("cpu"))), targets, (96, 128))
    assert set(losses) == {"class", "box", "mask", "semantic", "keypoint", "visibility"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_a_short_training_run_lowers_the_loss_and_exports_a_model(tiny_dataset: Path, tmp_path: Path):
    from seg_perception.core.metadata import ModelMetadata
    from seg_perception.training.trainer import train

    config = tiny_config(tiny_dataset, tmp_path / "run", iterations=20, lr=3e-3, checkpoint_every=10, log_every=4,
                         seed=0, export_path=str(tmp_path / "m.onnx"))
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
    from seg_perception.training.trainer import train

    common = dict(checkpoint_every=3, log_every=3)
    train(tiny_config(tiny_dataset, tmp_path / "run", iterations=3, **common), log=lambda _: None)
    messages: list[str] = []
    summary = train(tiny_config(tiny_dataset, tmp_path / "run", iterations=6, resume=True, **common),
                    log=messages.append)
    assert summary["iterations"] == 6
    assert any("resumed" in m and "iteration 3" in m for m in messages)


def test_fine_tuning_copies_every_tensor_that_fits_and_refuses_another_network(tiny_dataset: Path, tmp_path: Path):
    from seg_perception.models.checkpoint import CheckpointError, read_checkpoint
    from seg_perception.models.yolact import yolact_slim
    from seg_perception.training.trainer import init_from_checkpoint, train

    train(tiny_config(tiny_dataset, tmp_path / "first", iterations=2, checkpoint_every=2), log=lambda _: None)
    source = tmp_path / "first" / "checkpoints" / "last.pth"
    trained = read_checkpoint(source)["state_dict"]

    # Another input size: the same tensors, all copied; the run goes on from them.
    messages: list[str] = []
    summary = train(tiny_config(tiny_dataset, tmp_path / "second", iterations=1, input_size=(72, 96),
                                init_weights=str(source)), log=messages.append)
    assert summary["iterations"] == 1
    assert any(m.startswith(f"initialised {len(trained)} of {len(trained)} tensors") for m in messages), messages

    # Fewer classes: the class-sized head starts fresh, the backbone is the trained one.
    fewer = yolact_slim(3, input_size=(96, 128), num_keypoints=17, **TINY_MODEL)
    report = init_from_checkpoint(fewer, source, "yolact_slim")
    assert "start fresh" in report and "conf_layer" in report
    name = next(k for k in trained if k.startswith("backbone") and k.endswith("weight"))
    assert torch.equal(fewer.state_dict()[name], trained[name])

    with pytest.raises(CheckpointError, match="yolact_slim weights"):
        init_from_checkpoint(fewer, source, "yolact_resnet18")


def test_export_of_a_training_checkpoint_keeps_its_classes_and_keypoint_tables(tiny_dataset: Path, tmp_path: Path):
    """Also the shipped-model release step: the weights beside the ONNX file, without optimiser state."""
    from seg_perception.core.metadata import ModelMetadata
    from seg_perception.models.checkpoint import read_checkpoint
    from seg_perception.models.yolact import yolact_slim
    from seg_perception.tools.export import main as export_main
    from seg_perception.training.shipped import write_weights
    from seg_perception.training.trainer import init_from_checkpoint, train

    train(tiny_config(tiny_dataset, tmp_path / "run", iterations=1), log=lambda _: None)
    onnx_path = tmp_path / "m.onnx"
    assert export_main([str(tmp_path / "run" / "checkpoints" / "last.pth"), "-o", str(onnx_path),
                        "--input-size", "160x120"]) == 0
    md = ModelMetadata.load(onnx_path.with_suffix(".json"))
    doc = json.loads(tiny_dataset.read_text())
    assert md.class_names == [c["name"] for c in doc["categories"]]
    assert md.keypoint_names == list(KEYPOINT_NAMES) and md.class_keypoints["box"] == [0, 1, 2, 3]
    assert (0, 1) in {tuple(e) for e in md.skeleton}
    assert (md.input_width, md.input_height) == (160, 120)

    weights = write_weights(tmp_path / "run" / "checkpoints" / "last.pth", onnx_path)
    released = read_checkpoint(weights)
    assert weights == tmp_path / "m.pth" and "optimizer" not in released
    assert released["class_keypoints"]["box"] == [0, 1, 2, 3]
    model = yolact_slim(len(md.class_names), input_size=(120, 160), num_keypoints=len(KEYPOINT_NAMES),
                        semantic_seg_head=True, **TINY_MODEL)
    n = len(model.state_dict())
    assert init_from_checkpoint(model, weights, "yolact_slim") == f"initialised {n} of {n} tensors from {weights}"
