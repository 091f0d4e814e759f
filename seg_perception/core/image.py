"""Conversion of raw and compressed camera buffers to RGB arrays (and back).

The ROS layer hands us the fields of a ``sensor_msgs/Image`` (or
``CompressedImage``) and gets an ``(H, W, 3)`` uint8 RGB array in return. Every
field is checked before it is trusted, because a malformed message from a
misconfigured driver must produce a clear error, not a crash or a garbage frame.

Where the buffer already is RGB the result is a *view* of the caller's bytes (no
copy); such views are read-only when the buffer is ``bytes``. Copy before writing.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

# 8K UHD (7680 x 4320); anything larger is almost certainly a corrupt header.
DEFAULT_MAX_PIXELS = 7680 * 4320

Buffer = Union[bytes, bytearray, memoryview, np.ndarray, array.array, list]


class ImageDecodeError(ValueError):
    """A buffer could not be turned into an image; the message names the problem."""


@dataclass(frozen=True)
class _Layout:
    """How one encoding is stored: bytes per pixel and element type."""

    channels: int
    dtype: np.dtype


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_F32 = np.dtype(np.float32)

# Canonical encodings we can turn into RGB, and how their pixels are laid out.
_COLOR_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, _U8),
    "bgr8": _Layout(3, _U8),
    "rgba8": _Layout(4, _U8),
    "bgra8": _Layout(4, _U8),
    "mono8": _Layout(1, _U8),
    "mono16": _Layout(1, _U16),
    # 4:2:2 packed, two bytes per pixel.
    "uyvy": _Layout(2, _U8),
    "yuyv": _Layout(2, _U8),
    "bayer_rggb8": _Layout(1, _U8),
    "bayer_bggr8": _Layout(1, _U8),
    "bayer_gbrg8": _Layout(1, _U8),
    "bayer_grbg8": _Layout(1, _U8),
}

# Other names drivers use for the same layouts. Numeric OpenCV types carry no
# channel order; OpenCV's own convention (BGR) is the useful guess.
_ALIASES: dict[str, str] = {
    "8uc1": "mono8",
    "8uc3": "bgr8",
    "8uc4": "bgra8",
    "16uc1": "mono16",
    "yuv422": "uyvy",  # ROS' name for UYVY (sensor_msgs/image_encodings.hpp)
    "yuv422_yuy2": "yuyv",
    "yuy2": "yuyv",
}

# Demosaicing codes, in OpenCV's naming (which names the pattern by the second
# row's second and third pixels, hence the apparent swap).
_BAYER_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

_DEPTH_LAYOUTS: dict[str, _Layout] = {
    "16uc1": _Layout(1, _U16),  # millimetres
    "mono16": _Layout(1, _U16),  # some drivers label mm depth this way
    "32fc1": _Layout(1, _F32),  # metres
}


def canonical_encoding(encoding: str) -> str:
    """The canonical name of a colour encoding (``"8UC3"`` -> ``"bgr8"``).

    Raises ImageDecodeError for encodings this module cannot decode.
    """
    key = encoding.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _COLOR_LAYOUTS:
        supported = ", ".join(sorted(set(_COLOR_LAYOUTS) | set(_ALIASES)))
        raise ImageDecodeError(f"unsupported image encoding '{encoding}' (supported: {supported})")
    return key


def supported_encodings() -> list[str]:
    """All colour encoding names ``decode_image`` accepts (canonical and aliases)."""
    return sorted(set(_COLOR_LAYOUTS) | set(_ALIASES))


def _as_bytes(data: Buffer) -> np.ndarray:
    """A flat uint8 view of ``data`` (no copy for buffer-protocol objects)."""
    if isinstance(data, np.ndarray):
        arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        return arr.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # A plain list of ints (e.g. hand-built messages in tests).
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _pixel_rows(
    encoding_label: str,
    layout: _Layout,
    width: int,
    height: int,
    step: int,
    data: Buffer,
    is_bigendian: bool,
    max_pixels: int,
) -> np.ndarray:
    """Validate the buffer and view it as ``(height, width, channels)`` of ``layout.dtype``."""
    for name, value in (("width", width), ("height", height), ("step", step)):
        try:
            ok = int(value) == value
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ImageDecodeError(f"{name} must be an integer, got {value!r}")
    width, height, step = int(width), int(height), int(step)
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has zero or negative size {width}x{height} (encoding '{encoding_label}')")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image size {width}x{height} ({width * height} pixels) exceeds the limit of "
            f"{max_pixels} pixels; the header is probably corrupt"
        )
    row_bytes = width * layout.channels * layout.dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width x bytes per pixel = {width} x "
            f"{layout.channels * layout.dtype.itemsize} = {row_bytes} for encoding '{encoding_label}'"
        )
    flat = _as_bytes(data)
    needed = step * height
    if flat.size < needed:
        raise ImageDecodeError(
            f"data has {flat.size} bytes, expected at least {needed} (step {step} x height {height})"
        )
    # (height, step) bytes -> drop the row padding -> split into pixels. All views.
    rows = flat[:needed].reshape(height, step)[:, :row_bytes]
    if layout.dtype.itemsize > 1:
        dtype = layout.dtype.newbyteorder(">" if is_bigendian else "<")
        try:
            rows = rows.view(dtype)  # padded rows: needs NumPy >= 1.23
        except ValueError:
            rows = np.ascontiguousarray(rows).view(dtype)
        rows = rows.astype(layout.dtype, copy=False)  # native byte order
    return rows.reshape(height, width, layout.channels)


def decode_image(
    encoding: str,
    width: int,
    height: int,
    step: int,
    data: Buffer,
    is_bigendian: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Turn a raw image buffer into ``(height, width, 3)`` uint8 RGB.

    ``step`` is the row length in bytes (may exceed ``width * bytes_per_pixel``
    when rows are padded); ``data`` holds at least ``step * height`` bytes.
    ``mono16`` is scaled to 8 bits by dropping the low byte. rgb8 input comes back
    as a view of ``data`` (no copy); other encodings allocate one output image.

    Raises ImageDecodeError naming the problem for an unsupported encoding, zero
    or oversized dimensions, a short step or a short buffer.
    """
    enc = canonical_encoding(encoding)
    layout = _COLOR_LAYOUTS[enc]
    px = _pixel_rows(encoding, layout, width, height, step, data, is_bigendian, max_pixels)
    if enc == "rgb8":
        return px
    if enc == "bgr8":
        return cv2.cvtColor(px, cv2.COLOR_BGR2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)
    if enc == "bgra8":
        return cv2.cvtColor(px, cv2.COLOR_BGRA2RGB)
    if enc == "mono8":
        return cv2.cvtColor(px[:, :, 0], cv2.COLOR_GRAY2RGB)
    if enc == "mono16":
        return cv2.cvtColor((px[:, :, 0] >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    if enc in ("uyvy", "yuyv"):
        if int(width) % 2:
            raise ImageDecodeError(f"4:2:2 encoding '{encoding}' needs an even width, got {width}")
        code = cv2.COLOR_YUV2RGB_UYVY if enc == "uyvy" else cv2.COLOR_YUV2RGB_YUY2
        return cv2.cvtColor(np.ascontiguousarray(px), code)
    if enc in _BAYER_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(px[:, :, 0]), _BAYER_TO_RGB[enc])
    raise AssertionError(f"encoding {enc} has a layout but no converter")  # pragma: no cover


def decode_depth(
    encoding: str,
    width: int,
    height: int,
    step: int,
    data: Buffer,
    is_bigendian: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Turn a depth buffer into ``(height, width)`` float32 metres, NaN where invalid.

    ``16UC1`` (and ``mono16``) hold millimetres, 0 meaning "no return";
    ``32FC1`` holds metres, where 0, +-inf and NaN all mean "no return".
    """
    key = encoding.strip().lower()
    if key not in _DEPTH_LAYOUTS:
        raise ImageDecodeError(f"unsupported depth encoding '{encoding}' (supported: 16UC1 in mm, 32FC1 in m)")
    layout = _DEPTH_LAYOUTS[key]
    px = _pixel_rows(encoding, layout, width, height, step, data, is_bigendian, max_pixels)[:, :, 0]
    if layout.dtype == _U16:
        metres = px.astype(np.float32) * np.float32(0.001)
        metres[px == 0] = np.nan
        return metres
    metres = px.astype(np.float32, copy=True)
    metres[~np.isfinite(metres) | (metres == 0)] = np.nan
    return metres


# ----------------------------------------------------------------------------
# Compressed images


def _check_compressed_format(format_str: str) -> None:
    """Reject format strings that name something other than a JPEG/PNG colour image.

    image_transport writes e.g. ``"rgb8; jpeg compressed bgr8"``; plain drivers
    write ``"jpeg"`` or ``"png"``; an empty format is allowed (content decides).
    """
    fmt = format_str.strip().lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(
            f"format '{format_str}' is compressedDepth (a depth image), not a colour image"
        )
    if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(f"unsupported compressed image format '{format_str}' (supported: jpeg, png)")


_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND"


def decode_compressed(
    format_str: str, data: Buffer, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode a JPEG or PNG ``CompressedImage`` payload into ``(H, W, 3)`` uint8 RGB.

    Raises ImageDecodeError when the payload is empty, corrupt or truncated (a
    truncated JPEG would otherwise decode "successfully" with a grey bottom), or
    when the format is not jpeg/png.
    """
    _check_compressed_format(format_str)  # the bytes, not the label, decide jpeg vs png
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image ({format_str or 'no format'}) has no data")
    head = buf[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        actual = "jpeg"
        # The end-of-image marker cannot occur inside entropy-coded data (0xFF is
        # byte-stuffed there), so its absence near the end means truncation.
        if _JPEG_EOI not in buf[-64:].tobytes():
            raise ImageDecodeError(f"JPEG data ({buf.size} bytes) is truncated: no end-of-image marker")
    elif head == _PNG_MAGIC:
        actual = "png"
        if _PNG_IEND not in buf[-16:].tobytes():
            raise ImageDecodeError(f"PNG data ({buf.size} bytes) is truncated: no IEND chunk")
    else:
        raise ImageDecodeError(
            f"compressed data ({buf.size} bytes) is neither JPEG nor PNG "
            f"(starts with {head[:4].hex()}, format '{format_str}')"
        )
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"{actual.upper()} data ({buf.size} bytes) is corrupt: the decoder rejected it")
    h, w = bgr.shape[:2]
    if h * w > max_pixels:
        raise ImageDecodeError(f"decoded image {w}x{h} exceeds the limit of {max_pixels} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------
# The inverse, for publishers and tests


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` body; ``data`` holds ``step * height`` bytes."""

    encoding: str
    width: int
    height: int
    step: int
    data: bytes
    is_bigendian: bool = False


def _rgb_to_pixels(rgb: np.ndarray, enc: str) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 -> ``(H, W, channels)`` pixels of canonical encoding ``enc``."""
    if enc == "rgb8":
        return rgb
    if enc == "bgr8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if enc == "rgba8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    if enc == "bgra8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    if enc == "mono8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
    if enc == "mono16":
        # Inverse of the decoder's ">> 8": x * 257 maps 0..255 onto 0..65535.
        return (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)[:, :, None]
    if enc in ("uyvy", "yuyv"):
        if rgb.shape[1] % 2:
            raise ImageDecodeError(f"4:2:2 encoding '{enc}' needs an even width, got {rgb.shape[1]}")
        code = getattr(cv2, "COLOR_RGB2YUV_UYVY" if enc == "uyvy" else "COLOR_RGB2YUV_YUY2", None)
        if code is None:  # pragma: no cover - OpenCV < 4.8
            raise ImageDecodeError(f"this OpenCV ({cv2.__version__}) cannot encode '{enc}'")
        return cv2.cvtColor(np.ascontiguousarray(rgb), code)
    if enc in _BAYER_TO_RGB:
        # Sample each pixel's colour from the 2x2 pattern named in the encoding.
        pattern = enc[len("bayer_"):len("bayer_") + 4]  # e.g. "rggb"
        channel = {"r": 0, "g": 1, "b": 2}
        mosaic = np.empty(rgb.shape[:2], np.uint8)
        for i, letter in enumerate(pattern):
            dy, dx = divmod(i, 2)
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
        return mosaic[:, :, None]
    raise AssertionError(f"no encoder for {enc}")  # pragma: no cover


def encode_rgb_to(rgb: np.ndarray, encoding: str, row_padding: int = 0, is_bigendian: bool = False) -> RawImage:
    """Encode ``(H, W, 3)`` uint8 RGB as a raw buffer in ``encoding``.

    ``row_padding`` extra zero bytes are appended to each row (so ``step`` is
    ``width * bytes_per_pixel + row_padding``), to exercise readers' step handling.
    Lossy for mono (luma only) and 4:2:2 (chroma shared by pixel pairs) encodings.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if row_padding < 0:
        raise ValueError(f"row_padding must be >= 0, got {row_padding}")
    enc = canonical_encoding(encoding)
    px = _rgb_to_pixels(rgb, enc)
    if px.dtype.itemsize > 1:
        px = px.astype(px.dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    h, w = rgb.shape[:2]
    rows = np.ascontiguousarray(px).reshape(h, -1).view(np.uint8)
    row_bytes = rows.shape[1]
    if row_padding:
        rows = np.concatenate([rows, np.zeros((h, row_padding), np.uint8)], axis=1)
    return RawImage(encoding, w, h, row_bytes + row_padding, rows.tobytes(), is_bigendian)


def encode_depth(metres: np.ndarray, encoding: str = "16UC1", is_bigendian: bool = False) -> RawImage:
    """Encode ``(H, W)`` metres as ``16UC1`` millimetres (NaN -> 0) or ``32FC1`` metres.

    The inverse of ``decode_depth``, for publishers of synthetic depth and tests.
    """
    metres = np.asarray(metres, dtype=np.float32)
    if metres.ndim != 2:
        raise ValueError(f"expected (H, W) depth, got shape {metres.shape}")
    key = encoding.strip().lower()
    order = ">" if is_bigendian else "<"
    if key == "16uc1":
        mm = np.where(np.isfinite(metres), np.round(metres * 1000.0), 0.0)
        values = np.clip(mm, 0, 65535).astype(np.dtype(np.uint16).newbyteorder(order))
    elif key == "32fc1":
        values = metres.astype(np.dtype(np.float32).newbyteorder(order))
    else:
        raise ImageDecodeError(f"unsupported depth encoding '{encoding}' (supported: 16UC1, 32FC1)")
    h, w = metres.shape
    return RawImage(encoding, w, h, w * values.dtype.itemsize, values.tobytes(), is_bigendian)
