"""Spec for core.image: raw/compressed buffers -> RGB, and depth -> metres."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from seg_perception.core.image import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_compressed,
    decode_depth,
    decode_image,
    encode_depth,
    encode_rgb_to,
    supported_encodings,
)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _decode(raw, **kw) -> np.ndarray:
    return decode_image(raw.encoding, raw.width, raw.height, raw.step, raw.data, raw.is_bigendian, **kw)


# --- lossless colour encodings ------------------------------------------------

LOSSLESS = ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4"]


@pytest.mark.parametrize("encoding", LOSSLESS)
@pytest.mark.parametrize("row_padding", [0, 5])
def test_lossless_colour_encodings_round_trip_exactly(rgb, encoding, row_padding):
    raw = encode_rgb_to(rgb, encoding, row_padding=row_padding)
    assert raw.step == raw.width * (4 if "a8" in encoding or encoding == "8UC4" else 3) + row_padding
    assert len(raw.data) == raw.step * raw.height
    np.testing.assert_array_equal(_decode(raw), rgb)


def test_bgr8_bytes_are_stored_blue_first(rgb):
    raw = encode_rgb_to(rgb, "bgr8")
    first_pixel = raw.data[:3]
    assert tuple(first_pixel) == tuple(rgb[0, 0, ::-1])


def test_rgba_alpha_is_ignored_when_decoding():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = [[0, 255], [7, 128]]
    out = decode_image("rgba8", 2, 2, 8, rgba.tobytes())
    assert (out == (10, 20, 30)).all()


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16", "16UC1"])
def test_grey_images_round_trip_through_mono_encodings(encoding):
    grey = np.random.default_rng(1).integers(0, 256, (9, 11), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(_decode(encode_rgb_to(rgb, encoding, row_padding=3)), rgb)


def test_mono16_keeps_the_high_byte():
    values = np.array([[0, 255, 256, 65535]], dtype="<u2")
    out = decode_image("mono16", 4, 1, 8, values.tobytes())
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 255])


def test_mono16_respects_big_endian_flag():
    values = np.array([[0x1234, 0xAB00]], dtype=">u2")
    out = decode_image("mono16", 2, 1, 4, values.tobytes(), is_bigendian=True)
    np.testing.assert_array_equal(out[0, :, 0], [0x12, 0xAB])


@pytest.mark.skipif(not hasattr(cv2, "COLOR_RGB2YUV_UYVY"), reason="this OpenCV cannot encode 4:2:2")
@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"])
def test_yuv422_decodes_flat_colours_to_within_rounding(encoding):
    # 4:2:2 shares chroma between pixel pairs, so use a colour constant per pair.
    rgb = np.zeros((4, 8, 3), np.uint8)
    rgb[:, :4] = (200, 40, 90)
    rgb[:, 4:] = (20, 180, 240)
    out = _decode(encode_rgb_to(rgb, encoding, row_padding=4))
    assert np.abs(out.astype(int) - rgb).max() <= 3


def test_uyvy_byte_order_is_u_y_v_y():
    # A grey pixel pair: U = V = 128, luma 16 (black) and 235 (white) in video range.
    data = bytes([128, 16, 128, 235])
    out = decode_image("uyvy", 2, 1, 4, data)
    assert out[0, 0].max() <= 2 and out[0, 1].min() >= 250


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"])
def test_bayer_mosaics_demosaic_to_the_right_colour(encoding):
    # A flat colour demosaics exactly; a wrong pattern would swap red and blue.
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[...] = (200, 100, 30)
    out = _decode(encode_rgb_to(rgb, encoding))
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


def test_bayer_pattern_places_red_at_the_named_position():
    mosaic = np.zeros((4, 4), np.uint8)
    mosaic[0::2, 0::2] = 250  # only the "r" sites of RGGB are lit
    out = decode_image("bayer_rggb8", 4, 4, 4, mosaic.tobytes())
    assert out[1:3, 1:3, 0].mean() > out[1:3, 1:3, 2].mean()


def test_supported_encodings_lists_every_required_encoding():
    assert {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"} <= set(supported_encodings())


# --- zero copy, padding and buffer types --------------------------------------


def test_rgb8_without_conversion_is_a_view_of_the_buffer(rgb):
    buf = bytearray(encode_rgb_to(rgb, "rgb8", row_padding=7).data)
    out = decode_image("rgb8", 32, 24, 32 * 3 + 7, buf)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))
    np.testing.assert_array_equal(out, rgb)


def test_row_padding_bytes_never_reach_the_image():
    # Padding filled with 0xEE must not leak into any pixel of a black image.
    width, height, pad = 5, 3, 4
    rows = np.full((height, width * 3 + pad), 0xEE, np.uint8)
    rows[:, : width * 3] = 0
    out = decode_image("bgr8", width, height, width * 3 + pad, rows.tobytes())
    assert out.shape == (height, width, 3) and not out.any()


def test_extra_bytes_after_the_last_row_are_ignored(rgb):
    raw = encode_rgb_to(rgb, "rgb8")
    np.testing.assert_array_equal(decode_image("rgb8", 32, 24, raw.step, raw.data + b"\x01" * 10), rgb)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "ndarray", "array.array", "list"])
def test_every_buffer_type_ros_may_hand_over_decodes(kind):
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = img.tobytes()
    data = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "ndarray": np.frombuffer(raw, np.uint8),
        "array.array": array.array("B", raw),
        "list": list(raw),
    }[kind]
    np.testing.assert_array_equal(decode_image("rgb8", 3, 2, 9, data), img)


# --- invalid buffers ----------------------------------------------------------


def test_unsupported_encoding_is_named_in_the_error():
    with pytest.raises(ImageDecodeError, match="unsupported image encoding '32FC3'"):
        decode_image("32FC3", 2, 2, 24, bytes(48))


@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (-1, 5)])
def test_zero_or_negative_size_is_refused(width, height):
    with pytest.raises(ImageDecodeError, match=f"zero or negative size {width}x{height}"):
        decode_image("rgb8", width, height, 30, bytes(300))


def test_step_shorter_than_a_row_is_refused():
    with pytest.raises(ImageDecodeError, match=r"step 1000 is smaller than .*640 x 3 = 1920"):
        decode_image("bgr8", 640, 480, 1000, bytes(1000 * 480))


def test_short_data_reports_bytes_found_and_expected():
    msg = r"data has 1000 bytes, expected at least 921600 \(step 1920 x height 480\)"
    with pytest.raises(ImageDecodeError, match=msg):
        decode_image("rgb8", 640, 480, 1920, bytes(1000))


def test_padded_step_counts_in_the_expected_length():
    with pytest.raises(ImageDecodeError, match=r"expected at least 8000 \(step 2000 x height 4\)"):
        decode_image("rgb8", 640, 4, 2000, bytes(640 * 3 * 4))


def test_an_8k_image_is_allowed_but_anything_larger_is_refused():
    assert DEFAULT_MAX_PIXELS == 7680 * 4320
    # Checked before the data length, so no 100 MB buffer is needed to see it.
    with pytest.raises(ImageDecodeError, match="data has"):
        decode_image("mono8", 7680, 4320, 7680, b"")
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image("mono8", 7681, 4320, 7681, b"")


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 99 pixels"):
        decode_image("mono8", 10, 10, 10, bytes(100), max_pixels=99)


def test_non_integer_header_fields_are_refused():
    with pytest.raises(ImageDecodeError, match="width must be an integer, got 2.5"):
        decode_image("mono8", 2.5, 2, 3, bytes(6))
    with pytest.raises(ImageDecodeError, match="step must be an integer, got None"):
        decode_image("mono8", 2, 2, None, bytes(6))


def test_odd_width_is_refused_for_422():
    with pytest.raises(ImageDecodeError, match="even width"):
        decode_image("yuv422", 3, 2, 6, bytes(12))


def test_image_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


# --- compressed ---------------------------------------------------------------


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _smooth_image() -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([x * 4, y * 5, np.full_like(x, 128)], axis=2).astype(np.uint8)


def test_png_decodes_losslessly_in_rgb_order(rgb):
    np.testing.assert_array_equal(decode_compressed("png", _png(rgb)), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", ""])
def test_jpeg_decodes_in_rgb_order_for_every_format_string(fmt):
    img = _smooth_image()
    out = decode_compressed(fmt, _jpeg(img))
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - img).mean() < 3


def test_png_format_string_from_image_transport_is_accepted(rgb):
    np.testing.assert_array_equal(decode_compressed("rgb8; png compressed bgr8", _png(rgb)), rgb)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_jpeg_raises(keep):
    data = _jpeg(_smooth_image())
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_compressed("jpeg", data[: int(len(data) * keep)])


def test_truncated_png_raises(rgb):
    data = _png(rgb)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_compressed("png", data[: len(data) // 2])


def test_jpeg_with_a_corrupt_header_raises():
    data = bytearray(_jpeg(_smooth_image()))
    data[2:40] = b"\x12" * 38
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed("jpeg", bytes(data))


def test_png_with_a_corrupt_chunk_raises(rgb):
    data = bytearray(_png(rgb))
    data[40:80] = b"\x00" * 40  # damages the IDAT CRC/zlib stream
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed("png", bytes(data))


def test_empty_or_foreign_compressed_payload_raises():
    with pytest.raises(ImageDecodeError, match="no data"):
        decode_compressed("jpeg", b"")
    with pytest.raises(ImageDecodeError, match="neither JPEG nor PNG"):
        decode_compressed("jpeg", b"GIF89a" + bytes(100))


def test_unsupported_compressed_formats_are_refused():
    with pytest.raises(ImageDecodeError, match="unsupported compressed image format 'theora'"):
        decode_compressed("theora", _jpeg(_smooth_image()))
    with pytest.raises(ImageDecodeError, match="compressedDepth"):
        decode_compressed("16UC1; compressedDepth png", _png(_smooth_image()))


def test_compressed_pixel_limit_applies_after_decoding():
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_compressed("png", _png(_smooth_image()), max_pixels=100)


# --- depth --------------------------------------------------------------------


def test_16uc1_millimetres_become_metres_with_zero_as_nan():
    mm = np.array([[0, 1, 1500], [65535, 250, 0]], dtype="<u2")
    out = decode_depth("16UC1", 3, 2, 6, mm.tobytes())
    assert out.dtype == np.float32
    expected = np.array([[np.nan, 0.001, 1.5], [65.535, 0.25, np.nan]], np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_32fc1_invalid_values_become_nan():
    m = np.array([[0.0, np.inf, -np.inf, np.nan, 2.25]], dtype="<f4")
    out = decode_depth("32FC1", 5, 1, 20 + 4, m.tobytes() + bytes(4))
    assert np.isnan(out[0, :4]).all() and out[0, 4] == np.float32(2.25)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("big", [False, True])
def test_depth_round_trips_through_its_encoder(encoding, big):
    rng = np.random.default_rng(2)
    metres = rng.uniform(0.2, 9.0, (6, 7)).astype(np.float32)
    metres[1, 2] = np.nan
    raw = encode_depth(metres, encoding, is_bigendian=big)
    out = decode_depth(raw.encoding, raw.width, raw.height, raw.step, raw.data, raw.is_bigendian)
    np.testing.assert_allclose(out, metres, atol=0.0005 if encoding == "16UC1" else 0, equal_nan=True)


def test_depth_decoder_accepts_odd_row_padding():
    mm = np.array([[1000, 2000], [3000, 4000]], dtype="<u2")
    rows = np.zeros((2, 5), np.uint8)
    rows[:, :4] = mm.view(np.uint8).reshape(2, 4)
    out = decode_depth("16UC1", 2, 2, 5, rows.tobytes())
    np.testing.assert_allclose(out, [[1.0, 2.0], [3.0, 4.0]])


def test_depth_buffer_is_validated_like_colour():
    with pytest.raises(ImageDecodeError, match=r"data has 7 bytes, expected at least 8"):
        decode_depth("16UC1", 2, 2, 4, bytes(7))
    with pytest.raises(ImageDecodeError, match="unsupported depth encoding 'rgb8'"):
        decode_depth("rgb8", 2, 2, 6, bytes(12))
