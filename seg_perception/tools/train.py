"""``seg-perception train``: train a model of the registry on a COCO-format dataset.

Configuration comes from flags, or from a small YAML file (``--config``) whose keys
are ``TrainConfig`` field names; flags given on the command line win over the file.
The classes, keypoint names, skeleton and per-class keypoints come from the dataset.

Example (the shipped model, see docs/training.md)::

    seg-perception train --train build/data/synth_train/annotations.json \\
        --val build/data/synth_val/annotations.json --out build/train_default \\
        --max-minutes 55 --export build/train_default/model.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-perception train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig fields (flags override it)")
    p.add_argument("--train", dest="train_annotations", help="COCO annotations of the training set")
    p.add_argument("--val", dest="val_annotations", help="COCO annotations for the AP curve (optional)")
    p.add_argument("--out", dest="out_dir", help="output directory (checkpoints, log, curves)")
    p.add_argument("--arch", dest="architecture", help="model builder name (default yolact_slim)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="network input (default 192 256)")
    p.add_argument("--fpn-channels", type=int, help="FPN/head width (builder default otherwise)")
    p.add_argument("--widths", type=int, nargs=4, help="yolact_slim backbone stage widths")
    p.add_argument("--iterations", type=int, help="iterations (default 2000)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget: fewer iterations if they do not fit")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=("adamw", "sgd"))
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", dest="warmup_iterations", type=int)
    p.add_argument("--schedule", choices=("cosine", "step"))
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-images", type=int, help="validation images per evaluation (0: none)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default 2)")
    p.add_argument("--workers", type=int, help="data-loading worker processes (default 1)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/checkpoints/last.pth")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="OUT holds an earlier run: delete its checkpoints, log and curves and start afresh")
    p.add_argument("--init-weights", help="start from this checkpoint of ours (fine-tuning: tensors whose name and "
                   "shape match are copied, a new schedule starts)")
    p.add_argument("--export", dest="export_path", help="write the trained model as ONNX (+ .json) here")
    p.add_argument("--name", dest="model_name", help="model name in the metadata")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """``TrainConfig`` from the YAML file (if any) overridden by the flags that were given."""
    from seg_perception.training.trainer import TrainConfig

    values: dict[str, Any] = {}
    if args.config is not None:
        import yaml

        values.update(yaml.safe_load(args.config.read_text()) or {})
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "fpn_channels", "widths")}
    values.update(flags)
    kwargs = dict(values.get("model_kwargs") or {})
    if args.fpn_channels is not None:
        kwargs["fpn_channels"] = args.fpn_channels
    if args.widths is not None:
        kwargs["widths"] = list(args.widths)
    values["model_kwargs"] = kwargs
    missing = [k for k in ("train_annotations", "out_dir") if not values.get(k)]
    if missing:
        raise ValueError(f"missing {', '.join('--' + m.split('_')[0] for m in missing)} (or the key in --config)")
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from seg_perception.evaluation.coco import AnnotationError
    from seg_perception.models.checkpoint import CheckpointError
    from seg_perception.training.trainer import OutputDirError, train

    try:
        summary = train(config)
    except (CheckpointError, AnnotationError, OutputDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
