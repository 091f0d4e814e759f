"""Spec for core.preprocess: one plain resize to the network's input batch."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.core.image import decode_image, encode_rgb_to
from seg_perception.core.preprocess import resize_for_network


def _bilinear_reference(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Pixel-centre bilinear resize written out in NumPy (edge pixels clamped)."""
    h, w = img.shape[:2]

    def taps(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo)

    y0, y1, fy = taps(out_h, h)
    x0, x1, fx = taps(out_w, w)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx)[None, :, None] + f[y0][:, x1] * fx[None, :, None]
    bot = f[y1][:, x0] * (1 - fx)[None, :, None] + f[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


@pytest.mark.parametrize("src,dst", [((48, 64), (30, 40)), ((30, 40), (55, 55)), ((21, 37), (64, 48))])
def test_resize_is_a_plain_bilinear_resize_to_a_batch_of_one(src, dst):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    out = resize_for_network(img, dst[1], dst[0])
    assert out.shape == (1, dst[0], dst[1], 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    # OpenCV's fixed-point uint8 path rounds; allow one grey level.
    assert np.abs(out[0].astype(float) - _bilinear_reference(img, dst[1], dst[0])).max() <= 1.0


def test_no_letterboxing_corners_map_to_corners():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:10, :30] = (255, 0, 0)
    img[-10:, -30:] = (0, 0, 255)
    out = resize_for_network(img, 64, 64)[0]
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[-1, -1]) == (0, 0, 255)


def test_same_size_input_is_copied_unchanged():
    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = resize_for_network(img, 30, 20)
    np.testing.assert_array_equal(out[0], img)
    assert not np.shares_memory(out, img)


def test_reads_read_only_row_padded_views_without_touching_them():
    img = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    raw = encode_rgb_to(img, "rgb8", row_padding=9)
    view = decode_image(raw.encoding, raw.width, raw.height, raw.step, raw.data)
    assert not view.flags.writeable
    np.testing.assert_array_equal(resize_for_network(view, 16, 12), resize_for_network(img.copy(), 16, 12))


def test_out_buffer_is_filled_and_returned():
    img = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = np.zeros((1, 12, 16, 3), np.uint8)
    assert resize_for_network(img, 16, 12, out=buf) is buf
    np.testing.assert_array_equal(buf, resize_for_network(img, 16, 12))
    with pytest.raises(ValueError, match="out must be"):
        resize_for_network(img, 16, 12, out=np.zeros((1, 16, 12, 3), np.uint8))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        resize_for_network(np.zeros((4, 4), np.uint8), 8, 8)
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        resize_for_network(np.zeros((4, 4, 3), np.float32), 8, 8)
    with pytest.raises(ValueError, match="bad network input size"):
        resize_for_network(np.zeros((4, 4, 3), np.uint8), 0, 8)
