"""Instance-mask encodings carried in messages, and mask comparison.

A message mask is a ``CroppedMask`` (an integer region of the source image) plus
an ``encoding`` naming how its pixels are stored:

``mono8``
    ``height * width`` bytes, row-major, 255 for foreground and 0 for background.
    Decoders treat any nonzero byte as foreground.
``coco_rle``
    COCO's *uncompressed* run-length encoding: uint32 run lengths over the pixels
    in column-major order (down the first column, then the next), alternating
    background and foreground and starting with background (so the first count is
    0 when the top-left pixel is foreground). The counts sum to ``height * width``.
    This is exactly the ``counts`` list of pycocotools' ``{"size": [h, w],
    "counts": [...]}``; ``rle_counts_to_pycocotools`` turns it into an object
    ``pycocotools.mask.decode`` accepts. A C++ decoder is a loop over the counts.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from seg_perception.core.types import CroppedMask

MONO8 = "mono8"
COCO_RLE = "coco_rle"
MASK_ENCODINGS = (MONO8, COCO_RLE)

MaskPayload = Union[bytes, bytearray, memoryview, np.ndarray, list]


class MaskDecodeError(ValueError):
    """An encoded mask is inconsistent with its declared size; the message says how."""


def _pixels(mask: CroppedMask | np.ndarray) -> np.ndarray:
    data = mask.data if isinstance(mask, CroppedMask) else np.asarray(mask)
    if data.ndim != 2:
        raise ValueError(f"a mask is (height, width), got shape {data.shape}")
    return data


# ----------------------------------------------------------------------------
# mono8


def encode_mono8(mask: CroppedMask | np.ndarray) -> bytes:
    """Row-major bytes, 255 where the ``(h, w)`` mask is nonzero, else 0."""
    data = _pixels(mask)
    return ((data != 0).view(np.uint8) * np.uint8(255)).tobytes()


def decode_mono8(width: int, height: int, data: MaskPayload) -> np.ndarray:
    """``(height, width)`` uint8 0/1 from mono8 bytes (nonzero = foreground)."""
    _check_size(width, height)
    if isinstance(data, np.ndarray):
        buf = data.reshape(-1)
    elif isinstance(data, list):
        buf = np.asarray(data, dtype=np.uint8)
    else:  # bytes, bytearray, memoryview, array.array: no copy
        buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != width * height:
        raise MaskDecodeError(
            f"mono8 mask has {buf.size} bytes, expected width x height = {width} x {height} = {width * height}"
        )
    return (buf.reshape(height, width) != 0).view(np.uint8)


# ----------------------------------------------------------------------------
# COCO uncompressed RLE


def encode_coco_rle(mask: CroppedMask | np.ndarray) -> np.ndarray:
    """Column-major run lengths (uint32), first run background, of a ``(h, w)`` mask.

    Vectorised: the run boundaries are where consecutive column-major pixels differ.
    """
    data = _pixels(mask)
    fg = (data != 0).ravel(order="F")
    n = fg.size
    if n == 0:
        return np.zeros((0,), np.uint32)
    change = np.flatnonzero(fg[1:] != fg[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    runs = np.diff(bounds)
    if fg[0]:
        runs = np.concatenate(([0], runs))  # the leading background run is empty
    return runs.astype(np.uint32)


def _check_counts(counts: MaskPayload, width: int, height: int) -> np.ndarray:
    _check_size(width, height)
    arr = np.asarray(counts).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise MaskDecodeError("coco_rle counts must be whole numbers")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise MaskDecodeError("coco_rle counts must not be negative")
    total = int(arr.sum())
    if total != width * height:
        raise MaskDecodeError(
            f"coco_rle counts sum to {total}, expected width x height = {width} x {height} = {width * height}"
        )
    return arr


def decode_coco_rle(width: int, height: int, counts: MaskPayload) -> np.ndarray:
    """``(height, width)`` uint8 0/1 from column-major run lengths."""
    runs = _check_counts(counts, width, height)
    values = (np.arange(runs.size) & 1).astype(np.uint8)  # 0, 1, 0, 1, ...
    column_major = np.repeat(values, runs)
    return np.ascontiguousarray(column_major.reshape(width, height).T)


def rle_counts_to_pycocotools(counts: MaskPayload, height: int, width: int) -> dict:
    """A compressed RLE dict (``{"size", "counts"}``) for ``pycocotools.mask.decode``/``area``/``iou``.

    Note the argument order ``(counts, height, width)``, pycocotools' own.
    """
    from pycocotools import mask as mask_utils  # optional for users who only decode

    runs = _check_counts(counts, width, height)
    return mask_utils.frPyObjects({"size": [int(height), int(width)], "counts": runs.tolist()}, height, width)


def rle_area(counts: MaskPayload) -> int:
    """Foreground pixel count of run lengths (the sum of every second run)."""
    return int(np.asarray(counts, dtype=np.int64).reshape(-1)[1::2].sum())


# ----------------------------------------------------------------------------
# Dispatch by encoding name


def encode_mask(mask: CroppedMask | np.ndarray, encoding: str) -> bytes | np.ndarray:
    """Encode a mask's pixels: ``bytes`` for mono8, uint32 counts for coco_rle."""
    if encoding == MONO8:
        return encode_mono8(mask)
    if encoding == COCO_RLE:
        return encode_coco_rle(mask)
    raise ValueError(f"unknown mask encoding '{encoding}' (supported: {', '.join(MASK_ENCODINGS)})")


def decode_mask(encoding: str, width: int, height: int, data_or_counts: MaskPayload) -> np.ndarray:
    """``(height, width)`` uint8 0/1 from an encoded mask (bytes for mono8, counts for coco_rle)."""
    if encoding == MONO8:
        return decode_mono8(width, height, data_or_counts)
    if encoding == COCO_RLE:
        return decode_coco_rle(width, height, data_or_counts)
    raise MaskDecodeError(f"unknown mask encoding '{encoding}' (supported: {', '.join(MASK_ENCODINGS)})")


def _check_size(width: int, height: int) -> None:
    if width < 0 or height < 0:
        raise MaskDecodeError(f"mask size {width}x{height} is negative")


# ----------------------------------------------------------------------------
# Comparison


def mask_iou(a: CroppedMask, b: CroppedMask, area_a: int | None = None, area_b: int | None = None) -> float:
    """Intersection over union of two cropped masks (nonzero = foreground), in [0, 1].

    Only the overlap of the two regions is compared pixel by pixel; no full-image
    mask is built, and regions may lie partly outside the image. Two empty masks
    have IoU 0. Callers comparing one mask against many pass its known area.
    """
    area_a = int(np.count_nonzero(a.data)) if area_a is None else area_a
    area_b = int(np.count_nonzero(b.data)) if area_b is None else area_b
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = 0
    if x1 > x0 and y1 > y0:
        sa = a.data[y0 - a.y:y1 - a.y, x0 - a.x:x1 - a.x]
        sb = b.data[y0 - b.y:y1 - b.y, x0 - b.x:x1 - b.x]
        inter = int(np.count_nonzero(np.logical_and(sa, sb)))
    union = area_a + area_b - inter
    return inter / union if union else 0.0
