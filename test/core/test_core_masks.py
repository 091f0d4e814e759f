"""Spec for core.masks: the mono8 and coco_rle message encodings, and mask IoU."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco

from seg_perception.core.masks import (
    COCO_RLE,
    MONO8,
    MaskDecodeError,
    decode_mask,
    encode_coco_rle,
    encode_mask,
    encode_mono8,
    mask_iou,
    rle_area,
    rle_counts_to_pycocotools,
)
from seg_perception.core.types import CroppedMask

# pycocotools' decode trips a NumPy 2 deprecation inside its own code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _masks_to_try() -> list[np.ndarray]:
    """Edge cases plus random masks of many shapes and densities."""
    rng = np.random.default_rng(0)
    cases = [
        np.zeros((1, 1), np.uint8),
        np.ones((1, 1), np.uint8),
        np.zeros((6, 9), np.uint8),
        np.ones((6, 9), np.uint8),
        np.ones((1, 17), np.uint8),
        np.zeros((17, 1), np.uint8),
    ]
    single = np.zeros((5, 4), np.uint8)
    single[0, 0] = 1
    cases.append(single)
    last = np.zeros((5, 4), np.uint8)
    last[-1, -1] = 1
    cases.append(last)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        density = rng.uniform(0.02, 0.98)
        cases.append((rng.random((h, w)) < density).astype(np.uint8))
    # Blobby masks, like real instances (long runs).
    yy, xx = np.mgrid[0:50, 0:70]
    cases.append((((yy - 25) ** 2 + (xx - 30) ** 2) < 300).astype(np.uint8))
    return cases


MASKS = _masks_to_try()


@pytest.mark.parametrize("m", MASKS, ids=[f"{m.shape[0]}x{m.shape[1]}#{i}" for i, m in enumerate(MASKS)])
def test_coco_rle_matches_pycocotools_exactly(m):
    counts = encode_coco_rle(m)
    assert counts.dtype == np.uint32
    assert int(counts.sum()) == m.size
    ours = rle_counts_to_pycocotools(counts, *m.shape)
    theirs = coco.encode(np.asfortranarray(m))
    # Same compressed string means the same run lengths, byte for byte.
    assert ours["counts"] == theirs["counts"]
    assert list(ours["size"]) == [m.shape[0], m.shape[1]]
    np.testing.assert_array_equal(coco.decode(ours), m)


@pytest.mark.parametrize("m", MASKS[::7])
def test_coco_rle_round_trips_through_our_decoder(m):
    out = decode_mask(COCO_RLE, m.shape[1], m.shape[0], encode_coco_rle(m))
    assert out.dtype == np.uint8 and out.shape == m.shape
    np.testing.assert_array_equal(out, m)


def test_coco_rle_is_column_major_and_starts_with_background():
    m = np.array([[1, 0, 0],
                  [1, 1, 0]], np.uint8)
    # Column-major pixels: 1 1 | 0 1 | 0 0 -> runs: 0 zeros, 2 ones, 1 zero, 1 one, 2 zeros.
    np.testing.assert_array_equal(encode_coco_rle(m), [0, 2, 1, 1, 2])


def test_our_decoder_agrees_with_pycocotools_on_arbitrary_counts():
    # Uncompressed counts as COCO's iscrowd annotations store them, including
    # zero-length runs, decoded by pycocotools (frPyObjects) and by us.
    rng = np.random.default_rng(5)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        cuts = np.sort(rng.integers(0, h * w + 1, int(rng.integers(0, 12))))
        runs = np.diff(np.r_[0, cuts, h * w])
        theirs = coco.decode(coco.frPyObjects({"size": [h, w], "counts": runs.tolist()}, h, w))
        np.testing.assert_array_equal(decode_mask(COCO_RLE, w, h, runs), theirs)


def test_rle_area_counts_foreground_pixels():
    for m in MASKS[::5]:
        assert rle_area(encode_coco_rle(m)) == int(m.sum())
        assert rle_area(encode_coco_rle(m)) == int(coco.area(coco.encode(np.asfortranarray(m))))


def test_rle_counts_that_do_not_cover_the_mask_are_rejected():
    with pytest.raises(MaskDecodeError, match=r"counts sum to 11, expected width x height = 4 x 3 = 12"):
        decode_mask(COCO_RLE, 4, 3, [5, 6])
    with pytest.raises(MaskDecodeError, match="sum to 13"):
        rle_counts_to_pycocotools([5, 8], 3, 4)


def test_negative_or_fractional_counts_are_rejected():
    with pytest.raises(MaskDecodeError, match="negative"):
        decode_mask(COCO_RLE, 2, 2, np.array([6, -2]))
    with pytest.raises(MaskDecodeError, match="whole numbers"):
        decode_mask(COCO_RLE, 2, 2, [1.5, 2.5])


def test_mono8_is_row_major_255_for_foreground():
    m = np.array([[1, 0, 0],
                  [1, 1, 0]], np.uint8)
    assert encode_mono8(m) == bytes([255, 0, 0, 255, 255, 0])


def test_mono8_decoder_treats_any_nonzero_byte_as_foreground():
    out = decode_mask(MONO8, 3, 2, bytes([0, 255, 1, 0, 0, 7]))
    np.testing.assert_array_equal(out, [[0, 1, 1], [0, 0, 1]])


@pytest.mark.parametrize("m", MASKS[::9])
def test_mono8_round_trips(m):
    np.testing.assert_array_equal(decode_mask(MONO8, m.shape[1], m.shape[0], encode_mono8(m)), m)


def test_mono8_length_mismatch_is_rejected():
    with pytest.raises(MaskDecodeError, match=r"5 bytes, expected width x height = 3 x 2 = 6"):
        decode_mask(MONO8, 3, 2, bytes(5))


def test_encode_mask_accepts_a_cropped_mask_and_names_unknown_encodings():
    cm = CroppedMask(3, 4, MASKS[-1])
    np.testing.assert_array_equal(encode_mask(cm, COCO_RLE), encode_coco_rle(MASKS[-1]))
    assert encode_mask(cm, MONO8) == encode_mono8(MASKS[-1])
    with pytest.raises(ValueError, match="unknown mask encoding 'png'"):
        encode_mask(cm, "png")
    with pytest.raises(MaskDecodeError, match="unknown mask encoding 'png'"):
        decode_mask("png", 1, 1, b"\x00")


# --- IoU on crops -------------------------------------------------------------


def _full_iou(a: CroppedMask, b: CroppedMask, h: int, w: int) -> float:
    fa, fb = a.to_full(h, w).astype(bool), b.to_full(h, w).astype(bool)
    union = (fa | fb).sum()
    return float((fa & fb).sum() / union) if union else 0.0


def test_mask_iou_on_crops_equals_iou_of_full_images():
    rng = np.random.default_rng(3)
    for _ in range(50):
        masks = []
        for _ in range(2):
            h, w = (int(v) for v in rng.integers(1, 20, 2))
            x, y = (int(v) for v in rng.integers(0, 20, 2))
            masks.append(CroppedMask(x, y, (rng.random((h, w)) < 0.6).astype(np.uint8)))
        assert mask_iou(*masks) == pytest.approx(_full_iou(*masks, 40, 40))


def test_mask_iou_agrees_with_pycocotools():
    rng = np.random.default_rng(4)
    a = CroppedMask(2, 3, (rng.random((15, 12)) < 0.5).astype(np.uint8))
    b = CroppedMask(6, 1, (rng.random((10, 14)) < 0.5).astype(np.uint8))
    ea = coco.encode(np.asfortranarray(a.to_full(30, 30)))
    eb = coco.encode(np.asfortranarray(b.to_full(30, 30)))
    assert mask_iou(a, b) == pytest.approx(float(coco.iou([ea], [eb], [0])[0, 0]))


def test_disjoint_and_empty_masks_have_zero_iou():
    one = np.ones((4, 4), np.uint8)
    assert mask_iou(CroppedMask(0, 0, one), CroppedMask(10, 10, one)) == 0.0
    empty = np.zeros((4, 4), np.uint8)
    assert mask_iou(CroppedMask(0, 0, empty), CroppedMask(0, 0, empty)) == 0.0
    assert mask_iou(CroppedMask(5, 5, one), CroppedMask(5, 5, one)) == 1.0
