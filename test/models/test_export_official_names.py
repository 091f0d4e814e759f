"""Official YOLACT files under the wrong ``--arch`` are refused by their model-zoo name.

im700 and base checkpoints hold the same tensors, so a strict load accepts either under
either architecture; the file name is what tells them apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seg_perception.tools.export import main, official_name_mismatch


@pytest.mark.parametrize("name,arch", [
    ("yolact_im700_54_800000.pth", "yolact_base"),
    ("yolact_im700_54_800000.pth", "yolact_resnet101"),
    ("yolact_base_54_800000.pth", "yolact_im700"),
    ("yolact_resnet50_54_800000.pth", "yolact_base"),
    ("yolact_plus_base_54_800000.pth", "yolact_base"),
    ("yolact_plus_resnet50_54_800000.pth", "yolact_plus_base"),
])
def test_a_model_zoo_file_under_another_architecture_is_refused(name, arch):
    why = official_name_mismatch(Path(name), arch)
    assert why is not None and name in why and arch in why and "--arch" in why


@pytest.mark.parametrize("name,arch", [
    ("yolact_im700_54_800000.pth", "yolact_im700"),
    ("yolact_base_54_800000.pth", "yolact_base"),
    ("yolact_base_54_800000.pth", "yolact_resnet101"),
    ("yolact_resnet50_54_800000.pth", "yolact_resnet50"),
    ("yolact_plus_base_54_800000.pth", "yolact_plus_resnet101"),
    ("yolact_plus_resnet50_54_800000.pth", "yolact_plus_resnet50"),
    ("my_weights.pth", "yolact_base"),  # renamed files are not checked
])
def test_matching_or_renamed_files_pass(name, arch):
    assert official_name_mismatch(Path(name), arch) is None


def test_export_refuses_im700_weights_under_the_550_architecture_in_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    weights = tmp_path / "yolact_im700_54_800000.pth"
    torch.save({"backbone.layers.0.0.conv1.weight": torch.zeros(1)}, weights)
    assert main([str(weights), "--arch", "yolact_base", "--classes", "coco", "-o", str(tmp_path / "x.onnx")]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "official yolact_im700 checkpoint" in text and "--arch yolact_im700" in text
    assert "Traceback" not in text and not (tmp_path / "x.onnx").exists()
