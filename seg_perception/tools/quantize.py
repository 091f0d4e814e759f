"""``seg-perception quantize``: an FP32 ONNX model -> an FP16 or INT8 (Q/DQ) ONNX model, accuracy-gated.

TensorRT 11 builds only strongly typed networks: the precision must be in the ONNX
file (NVIDIA's 10.x-to-11.x migration guide). An ONNX file with its precision in it is
built as it is by TensorRT 8.6, 10.x and 11.x alike (``seg-perception engine OUT.onnx``,
no --fp16/--int8), and ONNX Runtime runs it on a CPU-only robot too.

- ``--precision fp16``: weights and arithmetic in float16 (``onnxconverter-common``'s
  float16 conversion); the ``images`` input (uint8) and the float32 outputs keep their
  types, so the node and the post-processing are unchanged.
- ``--precision int8``: explicit quantization, Q/DQ nodes in the form TensorRT expects
  (``onnxruntime.quantization``, QDQ format, symmetric INT8 activations and weights,
  per-channel weights), on the inputs and weights of Conv/ConvTranspose/Gemm/MatMul;
  activation ranges calibrated on your own frames (``--calibration BAG_OR_DIR``: a
  rosbag2 recording or a folder of images, pre-processed exactly as the node does).

The accuracy gate: the new model and the FP32 model are both evaluated with ONNX
Runtime on the CPU (mask, box and keypoint AP, ``seg-perception evaluate``) on
``--eval-annotations`` (a COCO dataset), or, for models of the synthetic classes (the
shipped model), on the first ``--eval-images`` images of the synthetic validation set.
When an AP drops by more than ``--max-ap-drop`` (default 0.02) nothing is written and
the command exits 1, unless ``--force``. The figures go to ``OUT.quantize.json``.

Writes ``OUT.onnx`` and, as ``export`` does, its metadata ``OUT.json`` (``precision``
says fp16 or int8; YOLACT++'s MaskIoU weights are copied beside it).

Examples::

    seg-perception quantize models/seg_perception_default.onnx --precision fp16 -o /tmp/default_fp16.onnx
    seg-perception quantize model.onnx --precision int8 --calibration my_robot.mcap -o model_int8.onnx
    seg-perception quantize model.onnx --precision int8 --calibration frames/ --eval-annotations val/annotations.json \\
        -o model_int8.onnx
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
DEFAULT_MAX_AP_DROP = 0.02
CALIBRATORS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class QuantizeError(RuntimeError):
    """A user-facing failure; the message says what to change."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-perception quantize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="FP32 model.onnx written by `seg-perception export` (its .json beside it)")
    p.add_argument("--precision", choices=("fp16", "int8"), required=True, help="precision to put into the graph")
    p.add_argument("-o", "--output", type=Path, required=True, help="the new .onnx file (its .json is written beside it)")
    cal = p.add_argument_group("INT8 calibration")
    cal.add_argument("--calibration", type=Path, metavar="BAG_OR_DIR",
                     help="your frames: a rosbag2 recording (mcap/sqlite3) or a folder of .jpg/.png images")
    cal.add_argument("--calib-topic", help="image topic of the bag (default: its only colour image topic)")
    cal.add_argument("--calib-max-images", type=int, default=200, metavar="N", help="frames to use (default 200)")
    cal.add_argument("--calib-stride", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
    cal.add_argument("--calibrator", choices=tuple(CALIBRATORS), default="minmax",
                     help="activation range estimate: minmax (default), entropy or percentile")
    gate = p.add_argument_group("accuracy gate")
    gate.add_argument("--eval-annotations", type=Path, metavar="JSON",
                      help="COCO annotations to measure AP on (default: the synthetic validation set, for models "
                           "of the synthetic classes)")
    gate.add_argument("--eval-images", type=int, default=24, metavar="N", help="images evaluated (default 24)")
    gate.add_argument("--max-ap-drop", type=float, default=DEFAULT_MAX_AP_DROP, metavar="AP",
                      help=f"largest mask/box/keypoint AP drop accepted (default {DEFAULT_MAX_AP_DROP})")
    gate.add_argument("--no-eval", action="store_true", help="skip the accuracy gate (not recommended)")
    gate.add_argument("--force", action="store_true", help="write the model even when the gate fails")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads for calibration/evaluation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check_args(args: argparse.Namespace) -> Any:
    """Validate everything that can be checked before any work; returns the model metadata."""
    from seg_perception.core.metadata import ModelMetadata, metadata_path_for

    if args.onnx.suffix != ".onnx" or not args.onnx.is_file():
        raise QuantizeError(f"ONNX model not found: {args.onnx} (give the .onnx written by `seg-perception export`)")
    if args.output.suffix != ".onnx":
        raise QuantizeError(f"the output must end in .onnx: {args.output}")
    if args.output.resolve() == args.onnx.resolve():
        raise QuantizeError(f"the output {args.output} would overwrite the input; choose another -o")
    md_path = metadata_path_for(args.onnx)
    try:
        metadata = ModelMetadata.load(md_path)
    except (FileNotFoundError, ValueError) as exc:
        raise QuantizeError(f"{exc} (export the model with `seg-perception export`, which writes it)") from None
    if metadata.precision != "fp32":
        raise QuantizeError(f"{args.onnx} is already a {metadata.precision} graph; quantize the FP32 export instead")
    if args.precision == "int8" and args.calibration is None:
        raise QuantizeError("--precision int8 needs --calibration BAG_OR_DIR: a recording or a folder of your "
                            "camera's images (a few hundred frames of the scenes the robot sees)")
    if args.precision == "fp16" and (args.calibration or args.calib_topic):
        raise QuantizeError("--calibration only applies to --precision int8")
    if args.calibration is not None and not args.calibration.exists():
        raise QuantizeError(f"calibration source not found: {args.calibration} (a bag or a folder of images)")
    if args.calib_topic and args.calibration is not None and args.calibration.is_dir() \
            and not _is_bag(args.calibration):
        raise QuantizeError("--calib-topic needs a bag in --calibration")
    if args.calib_max_images < 1 or args.calib_stride < 1 or args.eval_images < 1:
        raise QuantizeError("--calib-max-images, --calib-stride and --eval-images must be >= 1")
    if not 0 <= args.max_ap_drop <= 1:
        raise QuantizeError(f"--max-ap-drop must be between 0 and 1, got {args.max_ap_drop}")
    if args.eval_annotations is not None and not args.eval_annotations.is_file():
        raise QuantizeError(f"annotations not found: {args.eval_annotations}")
    return metadata


def _is_bag(path: Path) -> bool:
    """A rosbag2 bag: a folder with metadata.yaml, or an .mcap/.db3 file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".mcap", ".db3")


def calibration_frames(source: Path, metadata: Any, topic: str | None, max_images: int, stride: int) -> Any:
    """``runtime.calibration.CalibrationData`` of a bag or an image folder (the node's pre-processing)."""
    from seg_perception.runtime.calibration import CalibrationData

    kwargs = dict(max_images=max_images, stride=stride)
    if _is_bag(source):
        return CalibrationData.from_bag(source, metadata.input_width, metadata.input_height, topic=topic, **kwargs)
    return CalibrationData.from_directory(source, metadata.input_width, metadata.input_height, **kwargs)


def _set_embedded_metadata(model: Any, metadata: Any) -> None:
    """Keep the metadata copy inside the graph (``export`` embeds one) in step with the sidecar."""
    from seg_perception.runtime.onnxruntime_backend import EMBEDDED_METADATA_KEY

    for prop in model.metadata_props:
        if prop.key == EMBEDDED_METADATA_KEY:
            prop.value = metadata.to_json()


def convert_fp16(src: Path, dst: Path) -> None:
    """Float16 weights and compute; the uint8 input and float32 outputs keep their types."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise QuantizeError(f"--precision fp16 needs onnxconverter-common (pip install onnxconverter-common): "
                            f"{exc}") from None
    model = onnx.load(str(src))
    # keep_io_types: casts at the graph's edges, so the node feeds and reads the same types
    import warnings

    with warnings.catch_warnings():  # one warning per weight below float16's smallest normal: noise here
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    # The converter retypes the output of a Cast to float16 but leaves its ``to`` at float
    # (seen on the uint8 -> float normalizer Cast): make each Cast produce what its output says.
    declared = {v.name: v.type.tensor_type.elem_type for v in converted.graph.value_info}
    for node in converted.graph.node:
        if node.op_type == "Cast" and declared.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    onnx.save(converted, str(dst))


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over ``CalibrationData`` batches, with a progress bar."""

    def __init__(self, data: Any, input_name: str, progress: bool) -> None:
        self._batches: Iterator[Any] = data.batches()
        self._input = input_name
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=data.max_images, desc="calibrating", unit="frame")

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._batches, None)
        if batch is None:
            if self._bar is not None:
                self._bar.close()
            return None
        if self._bar is not None:
            self._bar.update(len(batch))
        return {self._input: batch}

    def rewind(self) -> None:  # ORT calls it between passes of some methods; one pass is all we give
        pass


def quantize_int8(src: Path, dst: Path, data: Any, calibrator: str = "minmax", progress: bool = True) -> None:
    """Explicit INT8 quantization (Q/DQ) as TensorRT expects it: symmetric, per-channel weights."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from seg_perception.core.metadata import INPUT_NAME

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference (and ORT's graph clean-up) so every tensor to quantize has a known type
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(dst), _Reader(data, INPUT_NAME, progress),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATORS[calibrator]),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           # TensorRT fuses Q/DQ into the layers it precedes; ORT's own shortcuts would
                           # leave patterns the TensorRT documentation does not describe
                           "QDQKeepRemovableActivations": True,
                           # TensorRT dequantizes INT8 only: biases stay float (ORT would make them INT32)
                           "QuantizeBias": False},
        )


def _synthetic_validation(n_images: int, work: Path) -> Path:
    """The first ``n_images`` of the shipped model's held-out validation set (generated, seconds)."""
    from seg_perception.synth import write_coco_dataset
    from seg_perception.training.shipped import IMAGE_HEIGHT, IMAGE_WIDTH, VAL_SEED

    out = work / "synthetic_val"
    write_coco_dataset(out, n_images, VAL_SEED, IMAGE_WIDTH, IMAGE_HEIGHT)
    return out / "annotations.json"


def measure(model: Path, annotations: Path, n_images: int, threads: int) -> dict[str, Any]:
    """Mask/box/keypoint AP and speed of ``model`` on ONNX Runtime (CPU), as ``seg-perception evaluate``."""
    from seg_perception.evaluation.evaluator import dataset_frames, evaluate_model
    from seg_perception.pipeline import load_evaluation_pipeline

    pipeline = load_evaluation_pipeline(model, threads=threads)
    try:
        report = evaluate_model(pipeline, dataset_frames(annotations, n_images), annotations)
        batch = next(dataset_frames(annotations, 1))[1]
        from seg_perception.core.preprocess import resize_for_network

        md = pipeline.metadata
        net_in = resize_for_network(batch, md.input_width, md.input_height)[0][None]
        pipeline.backend.infer(net_in)  # warm-up
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            pipeline.backend.infer(net_in)
            times.append(time.perf_counter() - t0)
    finally:
        pipeline.close()
    aps = {k: (report[k] or {}).get("AP") for k in ("segm", "bbox", "keypoints")}
    return {"AP": aps, "images": report["images"], "pipeline_fps": report["fps"],
            "network_ms_median": 1000 * sorted(times)[len(times) // 2]}


def ap_drops(reference: dict[str, Any], candidate: dict[str, Any]) -> dict[str, float]:
    """AP lost per kind (positive: worse), for the kinds both models report."""
    return {k: float(reference["AP"][k]) - float(candidate["AP"][k]) for k in reference["AP"]
            if reference["AP"].get(k) is not None and candidate["AP"].get(k) is not None}


def run(args: argparse.Namespace) -> Path:
    from seg_perception.core.metadata import metadata_path_for
    from seg_perception.runtime.calibration import CalibrationError

    metadata = _check_args(args)
    annotations = args.eval_annotations
    if annotations is None and not args.no_eval:
        from seg_perception.synth.classes import CLASS_NAMES

        if list(metadata.class_names) != list(CLASS_NAMES):
            raise QuantizeError("no accuracy gate possible: give --eval-annotations COCO.json (images of your "
                                "classes), or --no-eval to skip the gate")
    out_md = metadata_path_for(args.output)
    with tempfile.TemporaryDirectory(prefix="seg_quantize_") as tmp:
        work = Path(tmp)
        candidate = work / args.output.name
        started = time.monotonic()
        if args.precision == "fp16":
            _say(f"converting {args.onnx} to float16")
            convert_fp16(args.onnx, candidate)
            calib_info = None
        else:
            try:
                data = calibration_frames(args.calibration, metadata, args.calib_topic, args.calib_max_images,
                                          args.calib_stride)
                _say(f"calibrating INT8 ranges ({args.calibrator}) on up to {args.calib_max_images} frames of "
                     f"{args.calibration}")
                quantize_int8(args.onnx, candidate, data, args.calibrator, progress=not args.no_progress)
            except CalibrationError as exc:
                raise QuantizeError(str(exc)) from None
            calib_info = {"source": str(args.calibration), "frames": len(data.names), "calibrator": args.calibrator}
        import onnx

        new_md = type(metadata)(**{**json.loads(metadata.to_json()), "precision": args.precision})
        model = onnx.load(str(candidate))
        _set_embedded_metadata(model, new_md)
        onnx.save(model, str(candidate))
        new_md.save(metadata_path_for(candidate))
        if metadata.maskiou_weights and (args.onnx.parent / metadata.maskiou_weights).is_file():
            shutil.copy(args.onnx.parent / metadata.maskiou_weights, work / metadata.maskiou_weights)
        _say(f"{args.precision} graph written in {time.monotonic() - started:.0f} s")
        record: dict[str, Any] = {"source": args.onnx.name, "precision": args.precision, "calibration": calib_info,
                                  "max_ap_drop": args.max_ap_drop}
        if not args.no_eval:
            if annotations is None:
                _say(f"generating the synthetic validation subset ({args.eval_images} images)")
                annotations = _synthetic_validation(args.eval_images, work)
            _say(f"accuracy gate: ONNX Runtime CPU, {args.eval_images} images of {annotations}")
            ref = measure(args.onnx, annotations, args.eval_images, args.threads)
            new = measure(candidate, annotations, args.eval_images, args.threads)
            drops = ap_drops(ref, new)
            record.update(fp32=ref, quantized=new, ap_drop=drops, annotations=str(annotations))
            for kind, drop in drops.items():
                _say(f"  {kind:9s} AP fp32 {ref['AP'][kind]:.3f}  {args.precision} {new['AP'][kind]:.3f}  "
                     f"drop {drop:+.3f}")
            _say(f"  network on CPU: fp32 {ref['network_ms_median']:.1f} ms, {args.precision} "
                 f"{new['network_ms_median']:.1f} ms per frame (median of 10)")
            worst = max(drops.values(), default=0.0)
            if worst > args.max_ap_drop:
                message = (f"AP drops by {worst:.3f} (> --max-ap-drop {args.max_ap_drop}) with {args.precision}")
                if not args.force:
                    raise QuantizeError(f"{message}; nothing written. More or more varied calibration frames, "
                                        "another --calibrator, or --force to write it anyway")
                _say(f"WARNING: {message}; written anyway (--force)")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(candidate), args.output)
        shutil.move(str(metadata_path_for(candidate)), out_md)
        if metadata.maskiou_weights and (work / metadata.maskiou_weights).is_file():
            shutil.move(str(work / metadata.maskiou_weights), args.output.parent / metadata.maskiou_weights)
        args.output.with_suffix(".quantize.json").write_text(json.dumps(record, indent=2) + "\n")
    _say(f"wrote {args.output} and {out_md}; build it on the robot with: seg-perception engine {args.output}")
    return args.output


def main(argv: Sequence[str] | None = None) -> int:
    from seg_perception.runtime.base import BackendError

    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (QuantizeError, BackendError) as exc:
        _say(f"seg-perception quantize: error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
