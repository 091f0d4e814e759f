"""The YOLACT module: output contract, in-graph decoding, keypoint branch, builders."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from support.models_testlib import SMALL_INPUT, limit_torch_threads, small_yolact  # noqa: E402

from seg_perception.core.metadata import YOLACT_OUTPUTS  # noqa: E402
from seg_perception.models import MODEL_BUILDERS, build_model, yolact_im700, yolact_resnet18  # noqa: E402
from seg_perception.models.box_coder import decode_boxes, decode_keypoints  # noqa: E402
from seg_perception.models.priors import num_priors  # noqa: E402
from seg_perception.models.transform import ImageInputModel, InputNormalizer  # noqa: E402

limit_torch_threads()


@pytest.fixture(scope="module")
def model():
    return small_yolact()  # random weights, seeded: shape and contract checks only


@pytest.fixture(scope="module")
def outputs(model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, SMALL_INPUT, SMALL_INPUT, generator=gen)
    with torch.no_grad():
        return model(x), model.forward_raw(x)


def test_outputs_have_the_contract_names_and_shapes(model, outputs):
    out, _ = outputs
    sizes = [(24, 24), (12, 12), (6, 6), (3, 3), (2, 2)]  # 192 px at strides 8..128
    n = num_priors(sizes, model.prior_scales, model.aspect_ratios)
    assert list(out) == model.output_names == list(YOLACT_OUTPUTS)
    assert out["boxes"].shape == (2, n, 4)
    assert out["scores"].shape == (2, n, 3)
    assert out["mask_coeffs"].shape == (2, n, 32)
    assert out["protos"].shape == (2, 48, 48, 32)  # P3 upsampled x2, channels last
    assert out["keypoints"].shape == (2, n, 4, 3)
    assert all(v.dtype == torch.float32 for v in out.values())


def test_scores_are_softmax_without_the_background_column(outputs):
    out, raw = outputs
    full = torch.softmax(raw["conf"], dim=-1)
    torch.testing.assert_close(out["scores"], full[..., 1:])
    assert bool((out["scores"].sum(-1) < 1).all())


def test_boxes_and_keypoints_are_decoded_against_the_priors(outputs):
    out, raw = outputs
    torch.testing.assert_close(out["boxes"], decode_boxes(raw["loc"], raw["priors"]))
    torch.testing.assert_close(out["keypoints"], decode_keypoints(raw["keypoints"], raw["priors"]))
    assert bool(((out["keypoints"][..., 2] >= 0) & (out["keypoints"][..., 2] <= 1)).all())


def test_coefficients_are_tanh_and_prototypes_relu(outputs):
    out, _ = outputs
    assert float(out["mask_coeffs"].abs().max()) <= 1.0
    assert float(out["protos"].min()) >= 0.0


def test_keypoint_with_zero_offsets_sits_on_its_prior_centre(model):
    sizes = [(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)]  # any feature sizes will do
    priors = model.priors(sizes, (SMALL_INPUT, SMALL_INPUT), torch.device("cpu"))
    raw = torch.zeros(1, priors.shape[0], 4, 3)
    kp = decode_keypoints(raw, priors)
    torch.testing.assert_close(kp[0, :, 0, :2], priors[:, :2])
    torch.testing.assert_close(kp[0, :, :, 2], torch.full((priors.shape[0], 4), 0.5))


def test_model_without_keypoints_has_no_keypoint_output_or_layer():
    torch.manual_seed(0)
    m = yolact_resnet18(num_classes=2, input_size=128).eval()
    with torch.no_grad():
        out = m(torch.zeros(1, 3, 128, 128))
    assert "keypoints" not in out and m.output_names == ["boxes", "scores", "mask_coeffs", "protos"]
    assert not any("keypoint" in k for k in m.state_dict())


def test_image_input_wrapper_normalises_uint8_nhwc_like_the_metadata_says():
    norm = InputNormalizer((100.0, 110.0, 120.0), (10.0, 20.0, 40.0))
    img = torch.tensor([[[[110, 130, 200]]]], dtype=torch.uint8)  # (1, 1, 1, 3) RGB
    torch.testing.assert_close(norm(img).flatten(), torch.tensor([1.0, 1.0, 2.0]))


def test_wrapper_output_tuple_equals_forward_on_normalised_input(model):
    mean, std = (123.68, 116.78, 103.94), (58.40, 57.12, 57.38)
    wrapper = ImageInputModel(model, mean, std).eval()
    gen = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (1, SMALL_INPUT, SMALL_INPUT, 3), dtype=torch.uint8, generator=gen)
    x = (img.permute(0, 3, 1, 2).float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        wrapped = wrapper(img)
        direct = model(x)
    for name, value in zip(wrapper.output_names, wrapped):
        torch.testing.assert_close(value, direct[name])


def test_training_outputs_include_raw_logits_and_semantic_head():
    torch.manual_seed(0)
    m = yolact_resnet18(num_classes=2, input_size=128, semantic_seg_head=True).train()
    raw = m.forward_raw(torch.randn(2, 3, 128, 128))
    assert raw["conf"].shape[-1] == 3  # background + 2 classes, logits
    assert raw["semantic"].shape == (2, 2, 16, 16)
    loss = raw["loc"].abs().mean() + raw["conf"].logsumexp(-1).mean() + raw["semantic"].mean()
    loss.backward()  # priors from the cache must not break autograd
    assert m.prediction_layers[0].bbox_layer.weight.grad is not None


def test_builders_record_architecture_and_official_input_sizes():
    assert set(MODEL_BUILDERS) >= {"yolact_resnet18", "yolact_resnet50", "yolact_resnet101", "yolact_im700"}
    m = yolact_im700(num_classes=80)
    assert m.architecture == "yolact_im700" and m.input_size == (700, 700)
    assert [s[0] for s in m.prior_scales] == [30.0, 61.0, 122.0, 244.0, 488.0]
    small = build_model("yolact_resnet18", num_classes=5)
    assert small.input_size == (384, 384) and small.fpn.lat_layers[0].out_channels == 128
    assert small.build_kwargs["num_classes"] == 5


def test_unknown_architecture_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown model architecture 'yolact_vgg'.*yolact_resnet50"):
        build_model("yolact_vgg")
