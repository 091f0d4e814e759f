"""Helpers for the YOLACT++ / CenterMask tests (not a test module).

Small, seeded models of every new architecture with "test weights": random weights are
deliberate (the tests compare two executions of the same network, or check shapes and
names), but adjusted so the interesting paths run: BatchNorm statistics away from the
identity, FCOS scores spread out and above the 0.05 pre-NMS threshold (the official
focal-loss prior would keep every score at 0.01), MaskIoU predictions near 1 so scores
stay positive, masks with real structure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
CLASSES = ["person", "bottle", "cup"]
KEYPOINTS = ["head", "left_hand", "right_hand"]
SEED = 4321


def listing(name: str) -> dict:
    """``official_<name>_keys.json`` from test/support/fixtures."""
    return json.loads((FIXTURES / f"official_{name}_keys.json").read_text())


def state_dict_from_listing(keys: dict) -> dict:
    """Tensors of the listed shapes with recognisable values (index of the key)."""
    import torch

    out = {}
    for i, (key, shape) in enumerate(keys.items()):
        if key.startswith("_"):
            continue
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        out[key] = torch.full(shape, float(i % 97), dtype=dtype)
    return out


def _perturb_batchnorm(model) -> None:
    """Non-trivial BatchNorm statistics, so a wrong eval/train mode would show."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)


def _calibration_batch(model, input_size, images: Sequence[np.ndarray] = ()):
    """``images`` (RGB uint8, resized as the runtime does) then four random pictures with
    roughly natural (1/f) statistics, all normalised as the graph does."""
    import cv2
    import torch

    from seg_perception.core.preprocess import resize_for_network

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    real = [resize_for_network(image, w, h)[0].astype(np.float32) for image in images]
    rng = np.random.default_rng(SEED)
    pictures = np.zeros((4, h, w, 3), np.float32)
    for picture in pictures:
        for octave in range(6):  # equal-amplitude noise at every octave: pixels to blobs
            f = 2 ** octave
            noise = rng.standard_normal((max(1, h // f), max(1, w // f), 3)).astype(np.float32)
            picture += cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    pictures = np.clip(128 + 25 * pictures, 0, 255)
    if real:
        pictures = np.concatenate([np.stack(real), pictures])
    mean = np.asarray(getattr(model, "input_mean", None) or (123.68, 116.78, 103.94), np.float32)
    std = np.asarray(getattr(model, "input_std", None) or (58.40, 57.12, 57.38), np.float32)
    return torch.from_numpy((pictures - mean) / std).permute(0, 3, 1, 2)


def _calibrate_batchnorm(model, input_size, trunk=None, images: Sequence[np.ndarray] = ()) -> None:
    """Set every BatchNorm's running statistics to those of a batch of pictures.

    Deep random networks otherwise blow activations up or down by orders of magnitude
    layer after layer, and absolute differences between two runtimes grow with them;
    a trained network keeps its activations near unit scale, and so does this one.
    The affine weights then get a random spread so eval-mode BatchNorm is not an identity.
    Pass the pictures a test will feed in ``images``: statistics taken on synthetic
    noise alone do not carry over to photographs (see ``small_centermask``).
    """
    import torch

    # A batch of pictures: at small inputs the deepest maps have a handful of cells, and
    # the statistics of one image would be noise.
    x = _calibration_batch(model, input_size, images)
    trunk = trunk if trunk is not None else model  # the part holding the BatchNorms
    bns = [m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0  # running stats := this batch's stats
        m.train()
    with torch.no_grad():
        trunk(x)
        for m in bns:
            m.weight.uniform_(0.8, 1.2)
            m.bias.uniform_(-0.1, 0.1)
    model.eval()


def small_centermask(arch: str, input_size=64, calibration_images: Sequence[np.ndarray] = (), **kwargs):
    """A seeded CenterMask variant (3 classes) with test weights; ``kwargs`` go to the builder.

    ``calibration_images`` (RGB uint8, any size): the pictures the test will run. Tests
    that compare two runtimes on photographs must pass them. Calibrated on synthetic
    noise alone, VoVNet-57 at 64 px ran a photograph at about 45x the calibrated
    activation scale (stage-5 RMS about 1400 instead of 32): the eSE gates and
    SAG-Mask's spatial-attention sigmoid then sit at pre-activations of thousands,
    saturated except at a few pixels that flip with float32 rounding, and PyTorch
    float32 itself missed the float64 mask by 0.017 (ONNX Runtime by 0.013): the
    parity test was measuring that amplified rounding, not the export.
    """
    import torch

    from seg_perception.models import build_model

    torch.manual_seed(SEED)
    model = build_model(arch, num_classes=len(CLASSES), input_size=input_size, **kwargs).eval()
    head = model.proposal_generator.fcos_head
    with torch.no_grad():
        torch.nn.init.normal_(head.cls_logits.weight, std=0.05)
        head.cls_logits.bias.fill_(-0.5)
        torch.nn.init.normal_(head.ctrness.weight, std=0.05)
        torch.nn.init.normal_(head.bbox_pred.weight, std=0.05)
        # Boxes about 2.6 strides wide: not a power-of-two fraction of the image, whose
        # area ratio would sit exactly on a RoI level boundary (ceil of an integer).
        head.bbox_pred.bias.fill_(1.3)
        # A box outside the image pools zeros: its logits sit at the bias, not at 0.
        model.roi_heads.mask_head.predictor.bias.fill_(-1.0)
        if model.roi_heads.maskiou_head is not None:
            # Predicted IoUs near 0.9: scores stay positive and below 1.
            torch.nn.init.normal_(model.roi_heads.maskiou_head.maskiou.weight, std=1e-5)
            model.roi_heads.maskiou_head.maskiou.bias.fill_(0.9)
    _calibrate_batchnorm(model, input_size, trunk=model.backbone.bottom_up, images=calibration_images)
    # Mask logits of a few units, varying continuously: crisp masks whose pixels are
    # rarely within float noise of the threshold (huge logits would make a
    # checkerboard whose cell borders interpolate to exactly 0.5).
    # Likewise predicted IoUs of 0.9 +- 0.02, whatever the scale of the features.
    seen: dict = {}
    heads = model.roi_heads
    hooks = [heads.mask_head.predictor.register_forward_hook(lambda m, i, o: seen.setdefault("mask", o))]
    if heads.maskiou_head is not None:
        hooks.append(heads.maskiou_head.maskiou.register_forward_hook(lambda m, i, o: seen.setdefault("iou", o)))
    with torch.no_grad():
        # The test's own pictures when given, else the first synthetic one.
        model(_calibration_batch(model, input_size, calibration_images)[: max(1, len(calibration_images))])
        for h in hooks:
            h.remove()
        spread = float((seen["mask"] - heads.mask_head.predictor.bias[None, :, None, None]).std())
        heads.mask_head.predictor.weight.mul_(8.0 / max(spread, 1e-6))
        if "iou" in seen:
            spread = float((seen["iou"] - heads.maskiou_head.maskiou.bias).std())
            heads.maskiou_head.maskiou.weight.mul_(0.02 / max(spread, 1e-12))
    return model


def small_yolact_plus(arch: str, input_size=128, **kwargs):
    """A seeded YOLACT++ (3 classes) with test weights, DCN offsets switched on."""
    import torch

    from seg_perception.models import build_model

    torch.manual_seed(SEED)
    model = build_model(arch, num_classes=len(CLASSES), input_size=input_size, **kwargs).eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "conv_offset_mask"):
                # Zero offsets (the official init) would test nothing deformable.
                torch.nn.init.normal_(m.conv_offset_mask.weight, std=0.01)
                torch.nn.init.normal_(m.conv_offset_mask.bias, std=0.5)
    _perturb_batchnorm(model)
    return model


def threshold_in_a_gap(scores: np.ndarray, keep: int) -> float:
    """A threshold half-way between the keep-th and (keep+1)-th best scores (no candidate near it)."""
    best = np.sort(np.asarray(scores, np.float64).ravel())[::-1]
    keep = min(keep, len(best) - 1)
    return float((best[keep - 1] + best[keep]) / 2)


def mask_iou(a, b, width: int, height: int) -> float:
    fa = a.to_full(height, width).astype(bool)
    fb = b.to_full(height, width).astype(bool)
    union = np.logical_or(fa, fb).sum()
    return 1.0 if union == 0 else float(np.logical_and(fa, fb).sum() / union)


def skimage_images(count: int = 3) -> list[np.ndarray]:
    """RGB scikit-image samples (astronaut, coffee, chelsea), or [] without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return []
    return [np.ascontiguousarray(f()[..., :3]) for f in (data.astronaut, data.coffee, data.chelsea)[:count]]
