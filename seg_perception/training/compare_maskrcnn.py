"""A like-for-like baseline: torchvision's Mask R-CNN trained on the same data for the same CPU time.

``python -m seg_perception.training.compare_maskrcnn --minutes 10 --out build/compare``
trains ``torchvision.models.detection.MaskRCNN`` from scratch (no pretrained weights,
like the shipped model) on the synthetic training set with the same augmentation,
then measures mask/box AP on the first ``--eval-images`` validation images with the
same evaluator (``evaluation.evaluator``) and its CPU frames per second.
``--checkpoint`` evaluates one of our YOLACT checkpoints the same way (torch, same
images), so both sides of the table in docs/training.md come from one protocol.

The backbone is a ResNet-18 FPN by default (``--backbone resnet50`` for the standard
``maskrcnn_resnet50_fpn`` layout): from scratch on a CPU in minutes the ResNet-50 would
see too few images to be a fair opponent.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def build_maskrcnn(num_classes: int, backbone: str = "resnet18", min_size: int = 288, max_size: int = 384) -> Any:
    """Mask R-CNN (torchvision) with random weights; ``num_classes`` without background."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    trunk = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5,
                                norm_layer=torch.nn.BatchNorm2d)
    return MaskRCNN(trunk, num_classes=num_classes + 1, min_size=min_size, max_size=max_size)


def maskrcnn_predictor(model: Any, score_threshold: float = 0.05) -> Any:
    """``rgb -> Detections`` for a torchvision Mask R-CNN (masks pasted by torchvision, threshold 0.5)."""
    from seg_perception.core.types import CroppedMask, Detections

    def predict(rgb: np.ndarray) -> Detections:
        x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        with torch.no_grad():
            out = model([x])[0]
        keep = out["scores"] >= score_threshold
        boxes = out["boxes"][keep].numpy().astype(np.float32)
        masks = []
        h, w = rgb.shape[:2]
        for b, m in zip(boxes, out["masks"][keep][:, 0].numpy()):
            x1, y1 = int(np.clip(np.floor(b[0]), 0, w - 1)), int(np.clip(np.floor(b[1]), 0, h - 1))
            x2, y2 = int(np.clip(np.ceil(b[2]), x1 + 1, w)), int(np.clip(np.ceil(b[3]), y1 + 1, h))
            masks.append(CroppedMask(x1, y1, (m[y1:y2, x1:x2] > 0.5).astype(np.uint8)))
        n = len(masks)
        return Detections(boxes=boxes.reshape(n, 4), scores=out["scores"][keep].numpy().astype(np.float32),
                          class_ids=(out["labels"][keep].numpy() - 1).astype(np.int32), masks=masks,
                          keypoints=np.zeros((n, 0, 3), np.float32))

    return predict


def train_maskrcnn(train_annotations: str, minutes: float, batch_size: int = 4, lr: float = 0.02,
                   backbone: str = "resnet18", seed: int = 0, log=print) -> tuple[Any, dict[str, Any]]:
    """Train for ``minutes`` of wall-clock time (SGD, warm-up then constant, cosine in the last half)."""
    from seg_perception.training.augment import TrainAugment
    from seg_perception.training.dataset import CocoInstanceDataset

    random.seed(seed)
    torch.manual_seed(seed)
    ds = CocoInstanceDataset(train_annotations)
    ds.transform = TrainAugment((288, 384), ds.info.keypoint_names)
    model = build_maskrcnn(len(ds.info.class_names), backbone)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    budget = minutes * 60
    t0 = time.perf_counter()
    it = 0
    order: list[int] = []
    while time.perf_counter() - t0 < budget:
        frac = (time.perf_counter() - t0) / budget
        warm = min(1.0, (it + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = lr * warm * (0.5 * (1 + np.cos(np.pi * frac)) if frac > 0.5 else 1.0)
        images, targets = [], []
        for _ in range(batch_size):
            if not order:
                order = list(range(len(ds)))
                random.shuffle(order)
            s = ds[order.pop()]
            keep = (s["boxes"][:, 2] > s["boxes"][:, 0] + 1) & (s["boxes"][:, 3] > s["boxes"][:, 1] + 1)
            images.append(s["image"].float() / 255.0)
            targets.append({"boxes": s["boxes"][keep], "labels": s["labels"][keep] + 1, "masks": s["masks"][keep]})
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
        it += 1
        if it % 10 == 0:
            log(f"maskrcnn it {it} loss {float(loss):.3f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    return model, {"iterations": it, "images_seen": it * batch_size, "minutes": (time.perf_counter() - t0) / 60}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seg_perception.training.compare_maskrcnn",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default="build/data/synth_train/annotations.json")
    p.add_argument("--val", default="build/data/synth_val/annotations.json")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--eval-images", type=int, default=50)
    p.add_argument("--checkpoint", default=None, help="also evaluate this YOLACT checkpoint (torch, same images)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("build/compare"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from seg_perception.training.trainer import evaluate_on_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if args.checkpoint:
        from seg_perception.models.checkpoint import checkpoint_model_spec, load_state_dict_strict, read_checkpoint, state_dict_of
        from seg_perception.models.registry import build_model
        from seg_perception.training.dataset import CocoInstanceDataset
        from seg_perception.training.trainer import torch_predictor

        ckpt = read_checkpoint(args.checkpoint)
        arch, kwargs = checkpoint_model_spec(ckpt)  # type: ignore[misc]
        model = build_model(arch, **kwargs)
        load_state_dict_strict(model, state_dict_of(ckpt, args.checkpoint), args.checkpoint)
        model.eval()
        info = CocoInstanceDataset(args.val).info
        ev = evaluate_on_dataset(torch_predictor(model, info), args.val, args.eval_images, info.keypoint_sigmas or None)
        result["yolact"] = {"checkpoint": args.checkpoint, "iteration": ckpt.get("iteration"),
                            "train_minutes": float(ckpt.get("elapsed_s", 0.0)) / 60,
                            "mask_AP": ev["segm"]["AP"], "box_AP": ev["bbox"]["AP"], "fps_torch": ev["fps"]}
        print(json.dumps(result["yolact"]))
    if args.minutes > 0:
        model, stats = train_maskrcnn(args.train, args.minutes, backbone=args.backbone)
        ev = evaluate_on_dataset(maskrcnn_predictor(model), args.val, args.eval_images)
        result["maskrcnn"] = {"backbone": args.backbone, **stats, "mask_AP": ev["segm"]["AP"],
                              "box_AP": ev["bbox"]["AP"], "fps_torch": ev["fps"]}
        print(json.dumps(result["maskrcnn"]))
    (args.out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
