"""INT8 calibration data for TensorRT: real frames, resized exactly as the node resizes them.

Post-training INT8 quantisation needs activation ranges measured on representative
inputs. The engine's input is the contract's ``images`` tensor (``(B, H, W, 3)`` uint8
RGB at the model's input size, normalised inside the graph), so calibration batches
are produced by the node's own pre-processing (``core.preprocess.resize_for_network``)
from either a folder of images (``--calib-images DIR``: .jpg/.jpeg/.png/.bmp, sorted by
name) or a recording (``--calib-bag BAG [--calib-topic T]``: sensor_msgs Image or
CompressedImage, every ``stride``-th frame).

``CalibrationData`` is plain NumPy (testable without TensorRT); ``make_calibrator``
wraps it in a TensorRT ``IInt8EntropyCalibrator2`` (``"entropy"``, TensorRT's
recommended default for CNNs) or ``IInt8MinMaxCalibrator`` (``"minmax"``, keeps the
full range: better when outliers matter, e.g. small bright objects), created only
when TensorRT is imported. The calibration cache (``--calib-cache``, default
``<model>.<algorithm>.calib``) lets a rebuild skip the calibration pass; it is only
valid for the same graph and TensorRT version, so ``seg-perception engine`` deletes a
cache whose recorded ONNX hash differs (``calibration_cache_matches``).

TensorRT 10 deprecates implicit (calibrator-based) INT8 in favour of explicitly
quantised graphs (Q/DQ nodes from NVIDIA ModelOpt); it still builds such engines,
which is what Jetson users on JetPack 6 get today.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seg_perception.core.preprocess import resize_for_network

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
CALIBRATORS = ("entropy", "minmax")


class CalibrationError(RuntimeError):
    """Calibration data could not be read; the message names the source."""


def _images_from_directory(directory: Path) -> Iterator[tuple[str, np.ndarray]]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CalibrationError(f"cannot decode calibration image {path}")
        yield str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _images_from_bag(bag: Path, topic: str | None) -> Iterator[tuple[str, np.ndarray]]:
    from seg_perception.bags import BagError, read_images, rosbags_image_to_fields
    from seg_perception.core.image import ImageDecodeError, decode_compressed, decode_image

    try:
        for item in read_images(bag, topic):
            fields = rosbags_image_to_fields(item.msg)
            try:
                if "encoding" in fields:
                    rgb = decode_image(fields["encoding"], fields["width"], fields["height"], fields["step"],
                                       fields["data"], fields["is_bigendian"])
                else:
                    rgb = decode_compressed(fields["format"], fields["data"])
            except ImageDecodeError as exc:
                raise CalibrationError(f"{bag}: {item.topic} message {item.index}: {exc}") from None
            yield f"{bag}:{item.topic}#{item.index}", np.ascontiguousarray(rgb)
    except BagError as exc:
        raise CalibrationError(str(exc)) from None


class CalibrationData:
    """Batches of ``(batch_size, H, W, 3)`` uint8 RGB frames at the network input size.

    Args:
        frames:       iterable of ``(name, (h, w, 3) uint8 RGB)``; use ``from_directory``
                      or ``from_bag``.
        input_width, input_height: the model's input size (from its metadata).
        batch_size:   frames per calibration batch; must equal the batch size of the
                      graph's input for a static-batch graph (1 for our default exports).
        max_images:   stop after this many frames (TensorRT suggests about 500).
        stride:       take every ``stride``-th frame (consecutive video frames are
                      nearly identical and add little).
    A last partial batch is dropped (TensorRT wants full batches).
    """

    def __init__(self, frames: Any, input_width: int, input_height: int, batch_size: int = 1,
                 max_images: int = 500, stride: int = 1) -> None:
        if batch_size < 1 or max_images < 1 or stride < 1:
            raise ValueError("batch_size, max_images and stride must be >= 1")
        self._frames = frames
        self.input_width = int(input_width)
        self.input_height = int(input_height)
        self.batch_size = int(batch_size)
        self.max_images = int(max_images)
        self.stride = int(stride)
        self.names: list[str] = []

    @classmethod
    def from_directory(cls, directory: str | Path, input_width: int, input_height: int, **kwargs: Any) -> "CalibrationData":
        directory = Path(directory)
        if not directory.is_dir():
            raise CalibrationError(f"calibration image folder not found: {directory}")
        return cls(_images_from_directory(directory), input_width, input_height, **kwargs)

    @classmethod
    def from_bag(cls, bag: str | Path, input_width: int, input_height: int, topic: str | None = None,
                 **kwargs: Any) -> "CalibrationData":
        bag = Path(bag)
        if not bag.exists():
            raise CalibrationError(f"calibration bag not found: {bag}")
        return cls(_images_from_bag(bag, topic), input_width, input_height, **kwargs)

    def batches(self) -> Iterator[np.ndarray]:
        """C-contiguous ``(batch_size, H, W, 3)`` uint8 batches; each frame resized as the node does."""
        pending: list[np.ndarray] = []
        taken = 0
        for i, (name, rgb) in enumerate(self._frames):
            if taken >= self.max_images:
                break
            if i % self.stride:
                continue
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise CalibrationError(f"calibration frame {name} is not (H, W, 3) uint8 RGB: {rgb.shape} {rgb.dtype}")
            pending.append(resize_for_network(rgb, self.input_width, self.input_height)[0])
            self.names.append(name)
            taken += 1
            if len(pending) == self.batch_size:
                yield np.ascontiguousarray(np.stack(pending))
                pending = []
        if taken == 0:
            raise CalibrationError("the calibration source gave no frames")


# ----------------------------------------------------------------------------- cache files


def calibration_cache_path(onnx_path: str | Path, algorithm: str) -> Path:
    """Default cache file: ``model.onnx`` -> ``model.entropy.calib``."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{algorithm}.calib")


def _cache_record_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".json")


def write_calibration_record(cache_path: str | Path, onnx_sha256: str, tensorrt_version: str, algorithm: str,
                             images: int) -> Path:
    """Record what a calibration cache was computed for (beside it, ``<cache>.json``)."""
    path = _cache_record_path(Path(cache_path))
    path.write_text(json.dumps({"onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version,
                                "algorithm": algorithm, "images": images}, indent=2) + "\n")
    return path


def calibration_cache_matches(cache_path: str | Path, onnx_sha256: str, tensorrt_version: str, algorithm: str) -> bool:
    """True when ``cache_path`` exists and its record says it belongs to this graph, TensorRT and algorithm."""
    cache_path = Path(cache_path)
    record = _cache_record_path(cache_path)
    if not cache_path.is_file() or not record.is_file():
        return False
    try:
        info = json.loads(record.read_text())
    except json.JSONDecodeError:
        return False
    return (info.get("onnx_sha256"), info.get("tensorrt_version"), info.get("algorithm")) == (
        onnx_sha256, tensorrt_version, algorithm)


class CalibrationStream:
    """The host side of a calibrator: one batch at a time, and the cache file.

    ``next_batch()`` returns the next uint8 batch or None when done; ``read_cache`` /
    ``write_cache`` implement TensorRT's cache protocol (bytes or None).
    """

    def __init__(self, data: CalibrationData | None, cache_path: str | Path | None) -> None:
        self.data = data
        self.cache_path = Path(cache_path) if cache_path else None
        self._iter = data.batches() if data is not None else iter(())
        self.batches_served = 0

    @property
    def batch_size(self) -> int:
        return self.data.batch_size if self.data is not None else 1

    def next_batch(self) -> np.ndarray | None:
        batch = next(self._iter, None)
        if batch is not None:
            self.batches_served += 1
        return batch

    def read_cache(self) -> bytes | None:
        if self.cache_path is not None and self.cache_path.is_file():
            return self.cache_path.read_bytes()
        return None

    def write_cache(self, cache: bytes) -> None:
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache_path.write_bytes(bytes(cache))


def make_calibrator(trt: Any, cudart: Any, algorithm: str, stream: CalibrationStream, input_name: str) -> Any:
    """A TensorRT INT8 calibrator (entropy or min-max) feeding ``stream``'s batches to ``input_name``.

    ``trt`` and ``cudart`` are the imported ``tensorrt`` and cuda-python runtime modules;
    the class is defined here, at call time, because its base class lives in TensorRT.
    """
    if algorithm not in CALIBRATORS:
        raise ValueError(f"unknown calibrator {algorithm!r}; choose one of {', '.join(CALIBRATORS)}")
    base = trt.IInt8EntropyCalibrator2 if algorithm == "entropy" else trt.IInt8MinMaxCalibrator

    def _ok(result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error during calibration ({what}): {err}")
        return values[0] if values else None

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._device = 0
            self._nbytes = 0

        def get_batch_size(self) -> int:
            return stream.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = stream.next_batch()
            if batch is None:
                return None
            if batch.nbytes > self._nbytes:
                if self._device:
                    cudart.cudaFree(self._device)
                self._device = int(_ok(cudart.cudaMalloc(batch.nbytes), "cudaMalloc"))
                self._nbytes = batch.nbytes
            _ok(cudart.cudaMemcpy(self._device, batch.ctypes.data, batch.nbytes,
                                  cudart.cudaMemcpyKind.cudaMemcpyHostToDevice), "copy batch")
            return [self._device if n == input_name else 0 for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return stream.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            stream.write_cache(bytes(cache))

        def __del__(self) -> None:  # pragma: no cover - needs CUDA
            if self._device:
                cudart.cudaFree(self._device)

    return _Calibrator()


__all__ = [
    "CALIBRATORS",
    "IMAGE_SUFFIXES",
    "CalibrationError",
    "CalibrationData",
    "CalibrationStream",
    "calibration_cache_path",
    "calibration_cache_matches",
    "write_calibration_record",
    "make_calibrator",
]
