"""The training loop: optimiser, warm-up + cosine/step schedule, checkpoints and resume, curves.

``train(config)`` trains a model of the registry on a COCO-format dataset and, when
asked, exports the result as ONNX + metadata JSON ready for the node. Everything it
writes lies in ``config.out_dir``:

    checkpoints/last.pth           newest weights + optimiser state (resume from here)
    checkpoints/iter_000500.pth    every ``checkpoint_every`` iterations (the newest ``keep_checkpoints``)
    log.jsonl                      one JSON line per logged iteration / evaluation
    loss_curve.png  ap_curve.png   curves (matplotlib)
    config.json                    the configuration the run used

The loss follows the model's ``output_format``: YOLACT's (``losses``) for "yolact",
CenterMask's (``centermask_losses``: FCOS + RoI heads) for "roi". Each model is fed
images normalised its own way (``input_normalisation``: ImageNet mean/std, or the
model's ``input_mean``/``input_std`` such as detectron2's for CenterMask), the same
values the exported graph bakes in.

With a wall-clock budget (``max_minutes``) the schedule follows the elapsed share of
the budget rather than of the iterations (whichever is further along), and the run
ends when the budget is spent: on a shared CPU the speed changes during the run, and
a cosine schedule cut short would leave the model at a high learning rate.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from seg_perception.evaluation.evaluator import dataset_frames, evaluate_predictor
from seg_perception.models.transform import IMAGENET_MEAN, IMAGENET_STD, input_normalisation
from seg_perception.training.augment import EvalResize, TrainAugment
from seg_perception.training.centermask_losses import CenterMaskLossConfig, centermask_losses
from seg_perception.training.dataset import CocoInstanceDataset, DatasetInfo, collate, drop_background_category
from seg_perception.training.losses import YolactLossConfig, yolact_losses



@dataclass
class TrainConfig:
    """Everything a run needs; ``tools/train.py`` fills it from flags or YAML."""

    train_annotations: str
    out_dir: str
    val_annotations: str | None = None
    architecture: str = "yolact_slim"
    input_size: tuple[int, int] = (192, 256)  # (height, width)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)  # YolactLossConfig / CenterMaskLossConfig fields
    iterations: int = 2000
    max_minutes: float | None = None
    batch_size: int = 8
    optimizer: str = "adamw"  # or "sgd"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_iterations: int = 100
    schedule: str = "cosine"  # or "step" (x0.1 at 2/3 and 8/9 of the run)
    grad_clip: float = 10.0
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    eval_every: int = 250
    eval_images: int = 40
    log_every: int = 10
    device: str = "cpu"
    threads: int = 2
    workers: int = 1
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # train into an out_dir that holds an earlier run, replacing its files
    init_weights: str | None = None  # our checkpoint to start from (fine-tuning); ignored when resuming
    export_path: str | None = None
    model_name: str = "seg_perception_model"
    progress: bool = True

    def __post_init__(self) -> None:
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("iterations and batch_size must be >= 1")


def lr_factor(it: int, total: int, warmup: int, schedule: str, time_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at iteration ``it`` (0-based) of ``total``.

    ``time_fraction``: share of a wall-clock budget already spent; the schedule is as
    far along as the larger of the two fractions.
    """
    if warmup > 0 and it < warmup:
        return 0.1 + 0.9 * it / warmup  # linear warm-up from a tenth, as YOLACT's lr_warmup_init
    progress = min(1.0, max((it - warmup) / max(1, total - warmup), time_fraction))
    if schedule == "step":
        return 1.0 if progress < 2 / 3 else 0.1 if progress < 8 / 9 else 0.01
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def normalise(images: Tensor, device: torch.device, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> Tensor:
    """``(B, 3, H, W)`` uint8 RGB -> normalised float, as ``transform.InputNormalizer`` does in the graph."""
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (images.to(device).float() - mean_t) / std_t


def build_model_for(config: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The registry model sized for the dataset's classes and keypoints, with YOLACT's semantic head on.

    Only builders that take ``semantic_seg_head`` (YOLACT's) get it: CenterMask has no
    such head and its builders refuse unknown arguments.
    """
    from seg_perception.models.registry import MODEL_BUILDERS, build_model

    kwargs: dict[str, Any] = {"num_classes": len(info.class_names), "num_keypoints": len(info.keypoint_names),
                              "input_size": config.input_size}
    builder = MODEL_BUILDERS.get(config.architecture)
    if builder is not None and "semantic_seg_head" in inspect.signature(builder).parameters:
        kwargs["semantic_seg_head"] = True
    return build_model(config.architecture, **{**kwargs, **config.model_kwargs})


def loss_function(model: nn.Module, config: TrainConfig) -> Callable[[Tensor, list[dict[str, Any]]], dict[str, Tensor]]:
    """``(normalised images, targets) -> loss terms`` for the model's ``output_format``."""
    input_size = config.input_size
    if getattr(model, "output_format", "yolact") == "roi":
        cm_cfg = CenterMaskLossConfig(**config.loss_kwargs)

        def roi_losses(x: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
            return centermask_losses(model, model.forward_train(x), targets, cm_cfg)  # type: ignore[operator]

        return roi_losses
    y_cfg = YolactLossConfig(**config.loss_kwargs)

    def yolact(x: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        return yolact_losses(model.forward_raw(x), targets, input_size, y_cfg)  # type: ignore[operator]

    return yolact


def torch_predictor(model: nn.Module, info: DatasetInfo, score_threshold: float = 0.05) -> Callable[[np.ndarray], Any]:
    """``rgb (H, W, 3) uint8 -> Detections`` with the torch model and the node's post-processing.

    Used for the AP curve during training (``evaluation.evaluator``); ``seg-perception evaluate``
    scores the ONNX pipeline instead.
    """
    from seg_perception.core.keypoints import class_keypoint_table
    from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact
    from seg_perception.core.postprocess_roi import postprocess_roi
    from seg_perception.core.preprocess import resize_for_network

    h_in, w_in = model.input_size  # type: ignore[attr-defined]
    params = PostprocessParams(score_threshold=score_threshold, max_detections=100)
    table = (class_keypoint_table(info.class_names, len(info.keypoint_names), info.class_keypoints)
             if info.class_keypoints else None)
    device = next(model.parameters()).device
    mean, std = input_normalisation(model)
    roi = getattr(model, "output_format", "yolact") == "roi"

    def predict(rgb: np.ndarray) -> Any:
        batch = resize_for_network(rgb, w_in, h_in)
        with torch.no_grad():
            x = normalise(torch.from_numpy(batch).permute(0, 3, 1, 2), device, mean, std)
            out = {k: v[0].cpu().numpy() for k, v in model(x).items()}
        if roi:  # as pipeline.Pipeline does for box-first models
            return postprocess_roi(out["boxes"], out["scores"], out["classes"], out["masks"],
                                   image_width=rgb.shape[1], image_height=rgb.shape[0], params=params,
                                   keypoint_heatmaps=out.get("keypoint_heatmaps"), network_size=(w_in, h_in),
                                   keypoint_table=table)
        return postprocess_yolact(out["boxes"], out["scores"], out["mask_coeffs"], out["protos"],
                                  image_width=rgb.shape[1], image_height=rgb.shape[0], params=params,
                                  keypoints=out.get("keypoints"), keypoint_table=table)

    return predict


def evaluate_on_dataset(predict: Callable[[np.ndarray], Any], annotations: str | Path, max_images: int | None = None,
                        keypoint_sigmas: list[float] | None = None) -> dict[str, Any]:
    """COCO metrics of ``predict`` on the first ``max_images`` images of a COCO dataset, by the
    one evaluator (``evaluation.evaluator``), with the dataset's classes as training numbers
    them (category order, labelme's ``_background_`` dropped)."""
    from seg_perception.evaluation.coco import read_annotation_file

    doc, _ = drop_background_category(read_annotation_file(annotations))
    class_names = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    return evaluate_predictor(predict, dataset_frames(Path(annotations), max_images), doc, class_names=class_names,
                              keypoint_sigmas=keypoint_sigmas)


def _save_curves(history: list[dict[str, Any]], out_dir: Path) -> None:
    """loss_curve.png and ap_curve.png from the log (skipped quietly without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    losses = [h for h in history if h.get("kind") == "train"]
    if losses:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = [k for k in losses[-1]["losses"]]
        for k in keys + ["total"]:
            ys = [h["losses"].get(k, float("nan")) if k != "total" else h["total"] for h in losses]
            ax.plot([h["iteration"] for h in losses], ys, label=k, lw=2 if k == "total" else 1)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "loss_curve.png", dpi=100)
        plt.close(fig)
    evals = [h for h in history if h.get("kind") == "eval"]
    if evals:
        fig, ax = plt.subplots(figsize=(7, 4))
        its = [h["iteration"] for h in evals]
        for name, key in (("mask AP", ("segm", "AP")), ("box AP", ("bbox", "AP")), ("mask AP50", ("segm", "AP50")),
                          ("keypoint AP", ("keypoints", "AP"))):
            ys = [((h.get(key[0]) or {}).get(key[1]) or 0.0) for h in evals]
            ax.plot(its, ys, marker="o", label=name)
        ax.set_xlabel("iteration")
        ax.set_ylabel("AP (validation subset)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "ap_curve.png", dpi=100)
        plt.close(fig)


def _infinite_batches(loader: torch.utils.data.DataLoader):
    while True:
        yield from loader


def train(config: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) training; returns a summary (iterations, minutes, last losses, last eval, paths)."""
    from seg_perception.models.checkpoint import read_checkpoint, save_checkpoint, state_dict_of

    from seg_perception.evaluation.coco import read_annotation_file, require_images

    out_dir = Path(config.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    claim_output_dir(out_dir, config.resume, config.overwrite)
    dataset = CocoInstanceDataset(config.train_annotations)
    dataset.require_images()
    if config.val_annotations and config.eval_images > 0:
        require_images(config.val_annotations, read_annotation_file(config.val_annotations),
                       max_images=config.eval_images)
    for note in dataset.notes:
        log(f"note: {note}")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, config.threads))
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)

    info = dataset.info
    dataset.transform = TrainAugment(config.input_size, info.keypoint_names)
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=len(dataset) >= config.batch_size,
        collate_fn=collate, num_workers=config.workers, generator=generator,
        worker_init_fn=_seed_worker, persistent_workers=config.workers > 0,
    )
    model = build_model_for(config, info).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    compute_losses = loss_function(model, config)
    mean, std = input_normalisation(model)

    start_it = 0
    total = config.iterations
    history: list[dict[str, Any]] = []
    elapsed_before = 0.0
    last_path = ckpt_dir / "last.pth"
    if config.resume and last_path.exists():
        ckpt = read_checkpoint(last_path)
        model.load_state_dict(state_dict_of(ckpt, str(last_path)))
        optimizer.load_state_dict(ckpt["optimizer"])
        start_it = int(ckpt["iteration"])
        total = config.iterations  # the flags of the resumed run decide its length
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        history = json.loads(ckpt.get("history_json", "[]"))
        log(f"resumed from {last_path} at iteration {start_it} of {total}")
    elif config.init_weights:
        log(init_from_checkpoint(model, config.init_weights, config.architecture))
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    budget_s = config.max_minutes * 60 if config.max_minutes else None
    warmup = effective_warmup(config.warmup_iterations, total, log)

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    def checkpoint(it: int, named: bool) -> None:
        extra = {"optimizer": optimizer.state_dict(), "iteration": it, "total_iterations": total,
                 "elapsed_s": elapsed(),
                 "history_json": json.dumps(history), "class_names": info.class_names,
                 "keypoint_names": info.keypoint_names, "skeleton": [list(e) for e in info.skeleton],
                 "class_keypoints": info.class_keypoints}
        save_checkpoint(model, last_path, extra)
        if named:
            save_checkpoint(model, ckpt_dir / f"iter_{it:06d}.pth", {"iteration": it})
            old = sorted(ckpt_dir.glob("iter_*.pth"))[:-config.keep_checkpoints]
            for p in old:
                p.unlink()

    def evaluate(it: int) -> dict[str, Any] | None:
        if not config.val_annotations or config.eval_images <= 0:
            return None
        model.eval()
        try:
            res = evaluate_on_dataset(torch_predictor(model, info), config.val_annotations, config.eval_images,
                                      info.keypoint_sigmas or None)
        finally:
            model.train()
        entry = {"kind": "eval", "iteration": it, "segm": res["segm"], "bbox": res["bbox"],
                 "keypoints": res["keypoints"]}
        history.append(entry)
        kp = (res["keypoints"] or {}).get("AP")
        log(f"eval @ {it}: mask AP {res['segm']['AP']:.3f}  box AP {res['bbox']['AP']:.3f}  "
            f"keypoint AP {kp if kp is None else round(kp, 3)}")
        return entry

    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_it, unit="it", dynamic_ncols=True, mininterval=5.0)
    model.train()
    t_start = time.perf_counter()
    batches = _infinite_batches(loader)
    running: dict[str, float] = {}
    it = start_it
    while it < total:
        images, targets = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(it, total, warmup, config.schedule,
                                                elapsed() / budget_s if budget_s else 0.0)
        losses = compute_losses(normalise(images, device, mean, std), targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
        it += 1
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if budget_s is not None and elapsed() >= budget_s and it < total:
            log(f"time budget of {config.max_minutes} min spent after {it} iterations")
            total = it
            if bar is not None:
                bar.total = total
        if it % config.log_every == 0 or it == total:
            n = config.log_every if it % config.log_every == 0 else (it % config.log_every) or 1
            avg = {k: v / n for k, v in running.items()}
            running = {}
            entry = {"kind": "train", "iteration": it, "lr": optimizer.param_groups[0]["lr"], "losses": avg,
                     "total": sum(avg.values()), "elapsed_s": elapsed()}
            history.append(entry)
            with open(out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{entry['total']:.3f}")
        if bar is not None:
            bar.update(1)
        if it % config.checkpoint_every == 0 or it == total:
            checkpoint(it, named=True)
        if (it % config.eval_every == 0 or it == total) and config.val_annotations:
            entry = evaluate(it)
            if entry is not None:
                with open(out_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
            checkpoint(it, named=False)  # the history in last.pth includes the evaluation
            _save_curves(history, out_dir)
    if bar is not None:
        bar.close()
    _save_curves(history, out_dir)
    minutes = (elapsed_before + time.perf_counter() - t_start) / 60
    summary: dict[str, Any] = {"iterations": it, "minutes": minutes, "checkpoint": str(last_path),
                               "last_losses": next((h["losses"] for h in reversed(history) if h["kind"] == "train"), {}),
                               "last_eval": next((h for h in reversed(history) if h["kind"] == "eval"), None)}
    if config.export_path:
        summary["onnx"] = str(export_trained(model, info, config.export_path, config.model_name))
        log(f"exported {summary['onnx']}")
    return summary


# What a run writes into its out_dir (see the module docstring); an earlier run is recognised by these.
RUN_FILES = ("config.json", "log.jsonl", "loss_curve.png", "ap_curve.png")


class OutputDirError(ValueError):
    """The output directory holds an earlier run that this one would overwrite."""


def claim_output_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a directory holding an earlier run unless resuming or told to overwrite.

    Without this a second run appended to the first's log, replaced its ``last.pth`` and
    curves, and a run that failed early still replaced its ``config.json``. With
    ``overwrite`` the earlier run's files (and only those) are deleted.
    """
    ckpt_dir = out_dir / "checkpoints"
    earlier = [out_dir / f for f in RUN_FILES if (out_dir / f).exists()]
    earlier += sorted(ckpt_dir.glob("*.pth")) if ckpt_dir.is_dir() else []
    if not earlier or resume:
        return
    if not overwrite:
        raise OutputDirError(f"{out_dir} holds an earlier run ({', '.join(p.name for p in earlier[:4])}); "
                             "continue it with --resume, replace it with --overwrite, or choose another --out")
    for path in earlier:
        path.unlink()


def effective_warmup(warmup: int, total: int, log: Callable[[str], None] = print) -> int:
    """The warm-up to use: ``warmup``, or a tenth of the run when ``warmup`` would take more than half of it
    (a 100-iteration warm-up in a 60-iteration run never reaches the set learning rate)."""
    if warmup <= total // 2:
        return warmup
    scaled = total // 10
    log(f"note: warm-up of {warmup} iterations is longer than half the run ({total} iterations); "
        f"using {scaled} (set --warmup to choose)")
    return scaled


def init_from_checkpoint(model: nn.Module, path: str | Path, architecture: str) -> str:
    """Start from another run's weights: every tensor whose name and shape match is copied.

    This is how a team fine-tunes the shipped model on its own classes or at another
    input size: the backbone, FPN and prototypes carry over, heads whose shape depends
    on the class or keypoint count start fresh. Returns a one-line report.
    """
    from seg_perception.models.checkpoint import CheckpointError, checkpoint_model_spec, read_checkpoint, state_dict_of

    ckpt = read_checkpoint(path)
    spec = checkpoint_model_spec(ckpt)
    if spec is not None and spec[0] != architecture:
        raise CheckpointError(f"{path} holds {spec[0]} weights; this run trains {architecture}")
    source = state_dict_of(ckpt, str(path))
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise CheckpointError(f"no tensor of {path} fits {architecture} (names or shapes all differ)")
    model.load_state_dict(matched, strict=False)
    fresh = [k for k in own if k not in matched]
    return (f"initialised {len(matched)} of {len(own)} tensors from {path}"
            + (f"; {len(fresh)} start fresh (e.g. {fresh[0]})" if fresh else ""))


def export_trained(model: nn.Module, info: DatasetInfo, path: str | Path, name: str) -> Path:
    """ONNX + metadata JSON of a trained model, with the dataset's classes and keypoint tables."""
    from seg_perception.models.export import export_onnx, metadata_for_model

    mean, std = input_normalisation(model)
    metadata = metadata_for_model(model, name, info.class_names, info.keypoint_names, info.skeleton,
                                  class_keypoints=info.class_keypoints, mean=mean, std=std, mask_crop="box")
    return export_onnx(model.cpu().eval(), metadata, path)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


__all__ = ["TrainConfig", "lr_factor", "input_normalisation", "normalise", "build_model_for", "loss_function",
           "torch_predictor", "evaluate_on_dataset", "train", "export_trained"]
