"""``seg-perception engine``: ONNX model -> TensorRT engine (FP32, FP16 or INT8), cached.

Run it on the machine that will run the node (engines are specific to the GPU and the
TensorRT version). The engine lands beside the ONNX file (``model.engine``) with its
build record ``model.engine.json`` (``runtime.engine_cache``); the metadata JSON (and
YOLACT++'s MaskIoU weights) are copied beside it when ``-o`` points elsewhere. A second
run with the same ONNX file, TensorRT version, GPU and precision reuses the engine
("up to date"); anything else rebuilds it (``--force`` always rebuilds, and with
calibration frames also recalibrates). The node's TensorRT backend checks the same
record when it loads the engine.

Precision in the ONNX (every TensorRT, and the only way on TensorRT 11): a graph written
by ``seg-perception quantize`` (FP16, or INT8 with Q/DQ nodes; its metadata says which)
is built as it is, with no --fp16/--int8 and no calibration. TensorRT 8.6 builds it
with the matching builder flags, 10.x and 11.x as a strongly typed network.

Builder-flag precision (TensorRT 8.6 and 10.x only): ``--fp16``, or ``--int8`` with
calibration frames: ``--calib-images DIR`` or ``--calib-bag BAG
[--calib-topic TOPIC]`` (``runtime.calibration``), calibrated with ``--calibrator
entropy`` (default) or ``minmax``. The calibration cache (``--calib-cache``, default
``<model>.<calibrator>.calib``) is reused on rebuilds of the same ONNX file with the
same TensorRT, so later builds need no frames.

TensorRT is imported only when building: ``--help`` and argument errors work anywhere.

Examples::

    seg-perception engine models/yolact_base.onnx --fp16
    seg-perception engine models/centermask_lite.onnx --int8 --calib-bag ../shared/data/hsr_people/hsr_people_mcap
    seg-perception engine model.onnx --fp16 --dla-core 0 --workspace 2048     # Jetson DLA, GPU fallback
    seg-perception quantize model.onnx --precision int8 --calibration BAG -o model_int8.onnx
    seg-perception engine model_int8.onnx                                    # TensorRT 8.6, 10.x, 11.x
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from seg_perception.runtime.calibration import CALIBRATORS, calibration_cache_path


class EngineToolError(RuntimeError):
    """A user-facing failure; the message says what to change."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class EnginePlan:
    """What to build, validated without TensorRT."""

    onnx_path: Path
    engine_path: Path
    precision: str  # fp32, fp16, int8
    workspace_bytes: int
    dla_core: int | None
    calibrator: str
    calib_images: Path | None
    calib_bag: Path | None
    calib_topic: str | None
    calib_cache: Path | None
    calib_max_images: int
    calib_stride: int
    force: bool
    progress: bool
    precision_in_graph: bool = False  # a quantized ONNX (metadata precision fp16/int8): no builder flags
    max_batch: int = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg-perception engine",
        description="Build a TensorRT engine from an exported ONNX model (on the target machine).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The engine is reused while the ONNX file, TensorRT version, GPU and precision stay the same.",
    )
    parser.add_argument("onnx", type=Path, help="model.onnx written by `seg-perception export` (its .json beside it)")
    parser.add_argument("-o", "--output", type=Path, help="engine file (default: the ONNX path with .engine)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    precision.add_argument("--int8", action="store_true", help="allow INT8 (and FP16) kernels; needs calibration")
    calib = parser.add_argument_group("INT8 calibration")
    calib.add_argument("--calibrator", choices=CALIBRATORS, default="entropy",
                       help="entropy (IInt8EntropyCalibrator2, default) or minmax (IInt8MinMaxCalibrator)")
    source = calib.add_mutually_exclusive_group()
    source.add_argument("--calib-images", type=Path, metavar="DIR", help="folder of .jpg/.png calibration images")
    source.add_argument("--calib-bag", type=Path, metavar="BAG", help="rosbag2 recording (mcap or sqlite3)")
    calib.add_argument("--calib-topic", help="image topic in --calib-bag (default: its only colour image topic)")
    calib.add_argument("--calib-cache", type=Path, metavar="FILE",
                       help="calibration cache (default: <model>.<calibrator>.calib beside the ONNX file)")
    calib.add_argument("--calib-max-images", type=int, default=500, metavar="N", help="frames to use (default 500)")
    calib.add_argument("--calib-stride", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
    parser.add_argument("--workspace", type=int, default=1024, metavar="MIB",
                        help="builder workspace limit in MiB (default 1024)")
    parser.add_argument("--dla-core", type=int, metavar="N", help="build for Jetson DLA core N (GPU fallback on)")
    parser.add_argument("--max-batch", type=int, default=1, metavar="N",
                        help="largest batch of an ONNX with a dynamic batch (export --dynamic-batch): the number of "
                             "cameras one node serves (parameter cameras); default 1")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when the engine is up to date (and recalibrate when frames are given)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return parser


def plan_from_args(args: argparse.Namespace) -> EnginePlan:
    """Validate the arguments (files, combinations, ranges) without importing TensorRT."""
    from seg_perception.core.metadata import metadata_path_for

    onnx_path: Path = args.onnx
    if onnx_path.suffix != ".onnx":
        raise EngineToolError(f"expected an .onnx file, got {onnx_path}")
    if not onnx_path.is_file():
        raise EngineToolError(f"ONNX model not found: {onnx_path}")
    if not metadata_path_for(onnx_path).is_file():
        raise EngineToolError(f"model metadata not found: {metadata_path_for(onnx_path)} "
                              "(export the model with `seg-perception export`, which writes it)")
    engine_path = args.output or onnx_path.with_suffix(".engine")
    if engine_path.suffix not in (".engine", ".plan"):
        raise EngineToolError(f"the engine file must end in .engine or .plan: {engine_path}")
    if args.workspace <= 0:
        raise EngineToolError(f"--workspace must be positive (MiB), got {args.workspace}")
    if args.dla_core is not None and args.dla_core < 0:
        raise EngineToolError(f"--dla-core must be >= 0, got {args.dla_core}")
    if args.max_batch < 1:
        raise EngineToolError(f"--max-batch must be >= 1, got {args.max_batch}")
    from seg_perception.core.metadata import ModelMetadata

    try:
        graph = ModelMetadata.load(metadata_path_for(onnx_path)).precision
    except (ValueError, OSError) as exc:
        raise EngineToolError(str(exc)) from None
    if graph != "fp32" and (args.fp16 or args.int8):
        raise EngineToolError(f"{onnx_path} is already a {graph} graph (seg-perception quantize): TensorRT builds "
                              "the precision it carries; drop --fp16/--int8")
    calib_given = args.calib_images or args.calib_bag or args.calib_cache or args.calib_topic
    if calib_given and not args.int8:
        raise EngineToolError("--calib-* options only apply to --int8 builds")
    if args.calib_topic and not args.calib_bag:
        raise EngineToolError("--calib-topic needs --calib-bag")
    if args.calib_max_images < 1 or args.calib_stride < 1:
        raise EngineToolError("--calib-max-images and --calib-stride must be >= 1")
    cache = None
    if args.int8:
        cache = args.calib_cache or calibration_cache_path(onnx_path, args.calibrator)
        if args.calib_images and not args.calib_images.is_dir():
            raise EngineToolError(f"calibration image folder not found: {args.calib_images}")
        if args.calib_bag and not args.calib_bag.exists():
            raise EngineToolError(f"calibration bag not found: {args.calib_bag}")
        if not (args.calib_images or args.calib_bag or cache.is_file()):
            raise EngineToolError(
                "--int8 needs calibration frames: --calib-images DIR or --calib-bag BAG "
                f"(or an existing calibration cache, none at {cache})"
            )
    return EnginePlan(
        onnx_path=onnx_path, engine_path=engine_path,
        precision="int8" if args.int8 else "fp16" if args.fp16 else graph,
        workspace_bytes=int(args.workspace) << 20, dla_core=args.dla_core, calibrator=args.calibrator,
        calib_images=args.calib_images, calib_bag=args.calib_bag, calib_topic=args.calib_topic,
        calib_cache=cache, calib_max_images=args.calib_max_images, calib_stride=args.calib_stride,
        force=args.force, progress=not args.no_progress, precision_in_graph=graph != "fp32",
        max_batch=args.max_batch,
    )


def run_plan(plan: EnginePlan) -> Path:
    """Build (or reuse) the engine; needs TensorRT and a GPU."""
    from seg_perception.core.metadata import ModelMetadata, metadata_path_for
    from seg_perception.runtime.base import BackendError
    from seg_perception.runtime.calibration import (
        CalibrationData,
        CalibrationError,
        CalibrationStream,
        calibration_cache_matches,
        write_calibration_record,
    )
    from seg_perception.runtime.engine_cache import engine_is_current, file_sha256
    from seg_perception.runtime.tensorrt_backend import build_engine, current_engine_key

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise EngineToolError(
            "TensorRT is not installed here, so no engine can be built (JetPack ships it on a Jetson; on a "
            "desktop GPU: pip install tensorrt cuda-python). Nothing was written. ONNX Runtime runs the .onnx "
            "file meanwhile (backend:=onnxruntime)."
        ) from None
    metadata = ModelMetadata.load(metadata_path_for(plan.onnx_path))
    _say(f"hashing {plan.onnx_path}")
    onnx_sha = file_sha256(plan.onnx_path)
    try:
        key = current_engine_key(plan.onnx_path, plan.precision, plan.dla_core, onnx_sha)
    except BackendError as exc:
        raise EngineToolError(f"cannot query TensorRT/the GPU: {exc}") from None
    current, reasons = engine_is_current(plan.engine_path, key)
    built_for = _recorded_max_batch(plan.engine_path)
    if current and built_for != plan.max_batch:
        current, reasons = False, [f"built for batches up to {built_for}, --max-batch {plan.max_batch} asked"]
    if current and not plan.force:
        _say(f"{plan.engine_path} is up to date (TensorRT {key.tensorrt_version}, {key.gpu_name}, "
             f"{key.precision}); --force rebuilds it")
        return plan.engine_path
    for reason in ([] if plan.force else reasons):
        _say(f"rebuilding: {reason}")

    stream = None
    if plan.precision == "int8" and not plan.precision_in_graph:
        assert plan.calib_cache is not None
        if plan.force and plan.calib_cache.is_file() and (plan.calib_images or plan.calib_bag):
            _say(f"--force with calibration frames: recalibrating (discarding {plan.calib_cache})")
            plan.calib_cache.unlink()
        if plan.calib_cache.is_file() and not calibration_cache_matches(
                plan.calib_cache, onnx_sha, key.tensorrt_version, plan.calibrator):
            if not (plan.calib_images or plan.calib_bag):
                raise EngineToolError(f"calibration cache {plan.calib_cache} belongs to another model, TensorRT "
                                      "version or calibrator; give --calib-images or --calib-bag to recalibrate")
            _say(f"discarding calibration cache {plan.calib_cache} (another model, TensorRT or calibrator)")
            plan.calib_cache.unlink()
        data = None
        try:
            if plan.calib_images:
                data = CalibrationData.from_directory(plan.calib_images, metadata.input_width, metadata.input_height,
                                                      max_images=plan.calib_max_images, stride=plan.calib_stride)
            elif plan.calib_bag:
                data = CalibrationData.from_bag(plan.calib_bag, metadata.input_width, metadata.input_height,
                                                topic=plan.calib_topic, max_images=plan.calib_max_images,
                                                stride=plan.calib_stride)
        except CalibrationError as exc:
            raise EngineToolError(str(exc)) from None
        stream = CalibrationStream(data if not plan.calib_cache.is_file() else None, plan.calib_cache)
        _say(f"INT8 calibration: {plan.calibrator}, "
             + ("from the cache " + str(plan.calib_cache) if stream.data is None else
                f"up to {plan.calib_max_images} frames from {plan.calib_images or plan.calib_bag}"))
    try:
        engine = build_engine(
            plan.onnx_path, plan.engine_path, fp16=plan.precision == "fp16" and not plan.precision_in_graph, workspace_bytes=plan.workspace_bytes,
            int8=plan.precision == "int8" and not plan.precision_in_graph, calibration=stream, calibrator=plan.calibrator, dla_core=plan.dla_core,
            progress=plan.progress, log=_say, max_batch=plan.max_batch,
        )
    except (BackendError, CalibrationError) as exc:
        raise EngineToolError(str(exc)) from None
    if stream is not None and stream.data is not None and plan.calib_cache is not None and plan.calib_cache.is_file():
        write_calibration_record(plan.calib_cache, onnx_sha, key.tensorrt_version, plan.calibrator,
                                 len(stream.data.names))
    _say(f"run it: ros2 launch seg_perception seg_perception.launch.py model_path:={engine} backend:=tensorrt")
    return engine


def _recorded_max_batch(engine_path: Path) -> int:
    """The ``max_batch`` an existing engine's build record names (1 for older records or none)."""
    import json

    from seg_perception.runtime.engine_cache import engine_info_path

    try:
        return int(json.loads(engine_info_path(engine_path).read_text()).get("max_batch") or 1)
    except (OSError, ValueError, AttributeError):
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run_plan(plan_from_args(args))
    except EngineToolError as exc:
        _say(f"seg-perception engine: error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
