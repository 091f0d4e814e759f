"""CenterMask(-Lite): VoVNet/ResNet trunks, centermask2 key names, FCOS in the graph, RoI heads."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.models_testlib import limit_torch_threads  # noqa: E402
from support.parity_testlib import listing, small_centermask, state_dict_from_listing  # noqa: E402
from torchvision.ops import batched_nms  # noqa: E402

from seg_perception.core.metadata import ROI_OUTPUTS  # noqa: E402
from seg_perception.models import (  # noqa: E402
    MODEL_BUILDERS,
    centermask_lite_vovnet19,
    centermask_lite_vovnet19_slim_dw,
    centermask_lite_vovnet39,
    centermask_resnet50,
    centermask_vovnet57,
)
from seg_perception.models.checkpoint import CheckpointError, load_state_dict_strict  # noqa: E402
from seg_perception.models.export import metadata_for_model  # noqa: E402
from seg_perception.models.fcos import FCOS, level_locations  # noqa: E402
from seg_perception.models.roi_heads import (  # noqa: E402
    KeypointHead,
    RoIPooler,
    SpatialAttention,
    assign_levels_by_ratio,
)
from seg_perception.models.vovnet import VoVNet  # noqa: E402

limit_torch_threads()


@pytest.fixture(scope="module")
def keys():
    return listing("centermask")


@pytest.fixture(scope="module")
def lite():
    return centermask_lite_vovnet19_slim_dw(num_classes=80)


def test_builders_are_registered_under_their_names():
    for name in ("centermask_lite_vovnet19", "centermask_lite_vovnet19_slim", "centermask_lite_vovnet19_slim_dw",
                 "centermask_lite_vovnet39",
                 "centermask_vovnet39", "centermask_vovnet57", "centermask_resnet50",
                 "centermask_lite_vovnet19_slim_dw_320", "yolact_plus_resnet50", "yolact_plus_resnet101"):
        assert name in MODEL_BUILDERS
    small = MODEL_BUILDERS["centermask_lite_vovnet19_slim_dw_320"](num_classes=3)
    assert small.input_size == (320, 320) and small.architecture == "centermask_lite_vovnet19_slim_dw_320"


@pytest.mark.parametrize("body, widths", [
    ("V-19-slim-dw-eSE", (112, 256, 384, 512)),
    ("V-39-eSE", (256, 512, 768, 1024)),
])
def test_vovnet_stages_have_the_spec_widths_and_strides(body, widths):
    net = VoVNet(body, ("stage2", "stage3", "stage4", "stage5")).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    for i, name in enumerate(("stage2", "stage3", "stage4", "stage5")):
        stride = 4 * 2 ** i
        assert out[name].shape == (1, widths[i], 64 // stride, 96 // stride)
        assert net.strides[name] == stride


def test_vovnet_depthwise_and_identity_layout_follows_centermask2():
    names = set(VoVNet("V-19-slim-dw-eSE").state_dict())
    assert "stem.stem_2/dw_conv3x3.weight" in names and "stem.stem_2/pw_norm.running_var" in names
    assert "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight" in names  # 112 -> 80 channels
    assert "stage2.OSA2_1.conv_reduction.OSA2_1_reduction_0/conv.weight" not in names  # 64 == 64
    v39 = VoVNet("V-39-eSE")
    assert not v39.stage4.OSA4_1.identity and v39.stage4.OSA4_2.identity  # shortcut after the first module


@pytest.mark.parametrize("builder, name", [
    (centermask_lite_vovnet19_slim_dw, "centermask_lite_V_19_slim_dw_eSE"),
    (centermask_lite_vovnet19, "centermask_lite_V_19_eSE"),
    (centermask_lite_vovnet39, "centermask_lite_V_39_eSE"),
    (centermask_vovnet57, "centermask_V_57_eSE"),
    (centermask_resnet50, "centermask_R_50"),
])
def test_centermask2_checkpoint_keys_load_strictly(builder, name, keys):
    model = builder(num_classes=80)
    state = state_dict_from_listing(keys[name])
    state["pixel_mean"] = torch.zeros(3, 1, 1)  # detectron2 may save its normalisation buffers
    state["pixel_std"] = torch.ones(3, 1, 1)
    report = load_state_dict_strict(model, state, f"{name}.pth")
    assert sorted(report.ignored) == ["pixel_mean", "pixel_std"]
    assert len(report.loaded) == len(keys[name])
    assert all(k.endswith("num_batches_tracked") for k in report.defaulted)  # FrozenBN has none
    loaded = model.state_dict()
    for key in ("proposal_generator.fcos_head.scales.4.scale", "roi_heads.maskiou_head.maskiou.weight",
                "roi_heads.mask_head.spatialAtt.conv.weight", "backbone.top_block.p7.bias"):
        assert torch.equal(loaded[key], state[key])


def test_wrong_class_count_and_missing_keys_are_named(lite, keys):
    state = state_dict_from_listing(keys["centermask_lite_V_19_slim_dw_eSE"])
    state["roi_heads.mask_head.predictor.weight"] = torch.zeros(3, 128, 1, 1)
    del state["backbone.bottom_up.stage4.OSA4_1.ese.fc.bias"]
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(lite, state, "lite.pth")
    message = str(info.value)
    assert "missing keys (1): backbone.bottom_up.stage4.OSA4_1.ese.fc.bias" in message
    assert "roi_heads.mask_head.predictor.weight: file has (3, 128, 1, 1), model expects (80, 128, 1, 1)" in message


def test_level_assignment_is_centermask_ratio_rule():
    image_area = 512.0 * 512.0
    side = np.array([512, 400, 300, 256, 200, 100, 10])  # square boxes
    boxes = torch.tensor([[0, 0, s, s] for s in side], dtype=torch.float32)
    levels = assign_levels_by_ratio(boxes, image_area, 3, 5) + 3
    expected = [min(5, max(3, math.ceil(5 - math.log2(image_area / s ** 2)))) for s in side]
    assert levels.tolist() == expected == [5, 5, 4, 3, 3, 3, 3]


def test_pooler_takes_each_box_from_its_own_level():
    feats = [torch.full((1, 2, 64 // s, 64 // s), float(s)) for s in (8, 16, 32)]
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 20.0, 20.0]]])
    pooled = RoIPooler(7, (8, 16, 32))(feats, boxes, (64, 64))
    assert pooled.shape == (3, 2, 7, 7)
    assert pooled[:, 0, 3, 3].tolist() == [32.0, 16.0, 8.0]  # P5, P4, P3


def test_spatial_attention_gates_by_channel_mean_and_max():
    sam = SpatialAttention()
    x = torch.randn(2, 5, 6, 6)
    stats = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True).values], 1)
    torch.testing.assert_close(sam(x), x * torch.sigmoid(torch.nn.functional.conv2d(stats, sam.conv.weight, padding=1)))


def test_keypoint_head_makes_56px_heatmaps_with_coco_17_by_default():
    head = KeypointHead(16, conv_dims=(8, 8))
    assert head(torch.randn(3, 16, 14, 14)).shape == (3, 17, 56, 56)
    assert {"conv_fcn1.weight", "conv_fcn2.bias", "score_lowres.weight"} <= set(head.state_dict())


def reference_fcos(fcos: FCOS, logits, regs, ctrs):
    """centermask2's FCOSOutputs inference, written out with data-dependent shapes."""
    boxes, scores, classes = [], [], []
    for lg, rg, ct, stride in zip(logits, regs, ctrs, fcos.strides):
        h, w = lg.shape[-2:]
        prob = torch.sigmoid(lg[0]).permute(1, 2, 0).reshape(-1, fcos.num_classes)
        ctr = torch.sigmoid(ct[0]).reshape(-1)
        cand = prob > fcos.pre_nms_thresh
        s = (prob * ctr[:, None])[cand]
        loc, cls = cand.nonzero(as_tuple=True)
        if s.numel() > fcos.pre_nms_topk:
            s, idx = s.topk(fcos.pre_nms_topk)
            loc, cls = loc[idx], cls[idx]
        xy = level_locations(h, w, stride)[loc]
        r = rg[0].permute(1, 2, 0).reshape(-1, 4)[loc] * stride
        boxes.append(torch.cat([xy - r[:, :2], xy + r[:, 2:]], 1))
        scores.append(torch.sqrt(s))
        classes.append(cls)
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    keep = batched_nms(boxes, scores, classes, fcos.nms_thresh)[: fcos.post_nms_topk]
    return boxes[keep], scores[keep], classes[keep]


def test_in_graph_fcos_postprocessing_equals_the_data_dependent_reference():
    torch.manual_seed(0)
    fcos = FCOS(32, 4, (8, 16, 32, 64, 128), pre_nms_topk=30, post_nms_topk=12)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    logits = [torch.randn(1, 4, h, w) * 2 - 2 for h, w in sizes]
    regs = [torch.rand(1, 4, h, w) * 3 for h, w in sizes]
    ctrs = [torch.randn(1, 1, h, w) for h, w in sizes]
    boxes, scores, classes = fcos.detect(logits, regs, ctrs)
    ref_boxes, ref_scores, ref_classes = reference_fcos(fcos, logits, regs, ctrs)
    n = len(ref_scores)
    assert boxes.shape == (1, 12, 4) and 0 < n <= 12
    torch.testing.assert_close(scores[0, :n], ref_scores)
    torch.testing.assert_close(boxes[0, :n], ref_boxes)
    assert classes[0, :n].tolist() == ref_classes.tolist()
    assert (scores[0, n:] == 0).all()  # padding


def test_outputs_follow_the_roi_contract():
    model = small_centermask("centermask_lite_vovnet19_slim_dw", 64, detections_per_image=6, num_keypoints=2,
                             keypoint_conv_dims=[16])
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64) * 50)
    assert list(out) == model.output_names == list(ROI_OUTPUTS)
    assert out["boxes"].shape == (2, 6, 4) and out["scores"].shape == out["classes"].shape == (2, 6)
    assert out["masks"].shape == (2, 6, 28, 28) and out["keypoint_heatmaps"].shape == (2, 6, 2, 56, 56)
    assert bool(((out["masks"] >= 0) & (out["masks"] <= 1)).all())
    assert torch.equal(out["classes"], out["classes"].round()) and out["classes"].max() < 3
    md = metadata_for_model(model, "m", ["a", "b", "c"], ["k1", "k2"])
    assert (md.output_format, md.num_prototypes, md.mean, md.std) == (
        "roi", 0, (123.675, 116.28, 103.53), (1.0, 1.0, 1.0))


def test_input_sizes_must_be_multiples_of_32():
    with pytest.raises(ValueError, match="multiple of 32 px per side, got 330x320"):
        centermask_lite_vovnet19_slim_dw(num_classes=3, input_size=(320, 330))
    assert centermask_lite_vovnet19_slim_dw(num_classes=3, input_size=(480, 640)).input_size == (480, 640)
