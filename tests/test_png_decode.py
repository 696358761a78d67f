"""fastseg.png_decode: libspng's PNG decode equals OpenCV's ``IMREAD_COLOR`` pixel for pixel
where it is taken, and every other PNG (or a broken one) goes to OpenCV."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fastseg.errors import InputError
from fastseg import png_decode
from fastseg.png_decode import decode_png
from fastseg.processing import decode_image


def _png(image: np.ndarray, **params: int) -> bytes:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, params.get("level", 3)])
    assert ok
    return buf.tobytes()


def _opencv(data: bytes) -> np.ndarray | None:
    decoded: np.ndarray | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return decoded


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


def _use_path(path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``decode_png`` take ``path``: libspng (before numba's kernel is loaded, or without
    it), ``compiled`` (the compiled unfilter after libdeflate has inflated the whole stream) or
    ``pipelined`` (the compiled unfilter beside isal's piece-by-piece inflate, taken here at any
    size, in pieces of 97 bytes, so even small images cross many pieces and bands)."""
    if path == "libspng":
        monkeypatch.setattr(png_decode, "ready_unfilter", lambda: None)
        return path
    assert png_decode.compiled_unfilter() is not None, "numba and libdeflate are installed"
    if path == "pipelined":
        assert png_decode._isal_zlib() is not None, "isal is installed"
        monkeypatch.setattr(png_decode, "PIPELINE_MIN_BYTES", 0)
        monkeypatch.setattr(png_decode, "_PIECE", 97)
    else:
        monkeypatch.setattr(png_decode, "PIPELINE_MIN_BYTES", 1 << 62)
    return path


@pytest.fixture(params=["libspng", "compiled", "pipelined"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every fast path in turn (``_use_path``)."""
    return _use_path(str(request.param), monkeypatch)


@pytest.fixture(params=["compiled", "pipelined"])
def compiled_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compiled unfilter's two inflates in turn (``_use_path``)."""
    return _use_path(str(request.param), monkeypatch)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (480, 641)])
def test_rgb_and_rgba_decode_as_opencv_does(channels: int, hw: tuple[int, int], decoder: str) -> None:
    rng = np.random.default_rng(channels * 1000 + hw[0])
    image = rng.integers(0, 256, (*hw, channels), dtype=np.uint8)
    image[: hw[0] // 2] //= 7  # some structure, so the PNG filters vary row to row
    data = _png(image)
    fast = decode_png(data)
    assert fast is not None, "an 8-bit RGB/RGBA PNG takes the libspng path"
    assert fast.dtype == np.uint8 and fast.shape == (*hw, 3) and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, _opencv(data))
    np.testing.assert_array_equal(fast, image[..., :3])  # BGR as written, alpha dropped


def test_a_gamma_chunk_changes_nothing_on_either_path(decoder: str) -> None:
    image = np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    data = _with_chunk(_png(image), b"gAMA", (45455).to_bytes(4, "big"))
    fast = decode_png(data)
    assert fast is not None
    np.testing.assert_array_equal(fast, _opencv(data))


@pytest.mark.parametrize(
    "case",
    ["gray", "gray_alpha", "rgb16", "palette_like_trns", "exif", "interlaced", "not_png", "truncated"],
)
def test_other_pngs_go_to_opencv(case: str, decoder: str) -> None:
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


def test_real_pngs_decode_as_opencv_does(shared_data: Path, decoder: str) -> None:
    pngs = sorted((shared_data / "images").rglob("*.png"))[:6]
    assert pngs, f"no PNG under {shared_data / 'images'}"
    for path in pngs:
        data = path.read_bytes()
        fast = decode_png(data)
        np.testing.assert_array_equal(decode_image(data), _opencv(data), err_msg=str(path))
        if fast is not None:
            np.testing.assert_array_equal(fast, _opencv(data), err_msg=str(path))


def _filtered_png(image: np.ndarray, kinds: list[int], *, idat_parts: int = 1, between: bytes = b"") -> bytes:
    """An 8-bit RGB PNG of BGR ``image`` whose row ``y`` uses filter ``kinds[y]`` (0-4, as the
    PNG spec defines them), its zlib stream split over ``idat_parts`` IDAT chunks with
    ``between`` (whole chunks) after the first."""
    rgb = image[..., ::-1].astype(np.int64)
    h, w = rgb.shape[:2]
    rows = []
    for y in range(h):
        x = rgb[y].reshape(-1)
        b = rgb[y - 1].reshape(-1) if y else np.zeros_like(x)
        a = np.concatenate([np.zeros(3, np.int64), x[:-3]])
        c = np.concatenate([np.zeros(3, np.int64), b[:-3]])
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        predictor = [np.zeros_like(x), a, b, (a + b) // 2, paeth][kinds[y]]
        rows.append(bytes([kinds[y]]) + ((x - predictor) % 256).astype(np.uint8).tobytes())
    stream = zlib.compress(b"".join(rows))
    cut = [len(stream) * i // idat_parts for i in range(idat_parts + 1)]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    idats = [chunk(b"IDAT", stream[cut[i] : cut[i + 1]]) for i in range(idat_parts)]
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idats[0] + between + b"".join(idats[1:])
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("hw", [(1, 1), (5, 2), (33, 47), (70, 9), (40, 64)])
def test_the_compiled_unfilter_undoes_every_filter_as_opencv_does(hw: tuple[int, int], compiled_path: str) -> None:
    """Each filter on each row (the first row's filters see zeros above), mixed row to row,
    over photo-like and noisy pixels, and IDAT split in parts, in one band or over three
    (32 rows each, the last partial), widths with and without a remainder past the last four
    pixels: the compiled paths' pixels are OpenCV's and the image's."""
    rng = np.random.default_rng(hw[0])
    smooth = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), hw[::-1], interpolation=cv2.INTER_LINEAR)
    for image in (smooth, rng.integers(0, 256, (*hw, 3), dtype=np.uint8)):
        for first in range(5):
            kinds = [(first + y * 3) % 5 for y in range(hw[0])]
            for parts in (1, 3):
                data = _filtered_png(image, kinds, idat_parts=parts)
                got = decode_png(data)
                assert got is not None
                np.testing.assert_array_equal(got, _opencv(data))
                np.testing.assert_array_equal(got, image)


@pytest.mark.parametrize("simple_first", [True, False], ids=["simple_band_first", "diagonal_band_first"])
def test_bands_of_sub_up_none_rows_and_bands_with_average_or_paeth_alternate(simple_first: bool, compiled_path: str) -> None:
    """On the whole path (and the split's halves), a band whose rows are all None, Sub or Up
    takes the row-at-a-time pass, any other band the diagonal one; over 100 rows (four bands,
    the last partial) they alternate both ways, so each reads the row above from a band the
    other pass undid (Up included, and Up on row 0). The pipeline keeps the diagonal pass."""
    from fastseg._png_kernels import BAND

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (100, 23, 3), dtype=np.uint8)
    simple, diagonal = [2, 1, 0, 1, 2], [4, 3, 1, 2, 4, 0]
    kinds = []
    for band in range(4):
        cycle = simple if (band % 2 == 0) == simple_first else diagonal
        kinds += [cycle[y % len(cycle)] for y in range(BAND)]
    data = _filtered_png(image, kinds[:100])
    got = decode_png(data)
    assert got is not None
    np.testing.assert_array_equal(got, image)
    np.testing.assert_array_equal(got, _opencv(data))


def _corrupt(case: str, image: np.ndarray) -> bytes:
    data = _filtered_png(image, [4] * image.shape[0])
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    if case == "idat_crc":
        return data[: idat + 4 + length] + bytes([data[idat + 4 + length] ^ 1]) + data[idat + 5 + length :]
    if case in ("filter_byte", "late_filter_byte"):
        rows = bytearray(zlib.decompress(data[idat + 4 : idat + 4 + length]))
        rows[0 if case == "filter_byte" else 35 * (1 + 3 * image.shape[1])] = 5  # row 0, or row 35: the second band
        return _with_idat(data, idat, length, zlib.compress(bytes(rows)))
    if case == "corrupt_stream":
        stream = bytearray(data[idat + 4 : idat + 4 + length])
        stream[len(stream) // 2 :] = bytes(len(stream) - len(stream) // 2)  # zeros from the middle on
        return _with_idat(data, idat, length, bytes(stream))
    if case == "short_data":
        return _with_idat(data, idat, length, zlib.compress(zlib.decompress(data[idat + 4 : idat + 4 + length])[:-5]))
    if case == "long_data":
        return _with_idat(data, idat, length, zlib.compress(zlib.decompress(data[idat + 4 : idat + 4 + length]) + b"\0" * 9))
    if case == "unended_stream":  # all the rows and more, then no final block: libspng decodes it, libpng refuses
        deflate = zlib.compressobj()
        unended = zlib.decompress(data[idat + 4 : idat + 4 + length]) + b"\0" * 9
        return _with_idat(data, idat, length, deflate.compress(unended) + deflate.flush(zlib.Z_SYNC_FLUSH))
    if case == "split_idat":
        return _filtered_png(image, [4] * image.shape[0], idat_parts=2, between=_chunk(b"tEXt", b"a\0b"))
    if case == "unknown_critical":
        return data[:33] + _chunk(b"ABCD", b"x") + data[33:]
    raise AssertionError(case)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _with_idat(data: bytes, idat: int, length: int, stream: bytes) -> bytes:
    return data[: idat - 4] + _chunk(b"IDAT", stream) + data[idat + 8 + length :]


@pytest.mark.parametrize("case", ["idat_crc", "filter_byte", "late_filter_byte", "short_data", "long_data", "corrupt_stream",
                                  "unended_stream", "split_idat", "unknown_critical"])
def test_a_png_libpng_would_not_simply_decode_leaves_the_compiled_path(case: str, compiled_path: str) -> None:
    """A critical chunk's bad CRC, a filter byte over 4 (in the first band or a later one),
    too little or too much image data, a corrupt zlib stream, one that never ends, IDATs not in
    one run, an unknown critical chunk: the compiled path answers None on both inflates, libspng
    is not asked then (it decodes the stream that never ends, which libpng refuses), and
    decode_image gives OpenCV's answer or its error."""
    kernel = png_decode.compiled_unfilter()
    assert kernel is not None
    image = np.random.default_rng(9).integers(0, 256, (40, 7, 3), dtype=np.uint8)
    data = _corrupt(case, image)
    stream = png_decode._image_stream(data)
    assert stream is None or png_decode._decode_rgb(stream, 7, 40, kernel) is None
    want = _opencv(data)
    if stream is None:  # libpng refuses it, and libspng is not asked
        assert decode_png(data) is None
    if want is None:
        with pytest.raises(InputError):
            decode_image(data)
    else:
        np.testing.assert_array_equal(decode_image(data), want)


def test_a_short_very_wide_png_is_left_to_libspng(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled unfilter's work buffer is 132 bytes per column, all touched by every band:
    a 4,000,000x1 PNG (11 KB of file) took 512 MiB and 1.4 s. Where that buffer would outweigh
    the image (and 4 MiB), libspng decodes, to OpenCV's pixels."""
    from fastseg._png_kernels import work_fits

    assert png_decode.compiled_unfilter() is not None
    assert work_fits(2048, 1024) and work_fits(31_000, 1) and work_fits(1_000_000, 100)
    assert not work_fits(4_000_000, 1) and not work_fits(200_000, 2)
    taken: list[int] = []
    real = png_decode._decode_rgb

    def spy(*args: Any) -> np.ndarray | None:
        taken.append(1)
        return real(*args)

    monkeypatch.setattr(png_decode, "_decode_rgb", spy)
    wide = np.random.default_rng(5).integers(0, 256, (2, 200_000, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(_png(wide)), wide)
    assert taken == []
    tall = wide.reshape(400, 1000, 3)
    np.testing.assert_array_equal(decode_png(_png(tall)), tall)
    assert taken == [1]


def test_decoding_never_waits_for_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until ``preload`` has loaded the kernel, ``ready_unfilter`` answers None (libspng
    decodes) and never loads it itself."""
    import functools

    calls: list[int] = []
    monkeypatch.setattr(png_decode, "compiled_unfilter", functools.cache(lambda: calls.append(1)))
    assert png_decode.ready_unfilter() is None and calls == []
    image = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(_png(image)), image)
    assert calls == []


@pytest.mark.parametrize("isal", [True, False], ids=["isal", "without_isal"])
def test_a_large_png_takes_the_pipeline_by_default_and_leaves_no_thread(isal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the default threshold (256 KiB of pixels) and piece size: the helper inflates (a thread
    named fastseg-png-inflate starts) and is gone when decode_png returns; without isal,
    libdeflate inflates it whole on the calling thread. Same pixels either way."""
    import threading

    assert png_decode.compiled_unfilter() is not None
    if not isal:
        monkeypatch.setattr(png_decode, "_isal_zlib", lambda: None)
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    rng = np.random.default_rng(5)
    image = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (700, 520), interpolation=cv2.INTER_CUBIC)
    assert 520 * (3 * 700 + 1) >= png_decode.PIPELINE_MIN_BYTES
    data = _png(image)
    got = decode_png(data)
    assert got is not None
    np.testing.assert_array_equal(got, image)
    assert started == (["fastseg-png-inflate"] if isal else [])
    assert not any(t.name == "fastseg-png-inflate" for t in threading.enumerate())


def test_random_damage_to_the_stream_never_gives_pixels_opencv_would_not(compiled_path: str) -> None:
    """60 damaged zlib streams (a flipped bit, a cut, a tail of noise; the IDAT CRC made valid,
    so the damage reaches the inflate): decode_image answers as OpenCV does, pixels for
    pixels or InputError for its refusal, on both inflates, and never hangs."""
    rng = np.random.default_rng(11)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (300, 200), interpolation=cv2.INTER_CUBIC)
    data = _png(image)
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    stream = data[idat + 4 : idat + 4 + length]
    for case in range(60):
        damaged = bytearray(stream)
        cut = int(rng.integers(2, len(stream)))
        if case % 3 == 0:
            damaged[cut] ^= 1 << int(rng.integers(8))
        else:
            damaged = damaged[:cut] + (rng.integers(0, 256, 50, dtype=np.uint8).tobytes() if case % 3 == 2 else b"")
        broken = _with_idat(data, idat, length, bytes(damaged))
        want = _opencv(broken)
        if want is None:
            with pytest.raises(InputError):
                decode_image(broken)
        else:
            np.testing.assert_array_equal(decode_image(broken), want)
