"""torchvision's Mask R-CNN / Keypoint R-CNN as node models: export, weights API, parity.

Random-initialised torchvision models, saved as torchvision state dicts, are exported by
``seg-perception export`` (Mask R-CNN through ``--weights coco`` from a TORCH_HOME that
holds the file torchvision's weights API expects; Mask R-CNN v2 through ``--checkpoint``;
Keypoint R-CNN through ``--checkpoint``/``--mask-checkpoint``), then run through ONNX
Runtime and our pipeline on real hsr_people frames and compared with torchvision's own
forward at the same input size.

Random weights would give no detection above torchvision's 0.05 score threshold (91-way
softmax of near-zero logits): the classifier's weights are scaled up before saving so the
box head is confident and detections exist; every test asserts that they do. Mask R-CNN
v2's heads have BatchNorm, the identity at initialisation: unnormalised, their features
saturate the classifier (scores 1.0) and the box regression squashes the boxes to a few
pixels' height (none 48 px a side). Their running statistics are first estimated from one
forward pass of a seeded noise image, so that they normalise as trained ones do; then the
classifier is scaled.

Tolerances (stated here, checked below):
- boxes within 0.05 px, scores within 1e-3, same classes (float rounding ORT vs torch);
- the graph's raw outputs row for row: boxes 0.05 px, scores 1e-3, classes equal, the
  28x28 mask probabilities of each detection's class 5e-3, keypoint heatmaps 1% of their range;
- pasted masks: ours (detectron2-style sub-pixel bilinear sampling of the 28x28 grid,
  ``core.postprocess_roi.paste_masks``) against torchvision's pasted probabilities
  (``paste_masks_in_image``: grid resized to the box rounded to whole pixels): on boxes of
  at least 48 px a side, at most 2 % of the box where ours contradicts a torchvision
  probability further than 0.2 from the 0.5 threshold. (Random weights give noisy masks
  whose every pixel is near a boundary, so IoU is not a fair measure; thinner boxes are
  dominated by torchvision's whole-pixel rounding and are not compared.) Mask R-CNN v2: the
  same bound against torchvision's 28x28 probabilities pasted by ``paste_masks``, not by
  torchvision: its random masks have stripes one grid cell wide that torchvision's whole-pixel
  rounding shifts (against torchvision's paste, 5 of its 83 compared boxes are over 2 %, worst
  4.0 % with ONNX Runtime's probabilities and 4.0 % with torchvision's own: the paste methods
  differ, not the graphs), and the Mask R-CNN test already compares the two paste methods.
- keypoints: our decoder (``heatmaps_to_keypoints``) on torchvision's own heatmaps gives
  torchvision's x, y within 1.5 px (both resize the 56x56 map bicubically to the box and take
  the argmax) and, as score, the spatial softmax at torchvision's peak logit (torchvision
  reports the raw logit) within 1e-4 in log. Through the pipeline (ONNX Runtime's heatmaps)
  at least 90 % of keypoints lie within 1.5 px of torchvision's: random heatmaps have
  near-tied peaks that float differences swap; where the peak pixel is the same, the score's
  log is within 3 x (largest ORT-vs-torch heatmap logit difference) + 1e-3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")

from support.models_testlib import hsr_frames  # noqa: E402

WIDTH, HEIGHT = 256, 200  # network input; 200 is not a multiple of 32: the graph's padding is exercised
SEED = 18
# Scales the random box classifier: Mask R-CNN's 91-way softmax needs it to pass 0.05;
# Keypoint R-CNN's 2-way one saturates at 1.0 unscaled, so it is damped to spread the scores.
# Mask R-CNN v2's, once its heads' BatchNorm statistics are estimated (see above): scores 0.14-0.53.
CLASSIFIER_GAIN = {"maskrcnn_resnet50_fpn": 40.0, "keypointrcnn_resnet50_fpn": 0.01, "maskrcnn_resnet50_fpn_v2": 10.0}
KEYPOINT_DETECTIONS = 10  # --max-detections of the Keypoint R-CNN export (random weights find 100 "people")
FRAMES = (0, 4)  # of the recording's 5 frames
MIN_MASK_BOX = 48  # px a side: below, torchvision's whole-pixel box rounding dominates a pasted mask
MASK_MARGIN = 0.2
MASK_DISAGREEMENT = 0.02  # of the box area
KEYPOINT_PX = 1.5
KEYPOINT_AGREEMENT = 0.9  # of the pipeline's keypoints within KEYPOINT_PX of torchvision's


def _random_detector(arch: str):
    from seg_perception.models.torchvision_rcnn import TORCHVISION_RCNN, build_torchvision_detector

    torch.manual_seed(SEED)
    people = TORCHVISION_RCNN[arch].keypoints
    model = build_torchvision_detector(arch, min_size=HEIGHT, max_size=WIDTH,
                                       **({"box_detections_per_img": KEYPOINT_DETECTIONS} if people else {}))
    norms = [m for m in model.roi_heads.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # v2's heads only
    if norms:  # running statistics of one seeded noise image instead of the identity
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average
            norm.train()
        with torch.no_grad():
            model([torch.rand(3, HEIGHT, WIDTH)])
        model.eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(CLASSIFIER_GAIN[arch])
    return model.eval()


def _export(argv: list[str], env: dict[str, str] | None = None) -> None:
    from seg_perception.tools import export

    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        assert export.main(argv) == 0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cache_key() -> str:
    """Exports depend on these sources, the versions, this file's constants and ``_random_detector``."""
    import hashlib
    import inspect

    import torchvision

    import seg_perception

    pkg = Path(seg_perception.__file__).parent
    h = hashlib.sha256(f"{torch.__version__} {torchvision.__version__} {WIDTH} {HEIGHT} {SEED} {CLASSIFIER_GAIN} "
                       f"{KEYPOINT_DETECTIONS}".encode())
    h.update(inspect.getsource(_random_detector).encode())
    for rel in ("models/torchvision_rcnn.py", "models/export.py", "models/transform.py", "tools/export.py"):
        h.update((pkg / rel).read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def rcnn_exports(request: pytest.FixtureRequest) -> dict:
    """Random torchvision models (state dicts) and our exports of them, shared by the tests.

    The exports (about a minute of tracing per R50 model on two cores) are kept in pytest's
    cache folder under a key of the sources and versions they depend on, so only the first
    run after a change pays for them.
    """
    from seg_perception.models.torchvision_rcnn import coco_weights_file

    torch.set_num_threads(2)
    root = Path(request.config.cache.mkdir(f"torchvision_rcnn_{_cache_key()}"))
    models = {arch: _random_detector(arch) for arch in ("maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn")}
    # Mask R-CNN's weights where torchvision's weights API looks for them.
    torch_home = root / "torch_home"
    name, _ = coco_weights_file("maskrcnn_resnet50_fpn")
    (torch_home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    mask_pth = torch_home / "hub" / "checkpoints" / name
    torch.save(models["maskrcnn_resnet50_fpn"].state_dict(), mask_pth)
    kp_pth = root / "keypointrcnn_torchvision.pth"
    torch.save(models["keypointrcnn_resnet50_fpn"].state_dict(), kp_pth)
    size = f"{WIDTH}x{HEIGHT}"
    onnx = {"maskrcnn_resnet50_fpn": root / "maskrcnn.onnx", "keypointrcnn_resnet50_fpn": root / "keypointrcnn.onnx"}
    done = root / "complete"
    if done.exists():
        return {"models": models, "onnx": onnx, "torch_home": torch_home, "mask_pth": mask_pth, "root": root}
    _export(["--arch", "maskrcnn_resnet50_fpn", "--weights", "coco", "--input-size", size,
             "-o", str(onnx["maskrcnn_resnet50_fpn"]), "--no-check"], env={"TORCH_HOME": str(torch_home)})
    _export(["--arch", "keypointrcnn_resnet50_fpn", "--checkpoint", str(kp_pth), "--mask-checkpoint", str(mask_pth),
             "--input-size", size, "-o", str(onnx["keypointrcnn_resnet50_fpn"]), "--no-check", "--save-pth",
             "--max-detections", str(KEYPOINT_DETECTIONS)])
    done.write_text("exports of this key are complete\n")
    return {"models": models, "onnx": onnx, "torch_home": torch_home, "mask_pth": mask_pth, "root": root}


@pytest.fixture(scope="session")
def rcnn_v2_export(request: pytest.FixtureRequest) -> dict:
    """Random Mask R-CNN v2 and our export of it (``--checkpoint``), cached as ``rcnn_exports``
    under the same key in a folder of its own: the other tests do not pay for this export."""
    arch = "maskrcnn_resnet50_fpn_v2"
    torch.set_num_threads(2)
    root = Path(request.config.cache.mkdir(f"torchvision_rcnn_v2_{_cache_key()}"))
    model = _random_detector(arch)
    onnx = root / "maskrcnn_v2.onnx"
    done = root / "complete"
    if not done.exists():
        pth = root / "maskrcnn_v2_torchvision.pth"
        torch.save(model.state_dict(), pth)
        _export(["--arch", arch, "--checkpoint", str(pth), "--input-size", f"{WIDTH}x{HEIGHT}", "-o", str(onnx),
                 "--no-check"])
        done.write_text("export of this key is complete\n")
    return {"model": model, "onnx": onnx}


@pytest.fixture(scope="session")
def frames(hsr_bag: Path) -> list[np.ndarray]:
    """hsr_people frames at the network input size (the pipeline's resize is then the identity)."""
    from seg_perception.core.preprocess import resize_for_network

    real = hsr_frames()
    return [resize_for_network(real[i], WIDTH, HEIGHT)[0] for i in FRAMES]


def _pipeline(onnx: Path, backend: str = "onnxruntime"):
    from seg_perception.core.postprocess import PostprocessParams
    from seg_perception.pipeline import SegmentationPipeline
    from seg_perception.runtime.factory import create_backend

    # torchvision's own threshold and detection count; the node's default NMS (0.5, as torchvision's).
    params = PostprocessParams(score_threshold=0.05, nms_iou_threshold=0.5, top_k=200, max_detections=100)
    path = onnx if backend == "onnxruntime" else onnx.with_suffix(".pth")
    opts = {"threads": 2}
    return SegmentationPipeline(create_backend(backend, path, **opts), params)


def _torchvision_forward(model, rgb: np.ndarray) -> dict:
    """torchvision's own eval forward on ``rgb`` (no resize: min/max size are the image's),
    plus what its heads computed before pasting/decoding: ``mask_logits`` and ``heatmaps``."""
    captured = {}
    hooks = []
    for name, key in (("mask_predictor", "mask_logits"), ("keypoint_predictor", "heatmaps")):
        head = getattr(model.roi_heads, name, None)
        if head is not None:
            hooks.append(head.register_forward_hook(lambda m, i, o, key=key: captured.__setitem__(key, o.detach())))
    try:
        with torch.no_grad():
            out = model([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0])[0]
    finally:
        for hook in hooks:
            hook.remove()
    result = {k: v.numpy() for k, v in out.items()}
    if "mask_logits" in captured:  # torchvision's maskrcnn_inference: the detection's class, sigmoid
        logits = captured["mask_logits"]
        result["mask_probs"] = logits[torch.arange(len(logits)), out["labels"]].sigmoid().numpy()
    if "heatmaps" in captured:
        result["heatmaps"] = captured["heatmaps"].numpy()
    return result


def _coco_classes(labels: np.ndarray) -> np.ndarray:
    from seg_perception.models.torchvision_rcnn import coco_label_table

    return np.asarray(coco_label_table())[labels]


def _run(pipe, rgb: np.ndarray):
    """Our raw graph outputs (rows with score > 0, in graph order) and the pipeline's ``Detections``."""
    raw = pipe.forward(rgb)
    rows = raw["scores"][0] > 0
    return {k: v[0][rows] for k, v in raw.items()}, pipe.decode(raw, rgb.shape[:2])


def _check_graph_outputs(raw: dict, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                         mask_probs: np.ndarray, heatmaps: np.ndarray | None = None) -> float:
    """Raw ROI_OUTPUTS equal torchvision's detections and head outputs, row for row.

    Returns the largest heatmap difference (logits), which bounds the keypoint score's."""
    assert len(raw["scores"]) == len(scores), f"graph kept {len(raw['scores'])} detections, torchvision {len(scores)}"
    scale = np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32)
    np.testing.assert_allclose(raw["boxes"] * scale, boxes, atol=0.05)
    np.testing.assert_allclose(raw["scores"], scores, atol=1e-3)
    np.testing.assert_array_equal(raw["classes"], classes)
    np.testing.assert_allclose(raw["masks"], mask_probs, atol=5e-3)
    if heatmaps is not None:
        np.testing.assert_allclose(raw["keypoint_heatmaps"], heatmaps, atol=1e-2 * max(1.0, np.abs(heatmaps).max()))
        return float(np.abs(raw["keypoint_heatmaps"] - heatmaps).max())
    return 0.0


def _match(ours, ref_boxes: np.ndarray, ref_classes: np.ndarray, ref_scores: np.ndarray) -> np.ndarray:
    """For each reference detection, the index of ours with the same class and nearest box."""
    assert len(ours) == len(ref_boxes), f"{len(ours)} detections, torchvision has {len(ref_boxes)}"
    idx = np.empty(len(ref_boxes), np.int64)
    for i, (box, cls, score) in enumerate(zip(ref_boxes, ref_classes, ref_scores)):
        dist = np.abs(ours.boxes - box).max(axis=1) + 1e6 * (ours.class_ids != cls)
        idx[i] = int(dist.argmin())
        np.testing.assert_allclose(ours.boxes[idx[i]], box, atol=0.05, err_msg=f"box of detection {i}")
        np.testing.assert_allclose(ours.scores[idx[i]], score, atol=1e-3, err_msg=f"score of detection {i}")
    assert len(set(idx.tolist())) == len(idx), "two torchvision detections matched the same one of ours"
    return idx


def _confident_mask_disagreement(ours, idx: np.ndarray, boxes: np.ndarray, pasted: np.ndarray) -> list[float]:
    """Per box of at least ``MIN_MASK_BOX`` px a side: the fraction of the box where our binary mask
    contradicts the reference's pasted probability by more than ``MASK_MARGIN`` from the 0.5 threshold."""
    fractions = []
    for j, box, prob in zip(idx, boxes, pasted[:, 0]):
        w, h = box[2] - box[0], box[3] - box[1]
        if min(w, h) < MIN_MASK_BOX:
            continue
        mine = ours.masks[j].to_full(HEIGHT, WIDTH).astype(bool)
        bad = (mine & (prob < 0.5 - MASK_MARGIN)) | (~mine & (prob > 0.5 + MASK_MARGIN))
        fractions.append(float(bad.sum() / (w * h)))
    return fractions


def _paste_like_ours(probs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """torchvision's ``(N, M, M)`` mask probabilities pasted into its boxes by our ``paste_masks``,
    as ``(N, 1, H, W)``: 0 at most ``0.5 - MASK_MARGIN``, 1 above ``0.5 + MASK_MARGIN``, 0.5
    between (all that ``_confident_mask_disagreement`` reads of a probability)."""
    from seg_perception.core.postprocess_roi import paste_masks

    def above(threshold: float) -> np.ndarray:
        return np.stack([m.to_full(HEIGHT, WIDTH) for m in paste_masks(probs, boxes, WIDTH, HEIGHT, threshold)])

    return (0.5 * above(0.5 - MASK_MARGIN) + 0.5 * above(0.5 + MASK_MARGIN)).astype(np.float32)[:, None]


def _check_mask_rcnn(model, onnx: Path, frames: list[np.ndarray], torchvision_paste: bool = True) -> None:
    """A Mask R-CNN export through our pipeline against the torchvision model: graph outputs,
    ``Detections`` and pasted masks, at the tolerances of the module's docstring. The pasted
    reference: torchvision's own (``torchvision_paste``) or its probabilities pasted as ours."""
    pipe = _pipeline(onnx)
    total, disagreement = 0, []
    for rgb in frames:
        ref = _torchvision_forward(model, rgb)
        classes = _coco_classes(ref["labels"])
        real = classes >= 0  # labels of the N/A gaps in COCO's ids are dropped by the graph
        raw, ours = _run(pipe, rgb)
        _check_graph_outputs(raw, ref["boxes"][real], ref["scores"][real], classes[real], ref["mask_probs"][real])
        idx = _match(ours, ref["boxes"][real], classes[real], ref["scores"][real])
        pasted = (ref["masks"][real] if torchvision_paste
                  else _paste_like_ours(ref["mask_probs"][real], ref["boxes"][real]))
        disagreement += _confident_mask_disagreement(ours, idx, ref["boxes"][real], pasted)
        total += len(idx)
    pipe.close()
    assert total >= 5, f"only {total} detections on {len(frames)} frames: the test weights do not exercise the heads"
    assert len(disagreement) >= 2, "no detection large enough to compare pasted masks"
    print(f"{total} detections; pasted masks of {len(disagreement)} large boxes: worst confident disagreement "
          f"{max(disagreement):.4f} of the box")
    assert max(disagreement) <= MASK_DISAGREEMENT


def test_mask_rcnn_through_our_pipeline_equals_torchvision(rcnn_exports: dict, frames: list[np.ndarray]) -> None:
    _check_mask_rcnn(rcnn_exports["models"]["maskrcnn_resnet50_fpn"], rcnn_exports["onnx"]["maskrcnn_resnet50_fpn"],
                     frames)


def test_mask_rcnn_v2_through_our_pipeline_equals_torchvision(rcnn_v2_export: dict, frames: list[np.ndarray]) -> None:
    from seg_perception.core.metadata import COCO_CLASSES, ModelMetadata

    md = ModelMetadata.load(rcnn_v2_export["onnx"].with_suffix(".json"))
    assert md.class_names == COCO_CLASSES and md.keypoint_names == [] and md.output_format == "roi"
    _check_mask_rcnn(rcnn_v2_export["model"], rcnn_v2_export["onnx"], frames, torchvision_paste=False)


def test_keypoint_rcnn_people_have_torchvision_keypoints_and_mask_rcnn_masks(
        rcnn_exports: dict, frames: list[np.ndarray]) -> None:
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from seg_perception.core.postprocess_roi import heatmaps_to_keypoints

    kp_model = rcnn_exports["models"]["keypointrcnn_resnet50_fpn"]
    mask_model = rcnn_exports["models"]["maskrcnn_resnet50_fpn"]
    pipe = _pipeline(rcnn_exports["onnx"]["keypointrcnn_resnet50_fpn"])
    md = pipe.metadata
    assert md.class_names == ["person"] and len(md.keypoint_names) == 17 and md.skeleton
    total, disagreement, worst_xy, worst_score, pipeline_score, agree = 0, [], 0.0, 0.0, 0.0, []
    for rgb in frames:
        ref = _torchvision_forward(kp_model, rgb)
        # Masks: Mask R-CNN's mask head (person channel) on its own features at Keypoint R-CNN's boxes.
        img = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        boxes = torch.from_numpy(ref["boxes"])
        with torch.no_grad():
            images, _ = mask_model.transform([img])
            feats = mask_model.backbone(images.tensors)
            rh = mask_model.roi_heads
            logits = rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(feats, [boxes], images.image_sizes)))
            probs = logits[:, 1].sigmoid()
            pasted = paste_masks_in_image(probs[:, None], boxes, (HEIGHT, WIDTH)).numpy()
        raw, ours = _run(pipe, rgb)
        hm_diff = _check_graph_outputs(raw, ref["boxes"], ref["scores"], ref["labels"] - 1, probs.numpy(),
                                       ref["heatmaps"])
        idx = _match(ours, ref["boxes"], ref["labels"] - 1, ref["scores"])
        total += len(idx)
        if not len(idx):
            continue
        # Keypoints. Our decoder on torchvision's own heatmaps: torchvision's positions, and the
        # softmax of its heatmap at its peak logit as the score.
        hm = ref["heatmaps"].astype(np.float64)
        peak = hm.max(axis=(2, 3))
        expected = np.exp(ref["keypoints_scores"] - peak) / np.exp(hm - peak[..., None, None]).sum(axis=(2, 3))
        decoded = heatmaps_to_keypoints(ref["heatmaps"], ref["boxes"])
        worst_xy = max(worst_xy, float(np.abs(decoded[..., :2] - ref["keypoints"][..., :2]).max()))
        worst_score = max(worst_score, float(np.abs(np.log(decoded[..., 2]) - np.log(expected)).max()))
        # The pipeline (ONNX Runtime heatmaps, within 1 % of torch's above): random heatmaps have
        # near-tied peaks that such differences can swap, so most keypoints, not all, must agree.
        kps = ours.keypoints[idx]
        near = np.abs(kps[..., :2] - ref["keypoints"][..., :2]).max(axis=-1) <= KEYPOINT_PX
        agree.append(near.ravel())
        same = np.abs(kps[..., :2] - ref["keypoints"][..., :2]).max(axis=-1) <= 1e-2  # the same peak pixel
        log_err = np.abs(np.log(kps[..., 2]) - np.log(expected))[same]
        # ORT's logits differ from torch's by up to hm_diff: the bicubic peak moves by at most
        # (sum of |bicubic weights| <= 2) x hm_diff, the log-sum-exp by at most hm_diff.
        pipeline_score = max(pipeline_score, float((log_err - 3 * hm_diff).max(initial=0.0)))
        disagreement += _confident_mask_disagreement(ours, idx, ref["boxes"], pasted)
    pipe.close()
    assert total >= 3, f"only {total} people on {len(frames)} frames: the test weights do not exercise the heads"
    agreement = float(np.concatenate(agree).mean())
    print(f"{total} people: decoder xy diff {worst_xy:.4f} px, log score diff {worst_score:.1e}; pipeline keypoints "
          f"within {KEYPOINT_PX} px: {agreement:.3f}, log score excess {pipeline_score:.1e}; pasted masks of "
          f"{len(disagreement)} large boxes: worst {max(disagreement, default=0):.4f}")
    assert worst_xy <= KEYPOINT_PX and worst_score <= 1e-4
    assert agreement >= KEYPOINT_AGREEMENT and pipeline_score <= 1e-3
    assert disagreement and max(disagreement) <= MASK_DISAGREEMENT


def test_torch_backend_runs_the_saved_checkpoint_like_onnxruntime(rcnn_exports: dict, frames: list[np.ndarray]) -> None:
    onnx = rcnn_exports["onnx"]["keypointrcnn_resnet50_fpn"]
    ort_pipe, torch_pipe = _pipeline(onnx), _pipeline(onnx, backend="torch")
    a, b = ort_pipe(frames[0]), torch_pipe(frames[0])
    ort_pipe.close()
    torch_pipe.close()
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    np.testing.assert_allclose(a.keypoints[..., :2], b.keypoints[..., :2], atol=1.5)


def test_full_resolution_frames_give_boxes_in_source_pixels(rcnn_exports: dict, hsr_bag: Path) -> None:
    """A 640x480 camera frame: the pipeline resizes to the network and maps results back."""
    from seg_perception.core.preprocess import resize_for_network

    pipe = _pipeline(rcnn_exports["onnx"]["maskrcnn_resnet50_fpn"])
    full = hsr_frames()[FRAMES[0]]
    small = pipe(resize_for_network(full, WIDTH, HEIGHT)[0])
    big = pipe(full)
    pipe.close()
    assert len(small) > 0 and len(big) == len(small)
    scale = np.array([640 / WIDTH, 480 / HEIGHT] * 2, np.float32)
    np.testing.assert_allclose(big.boxes, np.minimum(small.boxes * scale, [640, 480, 640, 480]), atol=0.1)
    for m in big.masks:
        assert m.x + m.width <= 640 and m.y + m.height <= 480


def test_weights_coco_loads_the_cached_file_without_checking_its_hash(rcnn_exports: dict, monkeypatch) -> None:
    """torchvision checks the hash in the file name only when it downloads: a present file is loaded as is."""
    from seg_perception.models.torchvision_rcnn import load_coco_weights

    monkeypatch.setenv("TORCH_HOME", str(rcnn_exports["torch_home"]))
    state = load_coco_weights("maskrcnn_resnet50_fpn", progress=False)
    expected = rcnn_exports["models"]["maskrcnn_resnet50_fpn"].state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_weights_coco_offline_says_which_file_goes_where(tmp_path: Path) -> None:
    """No network and no cached file: one line naming the file and the cache folder, exit 1, nothing written."""
    script = (
        "import sys, urllib.error, torch.hub\n"
        "def offline(*a, **k): raise urllib.error.URLError('no network')\n"
        "torch.hub.download_url_to_file = offline\n"
        "from seg_perception.tools import export\n"
        "sys.exit(export.main(sys.argv[1:]))\n"
    )
    out = tmp_path / "kp.onnx"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", script, "--arch", "keypointrcnn_resnet50_fpn", "--weights", "coco",
                           "-o", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "keypointrcnn_resnet50_fpn_coco-fc266e95.pth" in errors[0]
    assert str(tmp_path / "home" / "hub" / "checkpoints") in errors[0]
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_metadata_names_coco_classes_keypoints_and_skeleton(rcnn_exports: dict) -> None:
    from seg_perception.core.metadata import COCO_CLASSES, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON, ModelMetadata

    mask = ModelMetadata.load(rcnn_exports["onnx"]["maskrcnn_resnet50_fpn"].with_suffix(".json"))
    kp = ModelMetadata.load(rcnn_exports["onnx"]["keypointrcnn_resnet50_fpn"].with_suffix(".json"))
    assert mask.class_names == COCO_CLASSES and mask.keypoint_names == [] and mask.output_format == "roi"
    assert kp.class_names == ["person"] and kp.keypoint_names == COCO_PERSON_KEYPOINTS
    assert kp.skeleton == COCO_PERSON_SKELETON
    assert (mask.input_width, mask.input_height) == (WIDTH, HEIGHT)
    assert mask.mean == pytest.approx((123.675, 116.28, 103.53))


def test_export_refuses_incomplete_or_conflicting_torchvision_arguments(tmp_path: Path, capsys) -> None:
    """Each mistake: exit 1, one line saying what to change, nothing written (checked before any weights load)."""
    from seg_perception.tools.export import main

    pth = tmp_path / "kp.pth"
    pth.write_bytes(b"not read")
    cases = [
        (["--arch", "maskrcnn_resnet50_fpn"], "exactly one of --weights coco or --checkpoint"),
        (["--arch", "maskrcnn_resnet50_fpn", "--weights", "coco", "--checkpoint", str(pth)], "exactly one of"),
        ([str(pth), "--arch", "maskrcnn_resnet50_fpn", "--weights", "coco"], "not a positional file"),
        (["--arch", "keypointrcnn_resnet50_fpn", "--checkpoint", str(pth)], "--mask-checkpoint"),
        (["--arch", "maskrcnn_resnet50_fpn", "--weights", "coco", "--classes", str(pth)], "drop --classes"),
        (["--arch", "keypointrcnn_resnet50_fpn", "--checkpoint", str(pth), "--mask-checkpoint", str(pth),
          "--save-pth", "-o", str(tmp_path / "kp.onnx")], "overwrite the input checkpoint"),
        ([str(pth), "--arch", "yolact_resnet18", "--weights", "coco"], "are for --arch"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kp.pth"]
