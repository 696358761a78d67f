"""fastseg.png_decode: libspng's PNG decode equals OpenCV's ``IMREAD_COLOR`` pixel for pixel
where it is taken, and every other PNG (or a broken one) goes to OpenCV."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastseg.errors import InputError
from fastseg.png_decode import decode_png
from fastseg.processing import decode_image


def _png(image: np.ndarray, **params: int) -> bytes:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, params.get("level", 3)])
    assert ok
    return buf.tobytes()


def _opencv(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _raw_png(pixels: np.ndarray, colour: int) -> bytes:
    """A minimal PNG of 8-bit ``pixels`` with IHDR colour type ``colour`` (no filters), for the
    kinds OpenCV cannot write (gray + alpha)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    h, w = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, colour, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _interlaced(data: bytes) -> bytes:
    """``data`` with IHDR's interlace flag set (the pixels no longer make sense: this checks
    only that such a file is left to OpenCV)."""
    ihdr = bytearray(data[12:29])
    ihdr[16] = 1
    return data[:12] + bytes(ihdr) + zlib.crc32(bytes(ihdr)).to_bytes(4, "big") + data[33:]


def _with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with a chunk inserted right after IHDR (8 + 25 bytes)."""
    chunk = len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    return data[:33] + chunk + data[33:]


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (480, 641)])
def test_rgb_and_rgba_decode_as_opencv_does(channels: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(channels * 1000 + hw[0])
    image = rng.integers(0, 256, (*hw, channels), dtype=np.uint8)
    image[: hw[0] // 2] //= 7  # some structure, so the PNG filters vary row to row
    data = _png(image)
    fast = decode_png(data)
    assert fast is not None, "an 8-bit RGB/RGBA PNG takes the libspng path"
    assert fast.dtype == np.uint8 and fast.shape == (*hw, 3) and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, _opencv(data))
    np.testing.assert_array_equal(fast, image[..., :3])  # BGR as written, alpha dropped


def test_a_gamma_chunk_changes_nothing_on_either_path() -> None:
    image = np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    data = _with_chunk(_png(image), b"gAMA", (45455).to_bytes(4, "big"))
    fast = decode_png(data)
    assert fast is not None
    np.testing.assert_array_equal(fast, _opencv(data))


@pytest.mark.parametrize(
    "case",
    ["gray", "gray_alpha", "rgb16", "palette_like_trns", "exif", "interlaced", "not_png", "truncated"],
)
def test_other_pngs_go_to_opencv(case: str) -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    data = {
        "gray": lambda: _png(rgb[..., 0]),
        "gray_alpha": lambda: _raw_png(np.ascontiguousarray(rgb[..., :2]), 4),
        "rgb16": lambda: _png(rgb.astype(np.uint16) * 257),
        "palette_like_trns": lambda: _with_chunk(_png(rgb), b"tRNS", b"\x00\x01\x00\x02\x00\x03"),
        "exif": lambda: _with_chunk(_png(rgb), b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00"),
        "interlaced": lambda: _interlaced(_png(rgb)),
        "not_png": lambda: cv2.imencode(".jpg", rgb)[1].tobytes(),
        "truncated": lambda: _png(rgb)[:60],
    }[case]()
    assert decode_png(data) is None
    if case not in ("truncated", "interlaced"):  # decode_image still decodes it, through OpenCV, with OpenCV's result
        np.testing.assert_array_equal(decode_image(data), _opencv(data))


def test_a_truncated_png_keeps_the_clear_error() -> None:
    data = _png(np.zeros((40, 40, 3), np.uint8), level=0)[:200]
    with pytest.raises(InputError, match="Cannot decode x.png as an image"):
        decode_image(data, source="x.png")


def test_without_imagecodecs_opencv_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import fails as if not installed
    data = _png(np.full((8, 8, 3), 7, np.uint8))
    assert decode_png(data) is None
    np.testing.assert_array_equal(decode_image(data), np.full((8, 8, 3), 7, np.uint8))


def test_real_pngs_decode_as_opencv_does(shared_data: Path) -> None:
    pngs = sorted((shared_data / "images").rglob("*.png"))[:6]
    assert pngs, f"no PNG under {shared_data / 'images'}"
    for path in pngs:
        data = path.read_bytes()
        fast = decode_png(data)
        np.testing.assert_array_equal(decode_image(data), _opencv(data), err_msg=str(path))
        if fast is not None:
            np.testing.assert_array_equal(fast, _opencv(data), err_msg=str(path))
