"""Bad files a new user hands to the tools (issue 13, item 4): one line naming the file, the
problem and what is expected; a non-zero exit; no traceback; nothing written."""

from __future__ import annotations

import pytest

from support.realdata_testlib import labelme_style_coco


def cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    from seg_perception.tools.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("content, expected", [
    (b"hello, this is not a checkpoint\n", "a text file (it starts with 'hello, t')"),
    (bytes(range(7, 250)) * 4, "neither a zip archive nor a pickle (it starts with bytes 07 08"),
    (b"\x80\x02" + bytes(range(200, 256)) * 8, "Unsupported operand 200"),  # a pickle torch refuses: the reason, whole
])
def test_export_of_a_file_that_is_not_a_checkpoint_says_what_is_expected(tmp_path, capsys, content, expected):
    pytest.importorskip("torch")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(content)
    code, out, err = cli(capsys, "export", weights, "--arch", "yolact_slim", "-o", tmp_path / "out.onnx")
    line = error_line(err)
    assert code != 0 and str(weights) in line and expected in line, line
    assert not line.rstrip().endswith(":") and "Please file an issue" not in line
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("model_content, expected", [
    (None, "ONNX model not found"),
    (b"this is text, not ONNX\n", "could not load ONNX model"),
])
def test_evaluate_with_a_missing_or_invalid_model_is_one_line(tmp_path, capsys, model_content, expected):
    pytest.importorskip("onnxruntime")
    gt = labelme_style_coco(tmp_path / "data")
    model = tmp_path / "model.onnx"
    if model_content is not None:
        model.write_bytes(model_content)
    code, out, err = cli(capsys, "evaluate", "--model", model, "--annotations", gt)
    line = error_line(err)
    assert code == 2 and expected in line and str(model) in line, line


def test_evaluate_with_a_missing_annotation_file_is_one_line(tmp_path, capsys, known_answer_model):
    code, out, err = cli(capsys, "evaluate", "--model", known_answer_model, "--annotations", tmp_path / "gt.json")
    line = error_line(err)
    assert code == 2 and "annotation file not found" in line and str(tmp_path / "gt.json") in line


def test_an_im700_checkpoint_is_refused_under_the_550_px_architecture(tmp_path, capsys):
    """Issue 13, item 5: the official im700 weights fit yolact_base's tensors exactly, so only the
    file name can tell; exported as yolact_base they ran at 550 px with the wrong anchors."""
    torch = pytest.importorskip("torch")
    weights = tmp_path / "yolact_im700_54_800000.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, weights)
    code, out, err = cli(capsys, "export", weights, "--arch", "yolact_base", "--classes", "coco",
                         "-o", tmp_path / "out.onnx")
    line = error_line(err)
    assert code != 0 and "is the official yolact_im700 checkpoint, not yolact_base" in line
    assert "use --arch yolact_im700" in line and not (tmp_path / "out.onnx").exists()
