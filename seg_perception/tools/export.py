"""``seg-perception export``: weights + architecture + class names -> ONNX model and metadata JSON.

Accepts our own checkpoints (which record their architecture), official YOLACT /
YOLACT++ ``.pth`` files (bare state dicts: say which network with ``--arch``) and
centermask2 ``.pth`` files (``{"model": state_dict, ...}``). Files are read with
``torch.load(weights_only=True)`` only and loaded strictly: a missing, unexpected or
mis-shaped tensor stops the export with its name.

Writes ``OUT.onnx`` (opset >= 17, static input size), ``OUT.json`` (model metadata),
and for YOLACT++ ``OUT.maskiou.npz`` (mask re-scoring weights, see ``models.yolact_plus``).
By default the exported graph is run once with ONNX Runtime and compared with PyTorch.

Examples::

    seg-perception export yolact_base_54_800000.pth --arch yolact_base --classes coco
    seg-perception export yolact_plus_resnet50_54_800000.pth --arch yolact_plus_resnet50 --classes coco
    seg-perception export centermask2-lite-V-19-eSE-FPN-ms-4x.pth --arch centermask_lite_vovnet19_slim_dw \\
        --classes coco --input-size 640x480 -o models/centermask_lite.onnx
    seg-perception export --arch maskrcnn_resnet50_fpn --weights coco --input-size 640x480 -o models/maskrcnn.onnx
    seg-perception export --arch keypointrcnn_resnet50_fpn --checkpoint kp.pth --mask-checkpoint mrcnn.pth

torchvision's Mask R-CNN / Keypoint R-CNN (``models.torchvision_rcnn``) take ``--weights coco``
(torchvision's weights API and torch hub cache) or ``--checkpoint`` (a torchvision state dict).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

MIN_OPSET = 17


class ExportError(RuntimeError):
    """A user-facing failure; the message says what to change."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_name_list(spec: str, what: str, coco: list[str]) -> list[str]:
    """``coco`` or a file: one name per line (blank lines and ``#`` comments skipped) or a JSON list."""
    if spec == "coco":
        return list(coco)
    path = Path(spec)
    if not path.is_file():
        raise ExportError(f"{what} file not found: {path} (give a file with one name per line, or 'coco')")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExportError(f"{what} file {path} is not valid JSON: {exc}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ExportError(f"{what} file {path} must hold a JSON list of strings")
    else:
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        names = [n for n in names if n]
    if not names:
        raise ExportError(f"{what} file {path} lists no names")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExportError(f"{what} file {path} repeats {duplicates}")
    return names


def read_skeleton(spec: str, keypoint_names: list[str], coco: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``coco``, or a file of edges: one ``a b`` per line (indices or keypoint names) or a JSON list of pairs."""
    if spec == "coco":
        return list(coco)
    path = Path(spec)
    if not path.is_file():
        raise ExportError(f"skeleton file not found: {path}")
    if path.suffix == ".json":
        try:
            pairs = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"skeleton file {path} is not valid JSON: {exc}") from None
    else:
        pairs = [line.split("#", 1)[0].replace(",", " ").split() for line in path.read_text().splitlines()]
        pairs = [p for p in pairs if p]
    index = {n: i for i, n in enumerate(keypoint_names)}
    edges = []
    for pair in pairs:
        if len(pair) != 2:
            raise ExportError(f"skeleton file {path}: each edge needs two keypoints, got {pair}")
        ends = []
        for end in pair:
            if isinstance(end, int) or (isinstance(end, str) and end.isdigit()):
                ends.append(int(end))
            elif end in index:
                ends.append(index[end])
            else:
                raise ExportError(f"skeleton file {path}: unknown keypoint {end!r}")
        edges.append((ends[0], ends[1]))
    return edges


def parse_input_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"640x480"`` (width x height) -> (480, 640) as (height, width)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must be N or WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"input size must be positive, got {text!r}")
    return h, w


def _checkpoint_classes(state: dict[str, Any]) -> int | None:
    """Classes a state dict predicts, from its classifier (for a friendlier mismatch message)."""
    conf = state.get("prediction_layers.0.conf_layer.weight")
    box = state.get("prediction_layers.0.bbox_layer.weight")
    if conf is not None and box is not None:
        anchors = int(box.shape[0]) // 4
        return int(conf.shape[0]) // anchors - 1 if anchors else None
    cls = state.get("proposal_generator.fcos_head.cls_logits.weight")
    return int(cls.shape[0]) if cls is not None else None


# dbolya/yolact model-zoo file names (<config>_<epoch>_<iteration>.pth) -> the --arch values
# that are that network. im700 and base hold the same tensors (only the input size and
# anchors differ), so a strict load cannot tell them apart; the name can.
_OFFICIAL_YOLACT_FILES: dict[str, tuple[str, ...]] = {
    "yolact_base": ("yolact_base", "yolact_resnet101"),
    "yolact_resnet50": ("yolact_resnet50",),
    "yolact_im700": ("yolact_im700",),
    "yolact_plus_base": ("yolact_plus_base", "yolact_plus_resnet101"),
    "yolact_plus_resnet50": ("yolact_plus_resnet50",),
}
_OFFICIAL_NAME = re.compile(r"^(yolact_(?:plus_)?(?:base|resnet50|im700))_\d+_\d+\.pth$")


def official_name_mismatch(weights: Path, arch: str) -> str | None:
    """Why ``--arch`` cannot be the network of an official YOLACT file with this name, or None.

    Only files that keep their model-zoo name (``yolact_im700_54_800000.pth``) are checked.
    """
    m = _OFFICIAL_NAME.match(weights.name)
    if m is None or arch in _OFFICIAL_YOLACT_FILES[m.group(1)]:
        return None
    archs = " or ".join(f"--arch {a}" for a in _OFFICIAL_YOLACT_FILES[m.group(1)])
    return (f"{weights} is the official {m.group(1)} checkpoint, not {arch} (same tensors would load, with the "
            f"wrong input size and anchors); use {archs}")


def build_parser() -> argparse.ArgumentParser:
    from seg_perception.models.registry import MODEL_BUILDERS  # noqa: F401  (listed in --help)
    from seg_perception.models.torchvision_rcnn import MASK_ARCHITECTURES, TORCHVISION_RCNN

    parser = argparse.ArgumentParser(
        prog="seg-perception export",
        description="Export weights to an ONNX model plus its metadata JSON (and, for YOLACT++, its "
                    "MaskIoU re-scoring weights). Reads .pth files with torch.load(weights_only=True) only.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="architectures: " + ", ".join(sorted(MODEL_BUILDERS)),
    )
    parser.add_argument("weights", type=Path, nargs="?",
                        help="our checkpoint, an official YOLACT/YOLACT++ .pth, or a centermask2 .pth "
                             "(torchvision architectures take --weights coco or --checkpoint instead)")
    parser.add_argument("--arch", help="network the weights belong to (required for official .pth files)")
    parser.add_argument("--classes", help="class names: 'coco' (the 80 COCO categories) or a file, one name per line")
    parser.add_argument("--keypoints", help="keypoint names: 'coco' (17 COCO person keypoints) or a file; "
                                            "adds the keypoint head/branch")
    parser.add_argument("--skeleton", help="keypoint edges: 'coco' or a file of 'a b' lines (indices or names); "
                                           "default 'coco' with --keypoints coco")
    parser.add_argument("--input-size", type=parse_input_size, metavar="N|WxH",
                        help="static network input, e.g. 550 or 640x480 (default: the architecture's)")
    parser.add_argument("-o", "--output", type=Path, help="ONNX file to write (default: WEIGHTS with .onnx)")
    parser.add_argument("--name", help="model name recorded in the metadata (default: the output file's stem)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset, >= {MIN_OPSET} (default {MIN_OPSET})")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (default: batch 1)")
    parser.add_argument("--no-mask-rescoring", action="store_true",
                        help="YOLACT++: export without MaskIoU re-scoring (allows inputs below 256 px)")
    parser.add_argument("--no-check", action="store_true", help="skip running the graph once with ONNX Runtime")
    tv = parser.add_argument_group(
        "torchvision Mask R-CNN / Keypoint R-CNN (--arch " + ", ".join(TORCHVISION_RCNN) + ")")
    tv.add_argument("--weights", dest="pretrained", choices=["coco"],
                    help="torchvision's COCO weights through its weights API (downloaded once into the torch hub "
                         "cache, hash-checked, with a progress bar)")
    tv.add_argument("--checkpoint", type=Path, help="a torchvision state dict (.pth) of --arch")
    tv.add_argument("--mask-arch", choices=list(MASK_ARCHITECTURES), default=MASK_ARCHITECTURES[0],
                    help="Keypoint R-CNN: the Mask R-CNN whose mask head masks each person (default %(default)s)")
    tv.add_argument("--mask-checkpoint", type=Path,
                    help="Keypoint R-CNN with --checkpoint: the --mask-arch state dict (.pth)")
    tv.add_argument("--max-detections", type=int, default=100,
                    help="detections per image kept by the graph (torchvision's box_detections_per_img, default 100)")
    tv.add_argument("--save-pth", action="store_true",
                    help="also write OUT.pth (our checkpoint format) for the torch backend")
    return parser


def export_weights(args: argparse.Namespace) -> Path:
    """Do the export described by parsed arguments; raise ExportError with a user-facing message."""
    import torch

    from seg_perception.core.metadata import COCO_CLASSES, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
    from seg_perception.models.checkpoint import (
        CheckpointError,
        checkpoint_model_spec,
        load_state_dict_strict,
        read_checkpoint,
        state_dict_of,
    )
    from seg_perception.models.export import export_onnx, metadata_for_model
    from seg_perception.models.registry import MODEL_BUILDERS, build_model
    from seg_perception.models.yolact_plus import YolactPlus, maskiou_path_for, save_maskiou_weights

    if args.opset < MIN_OPSET:
        raise ExportError(f"--opset must be at least {MIN_OPSET} (GridSample, RoiAlign with half-pixel "
                          f"alignment and GroupNorm need it), got {args.opset}")
    from seg_perception.models.torchvision_rcnn import TORCHVISION_RCNN

    if args.arch in TORCHVISION_RCNN:
        return export_torchvision(args)
    if args.pretrained or args.checkpoint or args.mask_checkpoint or args.save_pth:
        raise ExportError("--weights, --checkpoint, --mask-checkpoint and --save-pth are for --arch "
                          + ", ".join(TORCHVISION_RCNN))
    if args.weights is None:
        raise ExportError("give the weights file to export (or --arch with --weights coco for torchvision models)")
    out = args.output or args.weights.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ExportError(f"the output file must end in .onnx: {out}")
    started = time.monotonic()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))

    _say(f"[1/5] reading {args.weights} (weights_only)")
    try:
        checkpoint = read_checkpoint(args.weights)
        state = state_dict_of(checkpoint, str(args.weights))
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    spec = checkpoint_model_spec(checkpoint)
    kwargs: dict[str, Any] = {}
    if spec is not None:
        arch, kwargs = spec
        if args.arch and args.arch != arch:
            raise ExportError(f"{args.weights} is a {arch} checkpoint, not {args.arch}; drop --arch or fix it")
    elif args.arch:
        arch = args.arch
        mismatch = official_name_mismatch(args.weights, arch)
        if mismatch:
            raise ExportError(mismatch)
    else:
        raise ExportError(f"{args.weights} is a bare state dict (as official .pth files are): say which network "
                          f"it is with --arch, one of: {', '.join(sorted(MODEL_BUILDERS))}")
    if arch not in MODEL_BUILDERS:
        raise ExportError(f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(MODEL_BUILDERS))}")
    _say(f"      {len(state)} tensors, architecture {arch}")

    if args.classes:
        classes = read_name_list(args.classes, "classes", COCO_CLASSES)
    elif isinstance(checkpoint, dict) and isinstance(checkpoint.get("class_names"), list):
        classes = [str(c) for c in checkpoint["class_names"]]
    else:
        raise ExportError("give the class names with --classes coco or --classes FILE (one name per line)")
    predicted = _checkpoint_classes(state)
    if predicted is not None and predicted != len(classes):
        raise ExportError(f"{args.weights} predicts {predicted} classes but the class list has {len(classes)}; "
                          "give the class names the model was trained with")
    # Our training checkpoints carry their dataset's keypoint tables; flags override them.
    trained: dict[str, Any] = checkpoint if isinstance(checkpoint, dict) and spec is not None else {}
    extra: dict[str, Any] = {"mask_crop": "box"} if trained else {}  # our trainer's mask loss crops at the box
    if args.keypoints:
        keypoints = read_name_list(args.keypoints, "keypoints", COCO_PERSON_KEYPOINTS)
    else:
        keypoints = [str(k) for k in trained.get("keypoint_names") or []]
        if keypoints and trained.get("class_keypoints"):
            extra["class_keypoints"] = {str(c): [int(i) for i in ks] for c, ks in trained["class_keypoints"].items()}
    if args.skeleton and not keypoints:
        raise ExportError("--skeleton needs --keypoints")
    skeleton_spec = args.skeleton or ("coco" if args.keypoints == "coco" else None)
    if skeleton_spec:
        skeleton = read_skeleton(skeleton_spec, keypoints, COCO_PERSON_SKELETON)
    else:
        skeleton = [(int(a), int(b)) for a, b in trained.get("skeleton") or []] if keypoints else []

    kwargs = dict(kwargs)
    kwargs["num_classes"] = len(classes)
    kwargs["num_keypoints"] = len(keypoints)
    # Our checkpoints record their size; official YOLACT weights were trained at one size (CenterMask's
    # multi-scale training makes other sizes fine, so it is not warned about).
    trained_size = kwargs.get("input_size") or (trained_input_size(arch) if arch.startswith("yolact") else None)
    if args.input_size and trained_size:
        trained_hw = (tuple(trained_size) if isinstance(trained_size, (list, tuple))
                      else (trained_size, trained_size))
        if trained_hw != tuple(args.input_size):
            _say(f"      WARNING: {args.weights.name} was trained at {trained_hw[1]}x{trained_hw[0]}; exported at "
                 f"{args.input_size[1]}x{args.input_size[0]} its accuracy can collapse (box AP 0.70 -> 0.02 seen). "
                 "Fine-tune at the new size first: seg-perception train --init-weights ... --input-size H W")
    if args.input_size:
        kwargs["input_size"] = args.input_size
    if args.no_mask_rescoring:
        if not arch.startswith("yolact_plus"):
            raise ExportError("--no-mask-rescoring only applies to YOLACT++ architectures")
        kwargs["mask_rescoring"] = False
    _say(f"[2/5] building {arch}: {len(classes)} classes, {len(keypoints)} keypoints"
         + (f", input {kwargs['input_size'][1]}x{kwargs['input_size'][0]}" if "input_size" in kwargs else ""))
    try:
        model = build_model(arch, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"cannot build {arch}: {exc}") from None

    _say("[3/5] loading the weights strictly")
    try:
        report = load_state_dict_strict(model, state, str(args.weights))
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    ignored = f", ignored {len(report.ignored)} training-only/legacy keys" if report.ignored else ""
    _say(f"      loaded {len(report.loaded)} tensors{ignored}")
    model.eval()

    name = args.name or out.stem
    rescoring = isinstance(model, YolactPlus) and model.mask_rescoring
    if rescoring:
        extra["maskiou_weights"] = maskiou_path_for(out).name
    metadata = metadata_for_model(model, name, classes, keypoints, skeleton, **extra)
    _say(f"[4/5] exporting ONNX (opset {args.opset}, input {metadata.input_width}x{metadata.input_height}, "
         f"{metadata.output_format} outputs)")
    try:
        export_onnx(model, metadata, out, opset=args.opset, dynamic_batch=args.dynamic_batch)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if rescoring:
        save_maskiou_weights(model, maskiou_path_for(out))

    _check_export(args, model, metadata, out)
    written = [out, out.with_suffix(".json")] + ([maskiou_path_for(out)] if rescoring else [])
    for path in written:
        _say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    _say(f"done in {time.monotonic() - started:.0f} s; next: seg-perception engine {out} --fp16")
    return out


def trained_input_size(arch: str) -> Any:
    """The input size an architecture's builder defaults to: the size its official weights were trained at."""
    import inspect

    from seg_perception.models.registry import MODEL_BUILDERS

    parameter = inspect.signature(MODEL_BUILDERS[arch]).parameters.get("input_size")
    return None if parameter is None else parameter.default


def _check_export(args: argparse.Namespace, model: Any, metadata: Any, out: Path) -> None:
    """Step 5 of every export: the written graph once through ONNX Runtime against PyTorch."""
    if args.no_check:
        _say("[5/5] skipped the ONNX Runtime check (--no-check)")
        return
    _say("[5/5] running the graph once with ONNX Runtime and PyTorch")
    worst = check_against_torch(model, metadata, out)
    _say(f"      largest output difference {worst:.2e}")
    if not worst < 1e-2:
        _say("      WARNING: ONNX Runtime and PyTorch disagree more than float rounding explains; "
             "compare the outputs before deploying this model")


def _torchvision_state(path: Path, what: str) -> dict[str, Any]:
    """A torchvision state dict read with weights_only; ExportError names the file."""
    from seg_perception.models.checkpoint import CheckpointError, read_checkpoint, state_dict_of

    if not path.is_file():
        raise ExportError(f"{what} not found: {path}")
    try:
        return state_dict_of(read_checkpoint(path), str(path))
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None


def export_torchvision(args: argparse.Namespace) -> Path:
    """``--arch`` one of torchvision's R-CNNs: COCO weights or a state dict -> ONNX + metadata (+ .pth)."""
    import torch

    from seg_perception.core.metadata import COCO_CLASSES, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
    from seg_perception.models.checkpoint import CheckpointError, load_state_dict_strict, save_checkpoint
    from seg_perception.models.export import export_onnx, metadata_for_model
    from seg_perception.models.torchvision_rcnn import (
        DEFAULT_INPUT_SIZE, TORCHVISION_RCNN, TorchvisionRCNN, WeightsUnavailable, load_coco_weights,
    )

    arch = args.arch
    keypoint_model = TORCHVISION_RCNN[arch].keypoints
    if args.weights is not None:
        raise ExportError(f"--arch {arch} takes its weights from --weights coco or --checkpoint FILE, "
                          f"not a positional file ({args.weights})")
    if bool(args.pretrained) == bool(args.checkpoint):
        raise ExportError(f"--arch {arch} needs exactly one of --weights coco or --checkpoint FILE.pth")
    if args.mask_checkpoint and not (keypoint_model and args.checkpoint):
        raise ExportError("--mask-checkpoint only goes with --arch keypointrcnn_resnet50_fpn --checkpoint")
    if keypoint_model and args.checkpoint and not args.mask_checkpoint:
        raise ExportError(f"Keypoint R-CNN has no mask head; its people get their masks from {args.mask_arch}: "
                          "give its state dict with --mask-checkpoint FILE.pth (or use --weights coco)")
    for flag, value in (("--classes", args.classes), ("--keypoints", args.keypoints), ("--skeleton", args.skeleton)):
        if value not in (None, "coco"):
            raise ExportError(f"{flag} {value}: torchvision's {arch} predicts the COCO names; drop {flag}")
    if args.max_detections < 1:
        raise ExportError(f"--max-detections must be >= 1, got {args.max_detections}")
    inputs = {p.resolve() for p in (args.checkpoint, args.mask_checkpoint) if p is not None}
    if args.save_pth and (args.output or Path(args.checkpoint or ".").with_suffix(".onnx")).with_suffix(".pth").resolve() in inputs:
        raise ExportError("--save-pth would overwrite the input checkpoint; choose another -o")
    default_out = Path(f"{arch}_coco.onnx" if args.pretrained else Path(args.checkpoint).with_suffix(".onnx"))
    out = args.output or default_out
    if out.suffix != ".onnx":
        raise ExportError(f"the output file must end in .onnx: {out}")
    started = time.monotonic()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))

    _say("[1/5] reading the weights" + (" (torchvision's COCO weights API)" if args.pretrained else ""))
    try:
        if args.pretrained:
            detector = load_coco_weights(arch)
            masker = load_coco_weights(args.mask_arch) if keypoint_model else None
        else:
            detector = _torchvision_state(args.checkpoint, "checkpoint")
            masker = _torchvision_state(args.mask_checkpoint, "mask checkpoint") if keypoint_model else None
    except WeightsUnavailable as exc:
        raise ExportError(str(exc)) from None
    input_size = args.input_size or DEFAULT_INPUT_SIZE
    _say(f"[2/5] building {arch}" + (f" + {args.mask_arch} for the masks" if keypoint_model else "")
         + f", input {input_size[1]}x{input_size[0]}, {args.max_detections} detections")
    model = TorchvisionRCNN(arch, input_size=input_size, mask_architecture=args.mask_arch,
                            max_detections=args.max_detections)
    _say("[3/5] loading the weights strictly")
    source = "torchvision COCO weights" if args.pretrained else str(args.checkpoint)
    try:
        report = load_state_dict_strict(model, model.load_torchvision_state(detector, masker), source)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    _say(f"      loaded {len(report.loaded)} tensors")
    model.eval()

    classes = ["person"] if keypoint_model else list(COCO_CLASSES)
    keypoints = list(COCO_PERSON_KEYPOINTS) if keypoint_model else []
    skeleton = list(COCO_PERSON_SKELETON) if keypoint_model else []
    metadata = metadata_for_model(model, args.name or out.stem, classes, keypoints, skeleton)
    _say(f"[4/5] exporting ONNX (opset {args.opset}, input {metadata.input_width}x{metadata.input_height}, roi outputs)")
    try:
        export_onnx(model, metadata, out, opset=args.opset, dynamic_batch=args.dynamic_batch)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    written = [out, out.with_suffix(".json")]
    if args.save_pth:
        written.append(save_checkpoint(model, out.with_suffix(".pth"), {"class_names": classes}))
    _check_export(args, model, metadata, out)
    for path in written:
        _say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    _say(f"done in {time.monotonic() - started:.0f} s")
    return out


def check_against_torch(model: Any, metadata: Any, onnx_path: Path) -> float:
    """Max |ONNX Runtime - PyTorch| over all outputs on one seeded random image."""
    import numpy as np
    import torch

    from seg_perception.models.transform import ImageInputModel
    from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

    image = np.random.default_rng(0).integers(0, 256, (1, metadata.input_height, metadata.input_width, 3), np.uint8)
    try:
        backend = OnnxRuntimeBackend(onnx_path, threads=2)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load the exported {onnx_path}: {exc}") from None
    ours = backend.infer(image)
    wrapper = ImageInputModel(model, metadata.mean, metadata.std).eval()
    with torch.no_grad():
        ref = dict(zip(wrapper.output_names, (t.numpy() for t in wrapper(torch.from_numpy(image)))))
    rows = None
    if metadata.output_format == "roi":
        # Only real detections: padding rows (score 0) come out of NMS in arbitrary order.
        rows = int((ref["scores"][0] > 0).sum())
        if rows != int((ours["scores"][0] > 0).sum()):
            return float("inf")
    worst = 0.0
    for name, value in ours.items():
        if value.shape != ref[name].shape:
            raise ExportError(f"output {name!r}: ONNX Runtime gives {value.shape}, PyTorch {ref[name].shape}")
        a, b = (value, ref[name]) if rows is None else (value[:, :rows], ref[name][:, :rows])
        if a.size:
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.exists():
        parser.error(f"weights file not found: {args.weights}")
    try:
        export_weights(args)
    except ExportError as exc:
        _say(f"seg-perception export: error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
