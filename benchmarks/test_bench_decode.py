"""pytest-benchmark: PNG decoding, fastseg's paths against OpenCV's, on the two kinds of PNG a
user sends: libpng's (Paeth rows at its default level, as cameras and datasets write them;
the pipelined path) and OpenCV's own (every row Sub at zlib's fastest level; the split path).

Run: pytest benchmarks/test_bench_decode.py --benchmark-enable --bench-size 1024x2048
Every decode is checked against ``cv2.imdecode``'s pixels.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

from fastseg import png_decode


def _photo(hw: tuple[int, int]) -> np.ndarray:
    """A smooth, textured BGR scene (large shapes, gradients, mild noise), like a street frame."""
    h, w = hw
    rng = np.random.default_rng(7)
    coarse = cv2.resize(rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 2, (h, w, 3))
    return np.clip(coarse.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _paeth_png(bgr: np.ndarray) -> bytes:
    """``bgr`` as an 8-bit RGB PNG whose every row is Paeth-filtered, deflated at zlib level 6."""
    rgb = bgr[:, :, ::-1].astype(np.int16)
    h, w, _ = rgb.shape
    a = np.zeros_like(rgb)
    a[:, 1:] = rgb[:, :-1]
    b = np.zeros_like(rgb)
    b[1:] = rgb[:-1]
    c = np.zeros_like(rgb)
    c[1:, 1:] = rgb[:-1, :-1]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    guess = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    rows = ((rgb - guess) & 255).astype(np.uint8).reshape(h, 3 * w)
    raw = np.concatenate([np.full((h, 1), 4, np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def pngs(bench_size: tuple[int, int]) -> dict[str, bytes]:
    assert png_decode.compiled_unfilter() is not None  # numba and imagecodecs are dependencies
    png_decode.preload().join()
    photo = _photo(bench_size)
    return {"libpng-like (Paeth)": _paeth_png(photo), "OpenCV-written (Sub)": cv2.imencode(".png", photo)[1].tobytes()}


def _opencv(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


@pytest.mark.parametrize("kind", ["libpng-like (Paeth)", "OpenCV-written (Sub)"])
def test_decode_png_fastseg(benchmark, pngs: dict[str, bytes], kind: str) -> None:  # type: ignore[no-untyped-def]
    data = pngs[kind]
    got = benchmark(png_decode.decode_png, data)
    assert got is not None, "a compiled path should take this PNG"
    np.testing.assert_array_equal(got, _opencv(data))


@pytest.mark.parametrize("kind", ["libpng-like (Paeth)", "OpenCV-written (Sub)"])
def test_decode_png_opencv(benchmark, pngs: dict[str, bytes], kind: str) -> None:  # type: ignore[no-untyped-def]
    got = benchmark(_opencv, pngs[kind])
    assert got.shape[2] == 3
