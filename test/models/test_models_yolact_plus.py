"""YOLACT++: deformable convs, official DCN placement and key names, 9 anchors, mask re-scoring."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.models_testlib import limit_torch_threads  # noqa: E402
from support.parity_testlib import listing, state_dict_from_listing  # noqa: E402

from seg_perception.core.mask_rescoring import MaskIoURescorer, crop_proto_masks  # noqa: E402
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact  # noqa: E402
from seg_perception.models import build_model, yolact_plus_resnet50, yolact_plus_resnet101  # noqa: E402
from seg_perception.models.backbones import dcn_blocks  # noqa: E402
from seg_perception.models.checkpoint import CheckpointError, load_state_dict_strict  # noqa: E402
from seg_perception.models.dcn import ModulatedDeformConv2d  # noqa: E402
from seg_perception.models.yolact_plus import (  # noqa: E402
    MaskIoUNet,
    crop_with_padding,
    maskiou_path_for,
    save_maskiou_weights,
    yolact_plus_prior_scales,
)

limit_torch_threads()


@pytest.fixture(scope="module")
def keys():
    return listing("yolact_plus")


@pytest.fixture(scope="module")
def resnet50_plus():
    return yolact_plus_resnet50(num_classes=80)


def random_dcn(stride: int) -> ModulatedDeformConv2d:
    torch.manual_seed(stride)
    dcn = ModulatedDeformConv2d(6, 5, 3, stride=stride, padding=1)
    with torch.no_grad():
        torch.nn.init.normal_(dcn.conv_offset_mask.weight, std=0.5)  # offsets of a few pixels
        torch.nn.init.normal_(dcn.conv_offset_mask.bias, std=2.0)
        torch.nn.init.normal_(dcn.bias)
    return dcn


@pytest.mark.parametrize("stride", [1, 2])
def test_exported_deformable_conv_computes_what_torchvision_computes(stride):
    dcn = random_dcn(stride)
    x = torch.randn(2, 6, 11, 13)
    with torch.no_grad():
        reference = dcn(x)  # torchvision.ops.deform_conv2d
        dcn.use_sampling = True  # the grid_sample form that goes into ONNX graphs
        sampled = dcn(x)
    assert sampled.shape == reference.shape == {1: (2, 5, 11, 13), 2: (2, 5, 6, 7)}[stride]
    torch.testing.assert_close(sampled, reference, atol=1e-5, rtol=1e-5)


def test_deformable_conv_with_zero_offsets_is_a_modulated_plain_conv():
    dcn = ModulatedDeformConv2d(4, 3, 3, padding=1)  # official init: zero offsets, mask logit 0
    with torch.no_grad():
        dcn.conv_offset_mask.bias[18:] = 2.0  # modulation sigmoid(2) everywhere
        dcn.bias.normal_()
    x = torch.randn(1, 4, 9, 9)
    expected = torch.sigmoid(torch.tensor(2.0)) * torch.nn.functional.conv2d(x, dcn.weight, padding=1)
    expected = expected + dcn.bias[None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(dcn(x), expected, atol=1e-5, rtol=1e-5)


def test_deformable_blocks_follow_the_official_dcn_layers_and_interval_rule():
    # ResNet-101 [0, 4, 23, 3], interval 3; ResNet-50 [0, 4, 6, 3], interval 1.
    assert [dcn_blocks(n, d, 3) for n, d in zip((3, 4, 23, 3), (0, 4, 23, 3))] == [
        [], [0, 3], list(range(0, 23, 3)), [0]]
    assert [dcn_blocks(n, d, 1) for n, d in zip((3, 4, 6, 3), (0, 4, 6, 3))] == [
        [], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 1, 2]]
    assert dcn_blocks(6, 2, 1) == [4, 5]  # dcn_layers counts from the end of the stage


def test_yolact_plus_has_nine_non_square_anchors_per_cell_at_official_scales(resnet50_plus):
    scales = yolact_plus_prior_scales(550)
    np.testing.assert_allclose(scales[0], [24, 24 * 2 ** (1 / 3), 24 * 2 ** (2 / 3)])
    np.testing.assert_allclose([s[0] for s in scales], [24, 48, 96, 192, 384])
    head = resnet50_plus.prediction_layers[0]
    assert head.num_anchors == 9 and head.bbox_layer.out_channels == 36
    priors = resnet50_plus.priors([(2, 2)] * 5, (550, 550), torch.device("cpu"))[:9]
    w, h = priors[:, 2], priors[:, 3]
    # aspect ratio 1/2 -> w = s * sqrt(1/2), h = s / sqrt(1/2): tall, not square (use_square_anchors=False)
    torch.testing.assert_close(w[1] / h[1], torch.tensor(0.5))
    torch.testing.assert_close(w[2] / h[2], torch.tensor(2.0))


@pytest.mark.parametrize("builder, name", [(yolact_plus_resnet50, "yolact_plus_resnet50"),
                                           (yolact_plus_resnet101, "yolact_plus_base")])
def test_official_yolact_plus_keys_load_strictly(builder, name, keys):
    model = builder(num_classes=80)
    state = state_dict_from_listing(keys[name])
    report = load_state_dict_strict(model, state, f"{name}_54_800000.pth")
    assert sorted(report.ignored) == ["semantic_seg_conv.bias", "semantic_seg_conv.weight"]
    assert len(report.loaded) == len(keys[name]) - 2
    loaded = model.state_dict()
    for key in ("backbone.layers.1.0.conv2.conv_offset_mask.weight", "backbone.layers.2.0.conv2.bias",
                "maskiou_net.maskiou_net.10.weight", "prediction_layers.0.conf_layer.bias"):
        assert torch.equal(loaded[key], state[key])


def test_listing_spot_checks_match_published_checkpoint_facts(keys):
    base, r50 = keys["yolact_plus_base"], keys["yolact_plus_resnet50"]
    assert base["prediction_layers.0.bbox_layer.weight"] == [36, 256, 3, 3]  # dbolya/yolact#579
    assert r50["maskiou_net.maskiou_net.10.weight"] == [80, 128, 1, 1]  # dbolya/yolact#492
    assert "backbone.layers.2.3.conv2.conv_offset_mask.weight" in base
    assert "backbone.layers.2.4.conv2.conv_offset_mask.weight" not in base  # interval 3
    assert "backbone.layers.2.4.conv2.conv_offset_mask.weight" in r50  # interval 1


def test_a_missing_offset_conv_is_refused_by_name(resnet50_plus, keys):
    state = state_dict_from_listing(keys["yolact_plus_resnet50"])
    del state["backbone.layers.3.2.conv2.conv_offset_mask.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): backbone\.layers\.3\.2\.conv2\.conv_offset_mask\.bias"):
        load_state_dict_strict(resnet50_plus, state, "plus.pth")


def test_a_plain_yolact_checkpoint_is_refused_with_the_dcn_keys_named(resnet50_plus):
    plain = build_model("yolact_resnet50", num_classes=80).state_dict()
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(resnet50_plus, plain, "yolact_resnet50_54_800000.pth")
    message = str(info.value)
    assert "backbone.layers.1.0.conv2.conv_offset_mask.weight" in message
    assert "prediction_layers.0.bbox_layer.weight: file has (12, 256, 3, 3), model expects (36, 256, 3, 3)" in message


def test_small_inputs_need_mask_rescoring_switched_off():
    with pytest.raises(ValueError, match="at least 256 px.*mask_rescoring=False"):
        yolact_plus_resnet50(num_classes=3, input_size=192)
    assert yolact_plus_resnet50(num_classes=3, input_size=192, mask_rescoring=False).mask_rescoring is False


def test_numpy_mask_rescoring_matches_the_pytorch_maskiou_net(resnet50_plus, tmp_path):
    torch.manual_seed(0)
    net = resnet50_plus.maskiou_net
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=0.3)
                torch.nn.init.normal_(m.bias, std=0.1)
    # The file the exporter writes beside the model, read back as the pipeline reads it.
    rescorer = MaskIoURescorer.load(save_maskiou_weights(resnet50_plus, tmp_path / "m.maskiou.npz"))
    coeffs, protos, boxes = torch.randn(6, 32), torch.relu(torch.randn(70, 66, 32)), torch.rand(6, 4)
    classes = torch.tensor([0, 1, 2, 3, 79, 0])
    masks = crop_with_padding(torch.sigmoid(torch.einsum("hwp,dp->dhw", protos, coeffs)), boxes)
    np.testing.assert_allclose(crop_proto_masks(coeffs.numpy(), protos.numpy(), boxes.numpy()), masks.numpy(), atol=1e-6)
    with torch.no_grad():
        expected = resnet50_plus.mask_iou(coeffs, protos, boxes, classes).numpy()
        torch.testing.assert_close(torch.from_numpy(expected), net(masks[:, None]).gather(1, classes[:, None])[:, 0])
    got = rescorer(coeffs.numpy(), protos.numpy(), boxes.numpy(), classes.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert rescorer.num_classes == 80 and isinstance(net, MaskIoUNet)
    assert maskiou_path_for("out/model.onnx").name == "model.maskiou.npz"


def test_rescoring_multiplies_the_kept_scores_and_reorders_them():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0.1, 0.6, 0.4, 0.9]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.1, 0.0]], np.float32)  # the third is below the threshold
    coeffs = np.zeros((3, 2), np.float32)
    protos = np.ones((8, 8, 2), np.float32)

    def rescorer(c, p, b, cls):
        assert len(c) == 2  # only the detections that passed the threshold and NMS
        return np.array([0.5, 1.0], np.float32)  # the better-scored one has the worse mask

    d = postprocess_yolact(boxes, scores, coeffs, protos, 100, 100, PostprocessParams(score_threshold=0.3),
                           mask_rescorer=rescorer)
    np.testing.assert_allclose(d.scores, [0.8, 0.45])
    np.testing.assert_allclose(d.boxes[0], [60, 60, 90, 90])
