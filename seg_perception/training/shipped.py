"""How the shipped default model is made and measured (docs/models.md, docs/training.md).

``python -m seg_perception.training.shipped record [--model M] [--val DIR]`` evaluates
the model on the held-out synthetic validation set (generated from ``VAL_SEED`` when
``DIR`` lacks it) and on its first ``CI_SUBSET`` images, and writes the figures to
``<model>.eval.json``, which ``test/training/test_shipped_model.py`` checks against.

``python -m seg_perception.training.shipped weights --checkpoint RUN/checkpoints/last.pth``
writes the run's weights without its optimiser state, with the shipped model's class
and keypoint tables, to ``<model>.pth``: what ``seg-perception train --init-weights``
fine-tunes from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The data the shipped model was trained and validated on (synth.write_coco_dataset).
TRAIN_SEED = 0
TRAIN_IMAGES = 2000
VAL_SEED = 1000  # held out: no training image comes from this seed
VAL_IMAGES = 200
IMAGE_WIDTH, IMAGE_HEIGHT = 384, 288
CI_SUBSET = 24  # images of the validation set the CI test re-evaluates (< 60 s)
TOLERANCE = 0.03  # mask AP the CI test tolerates below the recorded subset figure


def record(model: Path, val_dir: Path, threads: int = 2) -> dict:
    """Evaluate ``model`` on the validation set and its CI subset; write and return the record."""
    from seg_perception.synth import write_coco_dataset
    from seg_perception.evaluation.evaluator import dataset_frames, evaluate_model
    from seg_perception.pipeline import load_evaluation_pipeline

    annotations = val_dir / "annotations.json"
    if not annotations.exists():
        write_coco_dataset(val_dir, VAL_IMAGES, VAL_SEED, IMAGE_WIDTH, IMAGE_HEIGHT)
    out: dict = {
        "model": model.name,
        "model_bytes": model.stat().st_size,
        "validation_set": {"generator": "seg_perception.synth.write_coco_dataset", "seed": VAL_SEED,
                           "num_images": VAL_IMAGES, "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT},
        "tolerance": TOLERANCE,
        "score_threshold": 0.05,
    }
    for key, n in (("full", VAL_IMAGES), ("ci_subset", CI_SUBSET)):
        pipeline = load_evaluation_pipeline(model, threads=threads)
        try:
            report = evaluate_model(pipeline, dataset_frames(annotations, n), annotations)
        finally:
            pipeline.close()
        out[key] = {"num_images": report["images"], "segm": report["segm"], "bbox": report["bbox"],
                    "keypoints": report["keypoints"], "fps": report["fps"]}
        if key == "full":
            out[key]["per_class"] = report["per_class"]
    model.with_suffix(".eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def write_weights(checkpoint: Path, model: Path) -> Path:
    """The weights of ``checkpoint`` (the run that produced ``model``) as ``<model>.pth``, fine-tunable."""
    import torch

    from seg_perception.core.metadata import ModelMetadata
    from seg_perception.models.checkpoint import CheckpointError, checkpoint_model_spec, read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    spec = checkpoint_model_spec(ckpt)
    metadata = ModelMetadata.load(model.with_suffix(".json"))
    if spec is None or spec[0] != metadata.architecture or list(ckpt.get("class_names", [])) != metadata.class_names:
        raise CheckpointError(f"{checkpoint} is not a {metadata.architecture} training checkpoint with the classes "
                              f"of {model.name}")
    keep = ("format", "architecture", "model_kwargs", "state_dict", "iteration", "elapsed_s")
    payload = {k: ckpt[k] for k in keep if k in ckpt}
    payload.update(class_names=metadata.class_names, keypoint_names=metadata.keypoint_names,
                   skeleton=[list(e) for e in metadata.skeleton], class_keypoints=metadata.class_keypoints)
    out = model.with_suffix(".pth")
    torch.save(payload, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seg_perception.training.shipped", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("record", "weights"))
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped model)")
    p.add_argument("--checkpoint", type=Path, help="weights: the training checkpoint the model was exported from")
    p.add_argument("--val", type=Path, default=Path("build/data/synth_val"), help="validation set directory")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from seg_perception.pipeline import resolve_model_path

    model = resolve_model_path(args.model)
    if args.command == "weights":
        if args.checkpoint is None:
            p.error("weights needs --checkpoint")
        print(f"wrote {write_weights(args.checkpoint, model)}")
        return 0
    result = record(model, args.val, args.threads)
    print(json.dumps({k: v for k, v in result.items() if k != "full"} | {"full": {k: v for k, v in result["full"].items()
                                                                            if k != "per_class"}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
