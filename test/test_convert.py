"""Image message payloads ↔ numpy: encodings, step padding, endianness, compressed RGB, errors."""

from __future__ import annotations

import array
import io

import numpy as np
import pytest

from fusion_ros.errors import InputError
from fusion_ros.image_msgs import (
    RGB_ENCODINGS,
    THERMAL_ENCODINGS,
    decode_compressed,
    decode_thermal,
    decode_visible,
    encode_visible,
    thermal_from_msg,
    visible_from_msg,
)

def pack(pixels: np.ndarray, pad: int = 0, big_endian: bool = False) -> tuple[int, bytes]:
    """Rows of ``pixels`` as a message would carry them: optional byte order swap and row padding."""
    h = pixels.shape[0]
    dt = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = pixels.astype(dt).reshape(h, -1).view(np.uint8).reshape(h, -1)
    step = rows.shape[1] + pad
    out = np.full((h, step), 0xAB, np.uint8)  # padding bytes must never show up in the image
    out[:, : rows.shape[1]] = rows
    return step, out.tobytes()


def _thermal_cases(seed: int = 0) -> dict[str, np.ndarray]:
    """One small image per thermal encoding (read-only: shared by the tests)."""
    rng = np.random.default_rng(seed)
    cases = {
        "mono8": rng.integers(0, 256, (5, 7), dtype=np.uint8),
        "8UC1": rng.integers(0, 256, (5, 7), dtype=np.uint8),
        "mono16": rng.integers(20000, 40000, (5, 7), dtype=np.uint16),
        "16UC1": rng.integers(0, 65536, (5, 7), dtype=np.uint16),
        "32FC1": np.where(rng.random((5, 7)) < 0.1, np.nan, rng.normal(25, 5, (5, 7))).astype(np.float32),
    }
    for pixels in cases.values():
        pixels.setflags(write=False)
    return cases


THERMAL_CASES = _thermal_cases()


@pytest.mark.parametrize("encoding", THERMAL_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("big_endian", [False, True])
def test_thermal_roundtrip(encoding, pad, big_endian):
    pixels = THERMAL_CASES[encoding]
    step, data = pack(pixels, pad, big_endian)
    out = decode_thermal(encoding, 5, 7, step, big_endian, data)
    assert out.shape == (5, 7)
    assert out.dtype == pixels.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)  # NaN positions compare equal


def test_thermal_little_endian_decode_is_a_view_not_a_copy():
    pixels = THERMAL_CASES["mono16"]
    step, data = pack(pixels)
    buf = array.array("B", data)  # what rclpy messages carry
    out = decode_thermal("mono16", 5, 7, step, 0, buf)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))


@pytest.mark.parametrize("data_type", [bytes, bytearray, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8), list])
def test_accepts_every_data_container(data_type):
    pixels = THERMAL_CASES["16UC1"]
    step, data = pack(pixels, pad=2)
    np.testing.assert_array_equal(decode_thermal("16UC1", 5, 7, step, 0, data_type(data)), pixels)


@pytest.mark.parametrize("encoding", RGB_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 5])
def test_visible_decode_gives_rgb_and_encode_restores_the_encoding(encoding, pad):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    raw = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, alpha]),
        "bgra8": np.dstack([rgb[..., ::-1], alpha]),
        "mono8": rgb[..., 0],
    }[encoding]
    step, data = pack(np.ascontiguousarray(raw), pad)
    vis = decode_visible(encoding, 4, 6, step, 0, data)
    expected = rgb[..., 0] if encoding == "mono8" else rgb
    np.testing.assert_array_equal(vis.rgb, expected)
    assert vis.encoding == encoding and (vis.height, vis.width) == (4, 6)
    # a "fused" image re-encoded: same layout as the input, alpha kept
    enc = encode_visible(np.ascontiguousarray(vis.rgb), vis)
    assert (enc.encoding, enc.height, enc.width) == (encoding, 4, 6)
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}[encoding]
    assert enc.step == 6 * channels and enc.data.size == 4 * 6 * channels
    np.testing.assert_array_equal(enc.data.reshape(raw.shape), raw)


def test_encode_rgba_from_compressed_is_opaque():
    vis = decode_compressed("rgba8; png compressed rgba8", _png(np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8)))
    enc = encode_visible(np.ascontiguousarray(vis.rgb), vis)
    assert enc.encoding == "rgba8"
    assert (enc.data.reshape(3, 4, 4)[..., 3] == 255).all()


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt,expected_encoding",
    [
        ("png", "rgb8"),
        ("bgr8; png compressed bgr8", "bgr8"),
        ("rgb8; png compressed rgb8", "rgb8"),
        ("mono8; png compressed mono8", "mono8"),
    ],
)
def test_compressed_png_decodes_exactly(fmt, expected_encoding):
    rgb = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    vis = decode_compressed(fmt, array.array("B", _png(rgb)))
    assert vis.encoding == expected_encoding
    if expected_encoding == "mono8":
        assert vis.rgb.shape == (6, 8)
    else:
        np.testing.assert_array_equal(vis.rgb, rgb)


def test_compressed_jpeg_and_grey_png():
    rgb = np.full((16, 16, 3), (200, 40, 10), np.uint8)
    vis = decode_compressed("jpeg", _jpeg(rgb))
    assert vis.encoding == "rgb8" and vis.rgb.shape == (16, 16, 3)
    assert np.abs(vis.rgb.astype(int) - rgb).max() < 8
    grey = decode_compressed("png", _png(np.arange(64, dtype=np.uint8).reshape(8, 8)))
    assert grey.encoding == "mono8" and grey.rgb.shape == (8, 8)


@pytest.mark.parametrize(
    "fields,match",
    [
        (("rgb8", 4, 4, 12, 0, bytes(48)), "thermal encoding 'rgb8' is not supported"),
        (("mono16", 0, 4, 8, 0, b""), "empty"),
        (("mono16", 4, 4, 6, 0, bytes(24)), "step 6 is smaller than width 4"),
        (("mono16", 4, 4, 8, 0, bytes(31)), "31 bytes, expected step x height = 8 x 4 = 32"),
    ],
)
def test_thermal_errors_name_the_problem(fields, match):
    with pytest.raises(InputError, match=match):
        decode_thermal(*fields)


def test_visible_errors():
    with pytest.raises(InputError, match="rgb encoding 'mono16' is not supported; use one of rgb8"):
        decode_visible("mono16", 2, 2, 4, 0, bytes(8))
    with pytest.raises(InputError, match="rgb data has"):
        decode_visible("rgb8", 2, 2, 6, 0, bytes(5))
    with pytest.raises(InputError, match="cannot be decoded"):
        decode_compressed("jpeg", b"not a jpeg")
    with pytest.raises(InputError, match="no data"):
        decode_compressed("jpeg", b"")
    with pytest.raises(InputError, match="depth"):
        decode_compressed("16UC1; compressedDepth png", _png(np.zeros((2, 2, 3), np.uint8)))
    vis = decode_visible("rgb8", 2, 2, 6, 0, bytes(12))
    with pytest.raises(InputError, match="does not match"):
        encode_visible(np.zeros((3, 2, 3), np.uint8), vis)


class _Msg:
    """Duck-typed message (rosbags and rclpy messages have these fields)."""

    def __init__(self, encoding, pixels, pad=0):
        self.encoding = encoding
        self.height, self.width = pixels.shape[:2]
        self.is_bigendian = 0
        self.step, raw = pack(pixels, pad)
        self.data = np.frombuffer(raw, np.uint8)  # rosbags: numpy uint8


def test_from_msg_wrappers_work_on_rosbags_style_messages():
    thermal = THERMAL_CASES["mono16"]
    np.testing.assert_array_equal(thermal_from_msg(_Msg("mono16", thermal, pad=4)), thermal)
    rgb = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(visible_from_msg(_Msg("bgr8", np.ascontiguousarray(rgb[..., ::-1]))).rgb, rgb)


def test_rclpy_image_message_roundtrip():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    msg = sensor_msgs.Image(height=5, width=7, encoding="16UC1", is_bigendian=1)
    msg.step, raw = pack(THERMAL_CASES["16UC1"], pad=2, big_endian=True)
    msg.data = array.array("B", raw)
    np.testing.assert_array_equal(thermal_from_msg(msg), THERMAL_CASES["16UC1"])
