"""CenterMask training: FCOS assignment, the losses, and a short run through ``train`` that learns and exports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pycocotools")

from seg_perception.synth import KEYPOINT_NAMES  # noqa: E402
from seg_perception.training.augment import TrainAugment  # noqa: E402
from seg_perception.training.centermask_losses import (  # noqa: E402
    CenterMaskLossConfig,
    centerness_targets,
    centermask_losses,
    fcos_targets,
    keypoint_targets,
    mask_inside_ratio,
    mask_targets,
    maskiou_targets,
    select_rois,
)
from seg_perception.training.dataset import CocoInstanceDataset, collate  # noqa: E402

STRIDES = (8, 16, 32, 64, 128)
INPUT = (96, 128)  # (H, W): multiples of 32, as CenterMask needs
# Narrow heads keep the tests fast (the VoVNet trunk has fixed widths); 64 FPN channels, not 32:
# GroupNorm(32) of a 1 x 1 P7 needs at least two channels per group.
SMALL = {"fpn_channels": 64, "mask_conv_dim": 32, "maskiou_conv_dim": 32, "keypoint_conv_dims": [32],
         "detections_per_image": 20}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seg_perception.synth import write_coco_dataset

    return write_coco_dataset(tmp_path_factory.mktemp("synth"), n_images=4, seed=3, width=128, height=96)


def small_model(num_classes: int = 7, num_keypoints: int = len(KEYPOINT_NAMES)):
    from seg_perception.models.registry import build_model

    torch.manual_seed(0)
    return build_model("centermask_lite_vovnet19_slim_dw", num_classes=num_classes, input_size=INPUT,
                       num_keypoints=num_keypoints, **SMALL).train()


def locations_for(height: int, width: int) -> list:
    from seg_perception.models.fcos import level_locations

    return [level_locations(-(-height // s), -(-width // s), s) for s in STRIDES]


def level_of(index: int, locations: list) -> int:
    ends = np.cumsum([len(lv) for lv in locations])
    return int(np.searchsorted(ends, index, side="right"))


def test_a_box_lands_on_the_level_of_its_size_with_stride_units():
    locs = locations_for(256, 256)
    # 192 px box centred at 128: the centre locations reach 96-104 px to the sides -> P4 ([64, 128]).
    labels, ltrb, gt = fcos_targets(locs, STRIDES, torch.tensor([[32.0, 32.0, 224.0, 224.0]]), torch.tensor([3]))
    pos = torch.nonzero(labels >= 0).flatten()
    assert {level_of(int(i), locs) for i in pos} == {1}
    # Centre sampling (1.5 strides = 24 px around the centre): the 2 x 2 P4 cells at 120 and 136.
    xy = torch.cat(locs)[pos]
    assert sorted(set(xy[:, 0].tolist())) == [120.0, 136.0] and len(pos) == 4
    assert (labels[pos] == 3).all() and (gt[pos] == 0).all()
    at_120 = pos[(xy[:, 0] == 120) & (xy[:, 1] == 120)][0]
    torch.testing.assert_close(ltrb[at_120], torch.tensor([88.0, 88.0, 104.0, 104.0]) / 16)
    # A location outside every box is a negative with zero regression target.
    corner = 0  # P3 cell at (4, 4)
    assert labels[corner] == -1 and gt[corner] == -1 and (ltrb[corner] == 0).all()


def test_a_small_box_goes_to_p3_and_the_smaller_of_two_boxes_wins():
    locs = locations_for(256, 256)
    boxes = torch.tensor([[84.0, 84.0, 164.0, 164.0], [104.0, 104.0, 144.0, 144.0]])  # nested, centred at (124, 124)
    labels, _, gt = fcos_targets(locs, STRIDES, boxes, torch.tensor([0, 1]))
    pos = torch.nonzero(labels >= 0).flatten()
    assert {level_of(int(i), locs) for i in pos} == {0}
    centre = int(torch.nonzero((torch.cat(locs) == torch.tensor([124.0, 124.0])).all(dim=1))[0])
    assert labels[centre] == 1 and gt[centre] == 1  # the 40 px box, not the 80 px one
    # Without centre sampling any location inside the box may be a positive, not just those near its centre.
    cfg = CenterMaskLossConfig(center_sample_radius=0)
    narrow, _, _ = fcos_targets(locs, STRIDES, boxes[:1], torch.tensor([0]))
    wide, _, _ = fcos_targets(locs, STRIDES, boxes[:1], torch.tensor([0]), cfg)
    xy = torch.cat(locs)[wide >= 0]
    assert int((wide >= 0).sum()) > int((narrow >= 0).sum())
    assert bool(((xy > 84) & (xy < 164)).all())


def test_centerness_is_one_at_the_centre_and_falls_towards_the_edges():
    # Locations along the row through the centre of a 80 px box, at 0, 10, 20, 30, 39 px from it.
    d = torch.tensor([0.0, 10.0, 20.0, 30.0, 39.0])
    ltrb = torch.stack([40 + d, torch.full_like(d, 40), 40 - d, torch.full_like(d, 40)], dim=1)
    c = centerness_targets(ltrb)
    assert float(c[0]) == pytest.approx(1.0)
    assert bool((c[1:] < c[:-1]).all()) and float(c[-1]) < 0.2
    assert float(centerness_targets(torch.tensor([[1.0, 3.0, 3.0, 1.0]]))[0]) == pytest.approx(1 / 3)


def test_roi_targets_masks_keypoints_and_proposal_matching():
    masks = torch.zeros((1, 32, 32), dtype=torch.uint8)
    masks[0, 8:24, 8:16] = 1  # left half of the box 8..24
    t = mask_targets(masks, torch.tensor([[8.0, 8.0, 24.0, 24.0]]), 28)
    assert t.shape == (1, 28, 28) and bool((t[0, :, :13] == 1).all()) and bool((t[0, :, 15:] == 0).all())
    # A perfect prediction has IoU 1; the same 28 x 28 prediction on a box holding half the object, 1/2.
    logits = t * 20 - 10
    torch.testing.assert_close(maskiou_targets(logits, t, torch.tensor([1.0])), torch.tensor([1.0]))
    torch.testing.assert_close(maskiou_targets(logits, t, torch.tensor([0.5])), torch.tensor([0.5]))
    # The share of a mask inside a box (summed-area tables) equals a direct count of pixel centres.
    rand = (torch.rand(2, 40, 50, generator=torch.Generator().manual_seed(0)) > 0.6).to(torch.uint8)
    boxes = torch.tensor([[3.2, 4.7, 30.1, 22.5], [-5.0, -5.0, 60.0, 60.0], [10.0, 10.0, 10.2, 10.2]])
    which = torch.tensor([0, 1, 0])
    xs, ys = torch.arange(50) + 0.5, torch.arange(40) + 0.5
    direct = [float((rand[i] * ((ys >= b[1]) & (ys <= b[3]))[:, None] * ((xs >= b[0]) & (xs <= b[2]))[None]).sum()
                    / rand[i].sum()) for b, i in zip(boxes, which)]
    assert mask_inside_ratio(rand, boxes, which).tolist() == pytest.approx(direct)
    kps = torch.tensor([[[16.0, 16.0, 2.0], [30.0, 16.0, 2.0], [24.0, 24.0, 1.0], [10.0, 10.0, 0.0]]])
    cells, valid = keypoint_targets(kps, torch.tensor([[8.0, 8.0, 24.0, 24.0]]), 56)
    assert valid.tolist() == [[True, False, True, False]]  # outside the box; unlabelled
    assert int(cells[0, 0]) == 28 * 56 + 28 and int(cells[0, 2]) == 55 * 56 + 55  # far edge -> last cell
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposals = torch.tensor([[0.0, 0.0, 9.0, 10.0], [5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 11.0]])
    boxes, index = select_rois(gt, proposals, torch.tensor([0.3, 0.9, 0.0]), CenterMaskLossConfig())
    assert len(boxes) == 2 and index.tolist() == [0, 0]  # the GT, the 0.9-IoU proposal; not IoU 0.14 nor padding


def test_losses_are_finite_and_positive_for_a_real_batch(tiny_dataset: Path):
    from seg_perception.training.trainer import input_normalisation, normalise

    ds = CocoInstanceDataset(tiny_dataset, transform=TrainAugment(INPUT, KEYPOINT_NAMES))
    images, targets = collate([ds[0], ds[1]])
    model = small_model()
    x = normalise(images, torch.device("cpu"), *input_normalisation(model))
    losses = centermask_losses(model, model.forward_train(x), targets)
    assert set(losses) == {"class", "box", "centerness", "mask", "maskiou", "keypoint"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    assert losses["keypoint"].item() == pytest.approx(math.log(56 * 56), rel=0.1)  # untrained: near uniform


def test_an_image_without_objects_or_with_only_a_crowd_gives_finite_losses_and_gradients():
    model = small_model(num_classes=3, num_keypoints=2)
    x = torch.randn(2, 3, *INPUT) * 50
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros((0, *INPUT), dtype=torch.uint8), "keypoints": torch.zeros((0, 2, 3)),
             "iscrowd": torch.zeros(0, dtype=torch.bool)}
    crowd = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1]),
             "masks": torch.ones((1, *INPUT), dtype=torch.uint8), "keypoints": torch.zeros((1, 2, 3)),
             "iscrowd": torch.tensor([True])}
    losses = centermask_losses(model, model.forward_train(x), [empty, crowd])
    assert set(losses) == {"class", "box", "centerness", "mask", "maskiou", "keypoint"}
    assert losses["class"].item() > 0
    assert all(losses[k].item() == 0.0 for k in ("box", "centerness", "mask", "maskiou", "keypoint"))
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_short_run_lowers_the_loss_resumes_and_exports_for_onnxruntime(tiny_dataset: Path, tmp_path: Path):
    from seg_perception.core.metadata import ModelMetadata
    from seg_perception.models.centermask import D2_MEAN_RGB
    from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from seg_perception.training.trainer import TrainConfig, train

    common = dict(
        train_annotations=str(tiny_dataset), out_dir=str(tmp_path / "run"), val_annotations=str(tiny_dataset),
        architecture="centermask_lite_vovnet19_slim_dw_320", input_size=INPUT, model_kwargs=SMALL, batch_size=2,
        lr=3e-3, warmup_iterations=0, checkpoint_every=20, eval_every=1000, eval_images=2, log_every=5,
        workers=0, seed=0, threads=1, progress=False,
    )
    summary = train(TrainConfig(iterations=60, export_path=str(tmp_path / "m.onnx"), **common), log=lambda _: None)
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    totals = [e["total"] for e in entries if e["kind"] == "train"]
    assert len(totals) == 12 and all(np.isfinite(totals))
    first, last = entries[0]["losses"], [e for e in entries if e["kind"] == "train"][-1]["losses"]
    assert set(first) == {"class", "box", "centerness", "mask", "maskiou", "keypoint"}
    assert np.mean(totals[-2:]) < 0.8 * np.mean(totals[:2]), totals
    assert all(last[k] < 0.9 * first[k] for k in ("class", "box", "mask", "keypoint")), (first, last)
    assert any(e["kind"] == "eval" for e in entries)  # torch_predictor ran the roi post-processing
    assert (tmp_path / "run" / "checkpoints" / "last.pth").exists()
    assert summary["iterations"] == 60

    md = ModelMetadata.load(tmp_path / "m.json")
    assert md.output_format == "roi" and md.architecture == "centermask_lite_vovnet19_slim_dw_320"
    assert md.mean == pytest.approx(D2_MEAN_RGB) and md.std == pytest.approx((1.0, 1.0, 1.0))
    assert (md.input_height, md.input_width) == INPUT and md.num_keypoints == len(KEYPOINT_NAMES)
    out = OnnxRuntimeBackend(tmp_path / "m.onnx", threads=1).infer(np.zeros((1, *INPUT, 3), np.uint8))
    assert out["masks"].shape == (1, 20, 28, 28) and out["keypoint_heatmaps"].shape[:3] == (1, 20, len(KEYPOINT_NAMES))

    messages: list[str] = []
    resumed = train(TrainConfig(iterations=62, resume=True, **{**common, "val_annotations": None}),
                    log=messages.append)
    assert resumed["iterations"] == 62
    assert any("resumed" in m and "iteration 60" in m for m in messages)
