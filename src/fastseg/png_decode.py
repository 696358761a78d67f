"""PNG decoding faster than OpenCV's, with OpenCV's very pixels.

At 1024x2048 (a Cityscapes frame) OpenCV's libpng decode is most of fastseg's pre-processing,
and at bf16 speed that is a fifth of a PP-LiteSeg-T run end to end. Faster paths:

- **8-bit RGB, once numba's kernel is loaded** (``preload``, started by a Segmenter): the IDAT
  stream inflated by isal (ISA-L) on a helper thread while the calling thread unfilters each
  band of 32 rows as it arrives, in SIMD across the band's rows (``_png_kernels.py``), writing
  BGR. Below 256 KiB of pixels, or without isal, libdeflate inflates it whole first. Medians on
  AMD EPYC Zen 5 (avx2 avx512f avx512_bf16 avx512_vnni), 2 cores: the bench's 2048x1024 PNG (OpenCV-written) 12.0 ms
  against OpenCV's 31 (19-20.5 with session 12's row-at-a-time kernel after libdeflate); the
  four Cityscapes frames 7.2-7.4 (8.5-8.8 before session 17's kernel: the inflate, 6.2-7.2
  alone, is now the critical path) against OpenCV's 41-50 (``benchmarks/preprocess_ab.py
  decode`` times every path; docs/engines.md has its table).
- **8-bit RGB from 2 to 32 MiB of pixels whose rows 1-3 are None, Sub or Up** (OpenCV writes every
  row Sub): the stream inflated in two halves on two threads (``png_split``), each half's
  rows unfiltered by the row pass; 10.1-11.7 ms on the bench's PNG against 12.7-13.7 for the
  pipeline (session 14); anything it cannot vouch for falls back to the pipeline.
- **libspng** (imagecodecs) for RGB and RGBA otherwise: about 0.75x OpenCV's time. Both
  release the GIL, so the service's decoding threads and directory read-ahead run in parallel
  (pyspng, measured too, holds it).

Only the PNGs where these agree with OpenCV exactly take them: 8-bit RGB or RGBA (alpha
dropped, as ``cv2.IMREAD_COLOR`` drops it), not interlaced, no ``tRNS`` or ``eXIf`` chunk
(OpenCV turns the first into alpha and applies the second's orientation), and nothing libpng
would refuse (a critical chunk's bad CRC, which libspng decodes through, an unknown critical
chunk, split IDATs). Every other PNG, a file these cannot decode, or an install without
imagecodecs goes to OpenCV, which keeps its own error messages and limits. An 8-bit RGB file
the compiled paths decline goes straight to OpenCV: libspng would decode some of those that
libpng refuses (a stream that stops after the last row without ending); until the kernel is
loaded, and for RGBA, libspng decides, with that one difference.
tests/test_png_decode.py and tests/test_png_split.py check every path against OpenCV, every
PNG filter and damaged streams included; ``benchmarks/fuzz_png.py`` fuzzes the compiled paths
with numba's bounds checks on. Every inflate stops at the image's size.
"""

from __future__ import annotations

import functools
import queue
import threading
import zlib
from collections.abc import Callable
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.png_split import SPLIT_MAX_BYTES as SPLIT_MAX_BYTES  # re-exported: tests and benchmarks set them here
from fastseg.png_split import SPLIT_MIN_BYTES as SPLIT_MIN_BYTES
from fastseg.png_split import decode_split, gather

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TO_BGR = {2: cv2.COLOR_RGB2BGR, 6: cv2.COLOR_RGBA2BGR}
"""IHDR colour type -> the conversion to OpenCV's BGR (2: RGB, 6: RGBA)."""
_CHANNELS = {2: 3, 6: 4}
MAX_PIXELS = 1 << 30
"""OpenCV's default decode limit (``OPENCV_IO_MAX_IMAGE_PIXELS``): larger images go to OpenCV,
which refuses them with its own message."""


def decode_png(data: bytes) -> npt.NDArray[np.uint8] | None:
    """``data`` (a whole PNG file) as BGR uint8 HxWx3, exactly as ``cv2.imdecode(...,
    cv2.IMREAD_COLOR)`` decodes it; None where OpenCV should decode it instead (not a PNG this
    path takes, libspng missing, or a decode error, so OpenCV reports it)."""
    header = _fast_header(data)
    if header is None:
        return None
    width, height, colour = header
    stream = _image_stream(data)
    if stream is None:  # libpng would refuse it: OpenCV decodes or reports it
        return None
    unfilter = ready_unfilter() if colour == 2 else None
    if unfilter is not None:
        from fastseg._png_kernels import work_fits  # loaded with the unfilter

        if work_fits(width, height):  # None: OpenCV decides (libspng decodes some streams libpng refuses)
            return _decode_rgb(stream, width, height, unfilter)
    try:
        from imagecodecs import spng_decode
    except ImportError:
        return None
    try:
        pixels: Any = spng_decode(data)
    except Exception:  # noqa: BLE001 - any libspng failure: OpenCV decodes it and names the problem
        return None
    if pixels.dtype != np.uint8 or pixels.shape != (height, width, _CHANNELS[colour]):
        return None
    return cast("npt.NDArray[np.uint8]", cv2.cvtColor(pixels, _TO_BGR[colour]))


def _fast_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour type) from the IHDR of a PNG this path takes, else None."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour, interlace = data[24], data[25], data[28]
    if depth != 8 or colour not in _TO_BGR or interlace != 0 or not 0 < width * height <= MAX_PIXELS:
        return None
    return width, height, colour


Unfilter = Callable[[npt.NDArray[np.uint8], int, int, int, npt.NDArray[np.uint8], npt.NDArray[np.uint8], bool], bool]
"""``_png_kernels.unfilter_rows``: (raw, start row, stop row, width, out, work) -> False if corrupt."""
_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
_OPENCV_APPLIES = {b"tRNS", b"eXIf"}
"""Chunks OpenCV acts on (transparency becomes alpha, EXIF orientation is applied): OpenCV decodes those files."""


@functools.cache
def compiled_unfilter() -> Unfilter | None:
    """The compiled unfilter (``_png_kernels``; numba imported, the kernel compiled or loaded
    from numba's cache by a first call on a 1x1 image, and the split's block finder with it),
    or None without numba or libdeflate."""
    try:
        import imagecodecs

        from fastseg import _deflate_kernels, _png_kernels
    except ImportError:
        return None
    if not imagecodecs.DEFLATE.available:
        return None
    kernel = cast(Unfilter, _png_kernels.unfilter_rows)
    for row_pass in (False, True):
        kernel(np.zeros(4, np.uint8), 0, 1, 1, np.empty((1, 1, 3), np.uint8), _png_kernels.new_work(1), row_pass)
    scratch = np.zeros(64, np.uint8)  # the split's kernels, typed as png_split calls them (not loaded on its first image)
    _deflate_kernels.find_dynamic_block(scratch, 0, 8)
    _deflate_kernels.shift_bits(scratch, 3, scratch[:63])
    return kernel


def ready_unfilter() -> Unfilter | None:
    """``compiled_unfilter()`` once loaded, else None (never loads: decoding does not wait
    ~1 s for numba; ``preload`` loads it in the background)."""
    return compiled_unfilter() if compiled_unfilter.cache_info().currsize else None


@functools.cache
def preload() -> threading.Thread:
    """Load the compiled unfilter on a background thread, once per process (a Segmenter that
    expects many images starts it); until it is loaded, libspng decodes."""
    thread = threading.Thread(target=compiled_unfilter, name="fastseg-png-preload", daemon=True)
    thread.start()
    return thread


def _image_stream(data: bytes) -> list[memoryview] | None:
    """The zlib stream of ``data`` (its IDAT chunks' bodies), or None where libpng (OpenCV) would not simply
    decode the file (a bad compression or filter method, a critical chunk's bad CRC, which
    libspng would decode through, an unknown critical chunk, IDATs not in one run, a chunk past
    the end) or would change what it decodes (``tRNS``, ``eXIf``)."""
    if data[26] != 0 or data[27] != 0:  # compression and filter methods: 0 is the only one
        return None
    isal_zlib = _isal_zlib()
    crc32 = zlib.crc32 if isal_zlib is None else isal_zlib.crc32  # isal's: ~9x faster, same sums
    view, pos, last = memoryview(data), 8, b""
    idat: list[memoryview] = []
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data) or kind in _OPENCV_APPLIES:
            return None
        if kind in _CRITICAL or not kind[0] & 0x20:  # critical: libpng checks the CRC, or refuses it
            if kind not in _CRITICAL or crc32(view[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
                return None
            if kind == b"IDAT":
                if idat and last != b"IDAT":
                    return None
                idat.append(view[pos + 8 : end - 4])
            elif kind == b"IEND":
                break
        last, pos = kind, end
    return idat or None


def _decode_rgb(stream: list[memoryview], width: int, height: int, unfilter: Unfilter) -> npt.NDArray[np.uint8] | None:
    """An 8-bit RGB PNG's pixels in BGR from its zlib ``stream``, unfiltered by the compiled
    kernel, which writes BGR directly; None (libspng, then OpenCV decide) for too little or too
    much image data, a corrupt stream or a bad filter byte. A large image is inflated by isal on
    a helper thread while this one unfilters the bands already inflated (``_pipelined``);
    otherwise libdeflate inflates it whole first (~2.5x zlib's speed)."""
    from fastseg._png_kernels import new_work

    size = height * (3 * width + 1)
    out, work = np.empty((height, width, 3), np.uint8), new_work(width)
    if size >= PIPELINE_MIN_BYTES and _isal_zlib() is not None:
        if SPLIT_MIN_BYTES <= size <= SPLIT_MAX_BYTES and decode_split(stream, height, width, unfilter, out, work):
            return out
        return out if _pipelined(stream, height, width, unfilter, out, work) else None
    try:
        from imagecodecs import DeflateError, deflate_decode
    except ImportError:
        return None
    raw = np.empty(size, np.uint8)
    try:
        inflated = deflate_decode(b"".join(stream), out=cast(Any, raw))  # any writable buffer
    except DeflateError:
        return None
    if len(inflated) != size:
        return None
    return out if unfilter(raw, 0, height, width, out, work, True) else None


PIPELINE_MIN_BYTES = 1 << 18
"""Inflated size from which inflating and unfiltering overlap on two threads (~300x290 RGB).
Measured on Zen 5 (OpenCV-written PNGs): even at 240x320 the two paths tie (0.71 against 0.74
ms), 480x640 takes 2.1 ms against 2.9 whole, 1024x2048 12 against 23."""
_PIECE = 1 << 16
"""Compressed bytes inflated at a time: ~30 rows of a 2048-wide photo, about one band."""
_MAX_CHUNK = 1 << 20
"""Most bytes one inflate call may return: a small piece of a crafted stream cannot inflate into
more memory than this at once."""


def _isal_zlib() -> Any:
    """isal's zlib module (ISA-L's inflate, as fast as libdeflate here, and it streams), or None
    where isal is not installed."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def _pipelined(stream: list[memoryview], height: int, width: int, unfilter: Unfilter, out: npt.NDArray[np.uint8],
               work: npt.NDArray[np.uint8]) -> bool:
    """Inflate ``stream`` on a helper thread while this thread unfilters each band of rows as
    soon as it has arrived: decoding takes about the inflate's time, not inflate plus unfilter
    (both release the GIL). The helper only inflates (no copy, no large buffer to fault in: its
    work is the critical path); this thread gathers its chunks into one band's buffer, which
    stays in cache. False for a corrupt stream, the wrong amount of data or a bad filter byte;
    the helper is stopped and joined either way."""
    from fastseg._png_kernels import BAND

    chunks: queue.SimpleQueue[bytes | bool] = queue.SimpleQueue()
    stop = threading.Event()
    helper = threading.Thread(target=_inflate_pieces, args=(stream, height * (3 * width + 1), chunks, stop),
                              name="fastseg-png-inflate", daemon=True)
    helper.start()
    row_bytes, undone = 3 * width + 1, 0
    band = np.empty(BAND * row_bytes, np.uint8)
    held: list[bytes] = []
    held_bytes, at = 0, 0  # bytes held, and how far into held[0] they start
    try:
        while True:
            chunk = chunks.get()
            if chunk is False:
                return False
            if isinstance(chunk, bytes):
                held.append(chunk)
                held_bytes += len(chunk)
            while undone < height and (chunk is True or held_bytes >= BAND * row_bytes):
                rows = min(BAND, height - undone)
                at = gather(held, at, band[: rows * row_bytes])
                held_bytes -= rows * row_bytes
                if not unfilter(band, undone, undone + rows, width, out, work, False):
                    return False
                undone += rows
            if chunk is True:
                return True
    finally:
        stop.set()
        helper.join()


def _inflate_pieces(stream: list[memoryview], size: int, chunks: queue.SimpleQueue[bytes | bool],
                    stop: threading.Event) -> None:
    """The helper's work: inflate ``stream`` a piece at a time, putting each chunk of output;
    then True once the stream has ended at exactly ``size`` bytes, False for anything else
    (corrupt, too little or too much data) or when told to ``stop``."""
    isal_zlib, done, whole = _isal_zlib(), 0, False
    try:
        inflater = isal_zlib.decompressobj()
        for body in stream:
            for at in range(0, len(body), _PIECE):
                pending: Any = body[at : at + _PIECE]
                while pending:
                    if stop.is_set():  # the calling thread has given up on this image
                        return
                    chunk = inflater.decompress(pending, min(size - done + 1, _MAX_CHUNK))  # one byte over: too much
                    done, pending = done + len(chunk), inflater.unconsumed_tail
                    if done > size:
                        return
                    if chunk:
                        chunks.put(chunk)
        whole = bool(inflater.eof) and done == size
    except Exception:  # noqa: BLE001 - isal's error for a corrupt stream: another decoder reports it
        pass
    finally:  # always the last word, so the calling thread never waits for nothing
        chunks.put(whole)
