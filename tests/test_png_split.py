"""fastseg.png_split: one PNG stream inflated in two halves on two threads gives OpenCV's
pixels, fills in the bytes the second half copied from before the split, and leaves every
stream it cannot handle to the usual path (which then answers as OpenCV does)."""

from __future__ import annotations

import threading
import zlib

import cv2
import numpy as np
import pytest

from fastseg import png_decode, png_split
from fastseg.errors import InputError
from fastseg.png_decode import decode_png
from fastseg.processing import decode_image


def _opencv_png(image: np.ndarray) -> bytes:
    """As ``cv2.imwrite`` writes by default: every row Sub, zlib's fastest level, RLE."""
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    noisy: np.ndarray = np.clip(smooth.astype(np.int16) + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)
    return noisy


@pytest.fixture
def splits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Split at any size; what each ``decode_split`` call answered."""
    assert png_decode.compiled_unfilter() is not None and png_decode._isal_zlib() is not None
    monkeypatch.setattr(png_decode, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(png_decode, "PIPELINE_MIN_BYTES", 0)
    answers: list[bool] = []
    real = png_split.decode_split

    def spy(*args: object) -> bool:
        answers.append(real(*args))  # type: ignore[arg-type]
        return answers[-1]

    monkeypatch.setattr(png_decode, "decode_split", spy)
    return answers


@pytest.mark.parametrize("hw", [(200, 300), (333, 517), (1024, 2048)])
def test_opencv_written_pngs_are_split_and_give_opencvs_pixels(hw: tuple[int, int], splits: list[bool]) -> None:
    image = _photo(*hw, seed=hw[0])
    data = _opencv_png(image)
    got = decode_png(data)
    assert splits == [True]
    assert got is not None
    np.testing.assert_array_equal(got, image)
    assert not any(t.name == "fastseg-png-inflate-first" for t in threading.enumerate())


def test_images_above_the_split_limit_keep_the_pipeline(splits: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """Above SPLIT_MAX_BYTES the split's image-sized scratch buffer is not worth its memory:
    the pipeline decodes, with one band of scratch."""
    image = _photo(200, 300, seed=4)
    monkeypatch.setattr(png_decode, "SPLIT_MAX_BYTES", 200 * (3 * 300 + 1) - 1)
    np.testing.assert_array_equal(decode_png(_opencv_png(image)), image)
    assert splits == []


def test_pngs_with_paeth_rows_are_not_split(splits: list[bool]) -> None:
    """libpng's adaptive filters (what OpenCV uses when given a compression level) pick
    Paeth on photos: one inflate beside the diagonal unfilter is faster there."""
    image = _photo(300, 400, seed=3)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    got = decode_png(buf.tobytes())
    assert splits == [False]
    np.testing.assert_array_equal(got, image)


def test_bytes_copied_from_before_the_split_are_filled_in() -> None:
    """A raw deflate stream that opens by copying from its window (as a second half may):
    inflated against the stand-in window, then given the real window, it reads as the data."""
    from isal import isal_zlib

    rng = np.random.default_rng(0)
    window = rng.integers(0, 256, 1 << 15, dtype=np.uint8).tobytes()
    data = window[1000:9000] + bytes(rng.integers(0, 4, 300_000, dtype=np.uint8)) + window[5:900]
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=window)
    second = np.frombuffer(packer.compress(data) + packer.flush(), np.uint8)
    spill = np.empty(len(data) + 1, np.uint8)
    inflated = png_split._second_half(isal_zlib, second, spill)
    assert inflated is not None and inflated[0] == len(data)
    assert inflated[1] == zlib.adler32(data[png_split._HEAD :])  # past the head, which may change
    assert spill[: len(data)].tobytes() != data  # stand-ins where the window was
    split = png_split._Split(window=window, stand_ins=png_split.stand_in_heads(isal_zlib, second, len(data)))
    assert png_split._copy_window_bytes(spill[: png_split._HEAD], split)
    assert spill[: len(data)].tobytes() == data


def test_copies_from_before_the_split_that_run_on_are_left_to_the_usual_path() -> None:
    """Data that keeps copying what it copied from the window (a period of 20,000 bytes, within
    zlib's reach of 32,506) cannot be filled in from the first 128 KiB: the split declines."""
    from isal import isal_zlib

    window = np.random.default_rng(1).integers(0, 256, 1 << 15, dtype=np.uint8).tobytes()
    data = window[-20_000:] * 13
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=window)
    second = np.frombuffer(packer.compress(data) + packer.flush(), np.uint8)
    spill = np.empty(len(data) + 1, np.uint8)
    inflated = png_split._second_half(isal_zlib, second, spill)
    assert inflated is not None and spill[: len(data)].tobytes() != data
    split = png_split._Split(window=window, stand_ins=png_split.stand_in_heads(isal_zlib, second, len(data)))
    assert not png_split._copy_window_bytes(spill[: png_split._HEAD], split)


def test_a_png_whose_second_half_opens_by_copying_from_the_first_is_filled_in(splits: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream built so that the split falls where the second half opens with a copy of the
    two rows before it (sync flushes fix the block boundaries): split, the copied bytes taken
    from the first half, OpenCV's pixels."""
    rng = np.random.default_rng(2)
    width = 900
    first, bridge = rng.integers(0, 256, (60, width, 3), dtype=np.uint8), rng.integers(0, 256, (2, width, 3), dtype=np.uint8)

    def rows(image: np.ndarray) -> bytes:
        return b"".join(b"\x01" + _sub(image[y]) for y in range(image.shape[0]))

    for extra in range(40, 80):  # the split falls past the middle: pick the size that puts the middle in the bridge block
        rest = np.concatenate([bridge, rng.integers(0, 256, (extra, width, 3), dtype=np.uint8)])
        packer = zlib.compressobj(6)
        parts = [packer.compress(rows(first)) + packer.flush(zlib.Z_SYNC_FLUSH),
                 packer.compress(rows(bridge)) + packer.flush(zlib.Z_SYNC_FLUSH), packer.compress(rows(rest)) + packer.flush()]
        stream = b"".join(parts)
        middle = 2 + (len(stream) - 2) // 2
        if len(parts[0]) < middle < len(parts[0]) + len(parts[1]) - 8:
            break
    else:
        pytest.fail("no size puts the middle in the bridge block")
    image = np.concatenate([first, bridge, rest])
    filled: list[int] = []
    real = png_split._copy_window_bytes

    def spy(head: np.ndarray, split: png_split._Split) -> bool:
        filled.append(int(np.count_nonzero(head != np.frombuffer(split.stand_ins[1], np.uint8))))
        return real(head, split)

    monkeypatch.setattr(png_split, "_copy_window_bytes", spy)
    np.testing.assert_array_equal(decode_png(_png_from_stream(width, image.shape[0], stream)), image)
    assert splits == [True]
    assert filled and filled[0] > 1000  # the bridge's copy came from before the split


def test_random_damage_through_the_split_never_gives_pixels_opencv_would_not(splits: list[bool]) -> None:
    """40 damaged streams of an OpenCV-written PNG (a flipped bit, a cut, a noisy tail; CRC
    made valid): decode_image answers as OpenCV does, and the helper thread always ends."""
    rng = np.random.default_rng(12)
    data = _opencv_png(_photo(240, 320, seed=12))
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    stream = data[idat + 4 : idat + 4 + length]
    for case in range(40):
        damaged = bytearray(stream)
        cut = int(rng.integers(len(stream) // 3, len(stream)))  # mostly past the split
        if case % 3 == 0:
            damaged[cut] ^= 1 << int(rng.integers(8))
        else:
            damaged = damaged[:cut] + (rng.integers(0, 256, 50, dtype=np.uint8).tobytes() if case % 3 == 2 else b"")
        body = bytes(damaged)
        broken = data[: idat - 4] + len(body).to_bytes(4, "big") + b"IDAT" + body + zlib.crc32(b"IDAT" + body).to_bytes(4, "big") + data[idat + 8 + length :]
        want = cv2.imdecode(np.frombuffer(broken, np.uint8), cv2.IMREAD_COLOR)
        if want is None:
            with pytest.raises(InputError):
                decode_image(broken)
        else:
            np.testing.assert_array_equal(decode_image(broken), want)
    assert not any(t.name == "fastseg-png-inflate-first" for t in threading.enumerate())


@pytest.mark.parametrize("extra", ["three more photos", "one row 4,000 times"])
def test_a_stream_that_inflates_past_the_image_is_declined_within_its_memory(extra: str, splits: list[bool]) -> None:
    """A crafted stream that goes on past the image's rows: three more photos (both halves
    inflate more than the image) or one row repeated (the second half inflates 20 images from
    a third of the stream). The split declines without inflating past the image (a limit of
    0 means none to zlib: the first half once went on unfiltering rows past ``out`` and
    crashed the process, the second once held it all), and the image decodes as OpenCV decodes
    it (libpng: "too much image data")."""
    import tracemalloc

    height, width = 200, 300
    size = height * (3 * width + 1)

    def rows(image: np.ndarray) -> bytes:
        return b"".join(b"\x01" + _sub(row) for row in image)

    more = [_photo(height, width, seed) for seed in (6, 7, 8)] if extra == "three more photos" else [np.repeat(_photo(1, width, 9), 20 * height, 0)]
    data = _png_from_stream(width, height, zlib.compress(rows(_photo(height, width, 5)) + b"".join(rows(m) for m in more), 1))
    tracemalloc.start()
    try:
        got = decode_png(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert splits == [False]
    assert peak < 8 * size  # the image, the split's scratch, the pipeline's chunks: not the 20 images the stream holds
    want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert want is not None
    assert got is None or np.array_equal(got, want)
    np.testing.assert_array_equal(decode_image(data), want)
    assert not any(t.name == "fastseg-png-inflate-first" for t in threading.enumerate())


def _sub(row: np.ndarray) -> bytes:
    """One row (BGR) as PNG's Sub filter stores it (RGB, minus the pixel to the left)."""
    rgb = row[:, ::-1].astype(np.int16).reshape(-1)
    left = np.concatenate([np.zeros(3, np.int16), rgb[:-3]])
    return bytes(((rgb - left) % 256).astype(np.uint8).tobytes())


def _png_from_stream(width: int, height: int, stream: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
