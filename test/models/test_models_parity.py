"""Every YOLACT++ and CenterMask architecture: exported ONNX on ONNX Runtime == PyTorch, on real images.

Random seeded weights, explicitly (``parity_testlib``): the tests compare two executions
of the same network, so accuracy does not matter, but the inputs are real camera
frames (the hsr_people recording) and scikit-image photographs, so activations have
realistic statistics (CenterMask's test weights are BatchNorm-calibrated on the very
pictures each case runs, so activations stay near unit scale on them). Inputs are small
(64-256 px) to keep the suite fast; the graphs are the full architectures (every
layer, full widths) except where a case says otherwise. "Same detections" is made well
posed by a score threshold half-way between two scores (``threshold_in_a_gap``); then
the detections must agree in number and class, boxes within 0.5 source pixels, masks
with IoU >= 0.99.

Marked ``slow`` (5-20 s per architecture on two shared cores: most of it is tracing,
serialising and loading graphs of up to 200 MB); ``pytest -m "not slow"`` skips them.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from support.models_testlib import hsr_frames, limit_torch_threads  # noqa: E402
from support.parity_testlib import (  # noqa: E402
    CLASSES,
    KEYPOINTS,
    mask_iou,
    skimage_images,
    small_centermask,
    small_yolact_plus,
    threshold_in_a_gap,
)

from seg_perception.core.mask_rescoring import MaskIoURescorer  # noqa: E402
from seg_perception.core.metadata import INPUT_NAME  # noqa: E402
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact  # noqa: E402
from seg_perception.core.postprocess_roi import postprocess_roi  # noqa: E402
from seg_perception.core.preprocess import resize_for_network  # noqa: E402
from seg_perception.models.export import export_onnx, metadata_for_model  # noqa: E402
from seg_perception.models.transform import ImageInputModel  # noqa: E402
from seg_perception.models.yolact_plus import maskiou_path_for, save_maskiou_weights  # noqa: E402

limit_torch_threads()

# arch -> (input size, builder kwargs, real frames, scikit-image photos). The RoI heads
# run once per detection (a full CenterMask head is about 1 GFLOP per box), so the cases
# keep 4-8 detections (the architectures' default is 50). Between them the cases cover
# every trunk (ResNet-50/101 with DCN, VoVNet-19-slim with and without depthwise convs,
# VoVNet-39, VoVNet-57, detectron2 ResNet-50), both head widths (Lite 128, full 256),
# CenterMask's MaskIoU head in the graph, and the keypoint head.
# (centermask_vovnet39 is the VoVNet-39 trunk of centermask_lite_vovnet39 with the full
# heads of centermask_vovnet57: no code path of its own.)
CASES = {
    # Re-scoring (which needs >= 256 px) runs on NumPy after NMS, identically for every
    # backend: test_models_yolact_plus and test_tools_export cover it, not the graph.
    "yolact_plus_resnet50": (96, {"mask_rescoring": False}, 1, 0),
    "yolact_plus_resnet101": (64, {"mask_rescoring": False}, 0, 1),
    "centermask_lite_vovnet19_slim_dw_320": (96, {"detections_per_image": 8}, 2, 1),
    "centermask_lite_vovnet19_slim": (64, {"detections_per_image": 8, "num_keypoints": len(KEYPOINTS),
                                           "keypoint_conv_dims": [64, 64]}, 1, 1),
    "centermask_lite_vovnet39": (64, {"detections_per_image": 8}, 1, 0),
    "centermask_vovnet57": (64, {"detections_per_image": 4}, 0, 1),
    "centermask_resnet50": (64, {"detections_per_image": 4}, 1, 0),
}


@pytest.fixture(scope="module")
def real_frames(hsr_bag):
    frames = hsr_frames()
    if not frames:
        pytest.skip("hsr_people recording not readable")
    return frames


class Exported:
    """One architecture exported once: the torch reference, the ORT session, the metadata."""

    def __init__(self, arch: str, root, images: list[np.ndarray]) -> None:
        size, kwargs, _, _ = CASES[arch]
        self.images = images
        if arch.startswith("yolact_plus"):
            model = small_yolact_plus(arch, size, **kwargs)
            keypoints: list[str] = []
        else:
            # Normalised for the pictures it is tested on, as a trained network is for
            # photographs (parity_testlib.small_centermask says what happens otherwise).
            model = small_centermask(arch, size, calibration_images=images, **kwargs)
            keypoints = KEYPOINTS if kwargs.get("num_keypoints") else []
        rescoring = bool(getattr(model, "mask_rescoring", False))
        path = root / f"{arch}.onnx"
        extra = {"maskiou_weights": maskiou_path_for(path).name} if rescoring else {}
        self.metadata = metadata_for_model(model, arch, CLASSES, keypoints, **extra)
        export_onnx(model, self.metadata, path)
        self.rescorer = None
        if rescoring:
            self.rescorer = MaskIoURescorer.load(save_maskiou_weights(model, maskiou_path_for(path)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.reference = ImageInputModel(model, self.metadata.mean, self.metadata.std).eval()
        self.names = self.reference.output_names

    def run(self, batch: np.ndarray) -> tuple[dict, dict]:
        onnx_out = dict(zip(self.names, self.session.run(self.names, {INPUT_NAME: batch})))
        with torch.no_grad():
            torch_out = {n: t.numpy() for n, t in zip(self.names, self.reference(torch.from_numpy(batch)))}
        return onnx_out, torch_out


_cache: dict[str, Exported] = {}


def images_for(arch: str, frames) -> list[np.ndarray]:
    _, _, n_frames, n_photos = CASES[arch]
    images = list(frames[:n_frames]) + skimage_images(n_photos)
    if not images:
        pytest.skip("this case's images need scikit-image, which is not installed")
    return images


def exported(arch: str, frames, tmp_path_factory) -> Exported:
    if arch not in _cache:
        _cache[arch] = Exported(arch, tmp_path_factory.mktemp(arch), images_for(arch, frames))
    return _cache[arch]


def assert_same_detections(a, b, width: int, height: int) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert np.abs(a.boxes - b.boxes).max() < 0.5  # source pixels
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    for ma, mb in zip(a.masks, b.masks):
        assert mask_iou(ma, mb, width, height) >= 0.99
    if a.keypoints.shape[1]:
        np.testing.assert_allclose(a.keypoints[..., :2], b.keypoints[..., :2], atol=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in CASES if a.startswith("yolact_plus")])
def test_yolact_plus_onnxruntime_matches_pytorch_on_real_images(arch, real_frames, tmp_path_factory):
    case = exported(arch, real_frames, tmp_path_factory)
    md = case.metadata
    for image in case.images:
        h, w = image.shape[:2]
        onnx_out, torch_out = case.run(resize_for_network(image, md.input_width, md.input_height))
        for name in torch_out:
            np.testing.assert_allclose(onnx_out[name], torch_out[name], rtol=1e-3, atol=2e-4, err_msg=name)
        params = PostprocessParams(score_threshold=threshold_in_a_gap(torch_out["scores"], 15))
        a, b = (postprocess_yolact(o["boxes"][0], o["scores"][0], o["mask_coeffs"][0], o["protos"][0], w, h, params,
                                   mask_rescorer=case.rescorer) for o in (onnx_out, torch_out))
        assert_same_detections(a, b, w, h)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in CASES if a.startswith("centermask")])
def test_centermask_onnxruntime_matches_pytorch_on_real_images(arch, real_frames, tmp_path_factory):
    case = exported(arch, real_frames, tmp_path_factory)
    md = case.metadata
    for image in case.images:
        h, w = image.shape[:2]
        onnx_out, torch_out = case.run(resize_for_network(image, md.input_width, md.input_height))
        scores = torch_out["scores"][0]
        real = int((scores > 0).sum())
        assert real >= min(4, len(scores)), f"test weights should give detections, got {real}"
        # Rows are score-sorted; the real ones must agree row by row (padding order is
        # arbitrary). Float32 noise grows through 60-layer trunks: 1e-3 of a normalised
        # box is 0.6 px at 640 px, 1e-2 of a mask probability moves no pasted pixel that
        # is not already on the threshold; the detections below are held to the spec.
        np.testing.assert_allclose(onnx_out["scores"][0, :real], scores[:real], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(onnx_out["classes"][0, :real], torch_out["classes"][0, :real])
        np.testing.assert_allclose(onnx_out["boxes"][0, :real], torch_out["boxes"][0, :real], atol=1e-3)
        np.testing.assert_allclose(onnx_out["masks"][0, :real], torch_out["masks"][0, :real], atol=1e-2)
        params = PostprocessParams(score_threshold=threshold_in_a_gap(scores[scores > 0], max(1, min(6, real - 1))),
                                   nms_iou_threshold=1.0)
        a, b = (postprocess_roi(o["boxes"][0], o["scores"][0], o["classes"][0], o["masks"][0], w, h, params,
                                keypoint_heatmaps=o["keypoint_heatmaps"][0] if "keypoint_heatmaps" in o else None,
                                network_size=(md.input_width, md.input_height))
                for o in (onnx_out, torch_out))
        assert_same_detections(a, b, w, h)
