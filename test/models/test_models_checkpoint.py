"""Checkpoints: official YOLACT keys load strictly, mismatches are named, pickles stay inert."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from support.models_testlib import limit_torch_threads  # noqa: E402

from seg_perception.models import yolact_resnet18, yolact_resnet50, yolact_resnet101  # noqa: E402
from seg_perception.models.checkpoint import (  # noqa: E402
    CheckpointError,
    checkpoint_model_spec,
    load_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)

limit_torch_threads()
FIXTURE = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "official_yolact_keys.json"


@pytest.fixture(scope="module")
def official_keys():
    return json.loads(FIXTURE.read_text())


def state_dict_from_listing(listing: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Tensors of the listed shapes with recognisable values (index of the key)."""
    out = {}
    for i, (key, shape) in enumerate(listing.items()):
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        out[key] = torch.full(shape, float(i % 97), dtype=dtype)
    return out


@pytest.fixture(scope="module")
def resnet50_model():
    return yolact_resnet50(num_classes=80)


def test_official_listing_spot_checks_match_published_checkpoint_facts(official_keys):
    base = official_keys["yolact_base"]
    assert base["prediction_layers.0.conf_layer.weight"] == [243, 256, 3, 3]  # 3 priors x 81 classes
    assert base["prediction_layers.0.bbox_layer.weight"] == [12, 256, 3, 3]
    assert base["prediction_layers.0.mask_layer.weight"] == [96, 256, 3, 3]
    assert base["semantic_seg_conv.weight"] == [80, 256, 1, 1]
    assert base["fpn.lat_layers.0.weight"] == [256, 2048, 1, 1]
    assert base["proto_net.10.weight"] == [32, 256, 1, 1]
    assert base["backbone.layers.2.22.conv3.weight"] == [1024, 256, 1, 1]  # 23 blocks in ResNet-101 stage 3
    assert "backbone.layers.2.6.conv1.weight" not in official_keys["yolact_resnet50"]


@pytest.mark.parametrize(
    "builder, listing",
    [(yolact_resnet50, "yolact_resnet50"), (yolact_resnet101, "yolact_base")],
)
def test_official_checkpoint_keys_load_strictly(builder, listing, official_keys):
    model = builder(num_classes=80)
    state = state_dict_from_listing(official_keys[listing])
    report = load_state_dict_strict(model, state, f"{listing}_54_800000.pth")
    assert sorted(report.ignored) == ["semantic_seg_conv.bias", "semantic_seg_conv.weight"]
    assert len(report.loaded) == len(official_keys[listing]) - 2
    loaded = model.state_dict()
    for key in ("fpn.lat_layers.2.weight", "proto_net.8.bias", "prediction_layers.0.conf_layer.bias"):
        assert torch.equal(loaded[key], state[key])


def test_training_head_is_loaded_when_the_model_has_it(official_keys):
    model = yolact_resnet50(num_classes=80, semantic_seg_head=True)
    report = load_state_dict_strict(model, state_dict_from_listing(official_keys["yolact_resnet50"]))
    assert report.ignored == [] and "semantic_seg_conv.weight" in report.loaded


def test_files_without_num_batches_tracked_still_load(resnet50_model, official_keys):
    state = {k: v for k, v in state_dict_from_listing(official_keys["yolact_resnet50"]).items()
             if not k.endswith("num_batches_tracked")}
    report = load_state_dict_strict(resnet50_model, state)
    assert report.defaulted and all(k.endswith("num_batches_tracked") for k in report.defaulted)


def test_legacy_keys_the_official_loader_drops_are_ignored(resnet50_model, official_keys):
    state = state_dict_from_listing(official_keys["yolact_resnet50"])
    state["backbone.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    state["fpn.downsample_layers.2.weight"] = torch.zeros(256, 256, 3, 3)
    report = load_state_dict_strict(resnet50_model, state)
    assert "backbone.layer1.0.conv1.weight" in report.ignored
    assert "fpn.downsample_layers.2.weight" in report.ignored


def test_unexpected_key_is_refused_by_name(resnet50_model, official_keys):
    state = state_dict_from_listing(official_keys["yolact_resnet50"])
    state["prediction_layers.0.bogus_layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"weights\.pth.*\n.*unexpected keys \(1\): prediction_layers\.0\.bogus_layer\.weight"):
        load_state_dict_strict(resnet50_model, state, "weights.pth")


def test_missing_key_is_refused_by_name(resnet50_model, official_keys):
    state = state_dict_from_listing(official_keys["yolact_resnet50"])
    del state["proto_net.4.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): proto_net\.4\.bias"):
        load_state_dict_strict(resnet50_model, state, "weights.pth")


def test_wrong_shape_is_refused_with_both_shapes(resnet50_model, official_keys):
    state = state_dict_from_listing(official_keys["yolact_resnet50"])
    state["prediction_layers.0.conf_layer.weight"] = torch.zeros(12, 256, 3, 3)  # a 3-class model
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(resnet50_model, state, "custom.pth")
    message = str(info.value)
    assert "prediction_layers.0.conf_layer.weight: file has (12, 256, 3, 3), model expects (243, 256, 3, 3)" in message


def test_a_refused_load_leaves_the_model_untouched(official_keys):
    model = yolact_resnet50(num_classes=80)
    before = model.state_dict()["proto_net.0.bias"].clone()
    state = state_dict_from_listing(official_keys["yolact_resnet50"])
    state["fpn.pred_layers.0.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError):
        load_state_dict_strict(model, state)
    assert torch.equal(model.state_dict()["proto_net.0.bias"], before)


class _CreatesFile:
    """Unpickling this would run ``open(path, "w")``: a stand-in for arbitrary code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    payload = {"backbone.conv1.weight": torch.zeros(1), "x": _CreatesFile(str(marker))}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(payload, f)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*evil\.pth.*weights_only"):
        read_checkpoint(evil)
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    with pytest.raises(CheckpointError):
        load_checkpoint(yolact_resnet18(num_classes=1, input_size=64), evil)
    assert not marker.exists()


def test_missing_empty_truncated_and_garbage_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*nope\.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth is empty"):
        read_checkpoint(empty)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(1000.0)}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth is truncated or corrupt"):
        read_checkpoint(truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        read_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not a file"):
        read_checkpoint(tmp_path)


def test_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=r"list\.pth holds no state dict"):
        load_checkpoint(yolact_resnet18(num_classes=1, input_size=64), path)


def test_our_checkpoint_round_trips_with_its_model_spec(tmp_path):
    torch.manual_seed(3)
    model = yolact_resnet18(num_classes=2, input_size=128, num_keypoints=3)
    path = save_checkpoint(model, tmp_path / "ckpt.pth")
    checkpoint = read_checkpoint(path)
    arch, kwargs = checkpoint_model_spec(checkpoint)
    assert arch == "yolact_resnet18" and kwargs["num_keypoints"] == 3 and kwargs["input_size"] == [128, 128]
    torch.manual_seed(4)
    clone = yolact_resnet18(**kwargs)
    load_checkpoint(clone, path)
    for key, value in model.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key


def test_dataparallel_prefix_is_stripped(tmp_path):
    model = yolact_resnet18(num_classes=1, input_size=64)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "dp.pth")
    load_checkpoint(yolact_resnet18(num_classes=1, input_size=64), tmp_path / "dp.pth")
