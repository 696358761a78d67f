"""One PNG's zlib stream inflated on two threads at once, for ``png_decode``.

A deflate stream is one chain, but its blocks start fresh Huffman codes: given where a block
in the middle starts, the second half inflates on its own, except for the bytes it copies from
the 32 KiB before that point, which only the first half knows. So:

1. A helper thread starts inflating the stream at once, unfiltering each band of rows as it
   completes (as ``png_decode``'s pipeline does, on one thread).
2. This thread finds a block header past the middle (``find_dynamic_block``, ~0.3 ms), tells
   the helper to stop there, and inflates the rest with a stand-in window whose byte ``i`` is
   ``i & 255``. The helper, once done, inflates the first 128 KiB of that rest again with
   windows ``i >> 8`` and ``(i & 255) ^ 0x55``: a byte that differs between the first and the
   last came from the window, and the first two spell its position there, so it is copied
   from the helper's last 32 KiB.
3. The Adler-32 of the whole, from the two halves', must equal the stream's; then this thread
   unfilters the rest.

Anything unexpected (no block found, window copies reaching past the first 96 KiB, a length
or checksum that does not add up, an error on either thread) returns False, and
``png_decode`` decodes the image its usual way, which reports a corrupt file as before. Only
for images whose rows 1-3 use None, Sub or Up (OpenCV writes every row Sub): those unfilter in
~2.5 ms at 2048x1024 (AMD EPYC Zen 5 with avx2 avx512f avx512_bf16 avx512_vnni), so a second
inflate pays. Paeth rows (most other photo PNGs; ~3.4 ms since session 17) would gain too, but
their streams (libpng's, at its best compression) keep copying window bytes far past the
fill-in's 96 KiB: in the four Cityscapes frames the last one sat 1.0-1.9 MB into a 3.2-3.5 MB
second half, so the split declines and they take the pipeline.

Memory is most of the cost left: the second half's output and the moved stream share one
numpy buffer (numpy asks the kernel for huge pages from 4 MiB, so it faults in a few 2 MiB
pages). Kept as isal's bytes chunks instead, they came from malloc's 4 KiB pages, which it
returns to the system after large frees (OpenCV's, libspng's): ~1,800 page faults a decode
then cancelled the gain. The first half streams through one band buffer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

SPLIT_MIN_BYTES = 1 << 21
"""Inflated size from which the stream is split (~840x840 RGB). Split / pipelined decode time
on Zen 5, OpenCV-written PNGs (the Cityscapes frame resized, and a synthetic photo), one
process, alternating: 480x640 1.08-1.15, 768x1024 0.93-0.99, 1024x1024 0.90-0.96, 1024x1536
0.85-0.93, 1024x2048 0.81-0.90."""
SPLIT_MAX_BYTES = 1 << 25
"""Inflated size up to which the stream is split (~3300x3300 RGB). While it decodes, the split
holds a scratch buffer the image's size plus half the stream, on top of the image itself (a
service's decode budget reserves the image; the scratch is bounded per CPU thread,
docs/serving.md). Above this, the pipeline decodes, holding the chunks not yet unfiltered."""
_WINDOW = 1 << 15
_HEAD = 1 << 17
_PIECE = 1 << 16
_STAND_INS = tuple(((np.arange(_WINDOW) >> shift) & 255 ^ flip).astype(np.uint8).tobytes() for shift, flip in ((0, 0), (8, 0), (0, 0x55)))
"""The stand-in windows: byte i is i & 255, i >> 8, (i & 255) ^ 0x55."""

Unfilter = Callable[[npt.NDArray[np.uint8], int, int, int, npt.NDArray[np.uint8], npt.NDArray[np.uint8], bool], bool]


@dataclass
class _Split:
    """Between the two threads: where the first half ends (its byte count, once known; -1 to
    give up) and the second half moved to bit 0, then what the helper reports back."""

    decided: threading.Event = field(default_factory=threading.Event)
    stop: int = -1
    second: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    band: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    length: int = 0
    adler: int = 1
    rows: int = 0
    rest: list[bytes] = field(default_factory=list)
    window: bytes = b""
    stand_ins: tuple[bytes, bytes] = (b"", b"")
    ok: bool = False


def decode_split(stream: list[memoryview], height: int, width: int, unfilter: Unfilter, out: npt.NDArray[np.uint8],
                 work: npt.NDArray[np.uint8]) -> bool:
    """Inflate the zlib ``stream`` (the IDAT bodies) of an 8-bit RGB PNG in two halves on two
    threads and unfilter it into ``out`` (BGR); False where that does not apply or does not
    add up (``out`` is then partly written, and the caller decodes the usual way)."""
    from isal import isal_zlib

    row_bytes = 3 * width + 1
    size = height * row_bytes
    total = sum(len(part) for part in stream)
    start = b"".join(_pieces(stream, 1 << 14))[: 1 << 14]
    if total < 64 or (start[0] & 0x0F) != 8 or start[1] & 0x20 or not _rows_are_simple(isal_zlib, start, row_bytes, height):
        return False
    middle = 2 + (total - 2) // 2
    split = _Split()
    # one buffer (numpy asks for huge pages from 4 MiB: a few faults, where malloc's 4 KiB pages
    # cost ~1,800 a decode once it had trimmed them): the second half's output from the front,
    # the stream from the middle on at the back
    from fastseg._png_kernels import BAND

    band_bytes = BAND * row_bytes
    spill = np.empty(size + total - middle + 2 * band_bytes, np.uint8)  # and both threads' band buffers
    split.band, bands = spill[-band_bytes:], spill[-2 * band_bytes : -band_bytes]
    helper = threading.Thread(target=_first_half, args=(isal_zlib, stream, middle, size, width, unfilter, out, work, split),
                              name="fastseg-png-inflate-first", daemon=True)
    helper.start()
    try:
        found, second, adler_expected = _find_second_half(stream, total, middle, spill[size : size + total - middle])
        if second is not None:  # the first half ends with the byte that holds the split's first bit
            split.stop, split.second = middle + (found + 7) // 8, second
        split.decided.set()
        inflated = None if second is None else _second_half(isal_zlib, second, spill[:size])
    finally:
        split.decided.set()  # never leave the helper waiting
        helper.join()
    if inflated is None or not split.ok or split.length + inflated[0] != size:
        return False
    length, adler_after_head = inflated
    head = spill[: min(_HEAD, length)]
    if not _copy_window_bytes(head, split):
        return False
    adler = _adler32_combine(split.adler, isal_zlib.adler32(head), head.size)
    adler = _adler32_combine(adler, adler_after_head, length - head.size)
    if adler != adler_expected:
        return False
    return unfilter_bands([*split.rest, spill[:length]], split.rows, height, width, unfilter, out, work, bands)


def _find_second_half(stream: list[memoryview], total: int, middle: int, tail: npt.NDArray[np.uint8]
                      ) -> tuple[int, npt.NDArray[np.uint8] | None, int]:
    """The bit past byte ``middle`` where the first block header within an eighth of the stream
    starts, the stream from there moved to bit 0, in ``tail`` (None if there is none), and the
    stream's Adler-32 from its last 4 bytes."""
    from fastseg._deflate_kernels import find_dynamic_block, shift_bits

    at = 0  # one copy, searched, then moved in place
    for piece in _pieces(stream, total, skip=middle):
        tail[at : at + len(piece)] = np.frombuffer(piece, np.uint8)
        at += len(piece)
    adler = int.from_bytes(tail[-4:].tobytes(), "big")
    found = int(find_dynamic_block(tail, 0, 2 * tail.size))
    if found < 0:
        return found, None, adler
    second = tail[: tail.size - found // 8]
    shift_bits(tail, found, second)
    return found, second, adler


def unfilter_bands(held: list[Any], row: int, height: int, width: int, unfilter: Unfilter, out: npt.NDArray[np.uint8],
                   work: npt.NDArray[np.uint8], band: npt.NDArray[np.uint8]) -> bool:
    """Unfilter rows ``row`` to ``height`` from the buffers ``held`` (exactly their bytes), a
    band at a time through ``band`` (``BAND`` rows); False for a bad filter byte."""
    from fastseg._png_kernels import BAND

    row_bytes, at = 3 * width + 1, 0
    while row < height:
        rows = min(BAND, height - row)
        at = gather(held, at, band[: rows * row_bytes])
        if not unfilter(band, row, row + rows, width, out, work, True):
            return False
        row += rows
    return True


def gather(held: list[Any], at: int, into: npt.NDArray[np.uint8]) -> int:
    """Fill ``into`` from the front of ``held`` (the first chunk from byte ``at`` on), dropping
    the chunks used up; returns where the rest starts in what is now ``held[0]``."""
    filled = 0
    while filled < into.size:
        take = min(len(held[0]) - at, into.size - filled)
        into[filled : filled + take] = np.frombuffer(held[0], np.uint8, take, at)
        filled, at = filled + take, at + take
        if at == len(held[0]):
            held.pop(0)
            at = 0
    return at


def _pieces(stream: list[memoryview], stop: int, *, skip: int = 0) -> list[memoryview]:
    """Bytes ``skip`` to ``stop`` of the concatenated ``stream``, as views of at most ``_PIECE``
    bytes (no copy)."""
    pieces, offset = [], 0
    for part in stream:
        begin, end = max(skip - offset, 0), min(stop - offset, len(part))
        for at in range(begin, end, _PIECE):
            pieces.append(part[at : min(at + _PIECE, end)])
        offset += len(part)
        if offset >= stop:
            break
    return pieces


def _rows_are_simple(isal_zlib: Any, start: bytes, row_bytes: int, height: int) -> bool:
    """Whether rows 1-3 (row 0 has nothing above, so writers pick Sub or None there) use None,
    Sub or Up, from a throwaway inflate of the stream's ``start`` (~0.06 ms)."""
    try:
        rows = isal_zlib.decompressobj().decompress(start, 4 * row_bytes)
    except isal_zlib.error:
        return False
    kinds = [rows[r * row_bytes] for r in range(1, min(4, height)) if r * row_bytes < len(rows)]
    return bool(kinds) and max(kinds) <= 2


def _first_half(isal_zlib: Any, stream: list[memoryview], middle: int, size: int, width: int, unfilter: Unfilter,
                out: npt.NDArray[np.uint8], work: npt.NDArray[np.uint8], split: _Split) -> None:
    """The helper's work: inflate ``stream`` up to the split (waiting for it only on reaching
    byte ``middle``), unfiltering each whole band as it arrives; then inflate the second half's
    first ``_HEAD`` bytes against the other two stand-in windows. ``split`` says how far it got."""
    from fastseg._png_kernels import BAND

    row_bytes, band = 3 * width + 1, split.band
    held: list[bytes] = []
    recent: list[bytes] = []  # the last chunks, at least 32 KiB of them: the second half's window
    try:
        inflater, done, adler, rows, at, waiting, offset = isal_zlib.decompressobj(), 0, 1, 0, 0, 0, 0
        for piece in _pieces(stream, sum(len(part) for part in stream)):
            if offset + len(piece) > middle:
                split.decided.wait()
                if split.stop < 0 or offset >= split.stop:
                    break
                piece = piece[: split.stop - offset]
            offset += len(piece)
            pending: Any = piece
            while pending:
                if done >= size:  # more data than the image holds (and a limit of 0 would mean none)
                    return
                chunk = inflater.decompress(pending, size - done)
                done, pending = done + len(chunk), inflater.unconsumed_tail
                if not chunk:
                    continue
                adler = isal_zlib.adler32(chunk, adler)
                held.append(chunk)
                recent.append(chunk)
                while sum(len(c) for c in recent[1:]) >= _WINDOW:
                    recent.pop(0)
                waiting += len(chunk)
                while waiting >= BAND * row_bytes:
                    at = gather(held, at, band)
                    waiting -= BAND * row_bytes
                    if not unfilter(band, rows, rows + BAND, width, out, work, True):
                        return
                    rows += BAND
        if split.stop < 0 or offset != split.stop or inflater.eof or done >= size:  # ended early: no block boundary there
            return
        tail = b"".join(recent)
        split.stand_ins = stand_in_heads(isal_zlib, split.second, size - done)
        split.length, split.adler, split.rows = done, adler, rows
        split.rest = [held[0][at:], *held[1:]] if held else []
        split.window, split.ok = tail[-_WINDOW:], len(tail) >= _WINDOW
    except Exception:  # noqa: BLE001 - isal's error for a stream that is not what it seemed: the usual path decides
        return


def stand_in_heads(isal_zlib: Any, second: npt.NDArray[np.uint8], size: int) -> tuple[bytes, bytes]:
    """The first ``min(_HEAD, size)`` bytes of ``second`` (raw deflate) inflated against the
    second and third stand-in windows (``i >> 8``, ``(i & 255) ^ 0x55``)."""
    head = memoryview(second[: 2 * _HEAD].data)  # enough input for _HEAD bytes, even at no compression
    return (isal_zlib.decompressobj(-15, zdict=_STAND_INS[1]).decompress(head, min(_HEAD, size)),
            isal_zlib.decompressobj(-15, zdict=_STAND_INS[2]).decompress(head, min(_HEAD, size)))


def _second_half(isal_zlib: Any, second: npt.NDArray[np.uint8], spill: npt.NDArray[np.uint8]) -> tuple[int, int] | None:
    """Inflate the stream from the split to its end (raw deflate, the split moved to bit 0)
    against the first stand-in window into ``spill``: its length and the Adler-32 of what
    follows its first ``_HEAD`` bytes (those may yet change); None unless it ends within
    ``spill``."""
    inflater, done, adler, pieces = isal_zlib.decompressobj(-15, zdict=_STAND_INS[0]), 0, 1, memoryview(second.data)
    try:
        for at in range(0, second.size, _PIECE):
            pending: Any = pieces[at : at + _PIECE]
            while pending and not inflater.eof:
                if done >= spill.size:  # more data than the image holds (a limit of 0 would mean none)
                    return None
                chunk = inflater.decompress(pending, spill.size - done)
                spill[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                if done + len(chunk) > _HEAD:
                    adler = isal_zlib.adler32(memoryview(chunk)[max(_HEAD - done, 0) :], adler)
                done, pending = done + len(chunk), inflater.unconsumed_tail
            if inflater.eof:
                break
    except isal_zlib.error:
        return None
    return (done, adler) if inflater.eof and done < spill.size else None


def _copy_window_bytes(head: npt.NDArray[np.uint8], split: _Split) -> bool:
    """Put the first half's bytes where the second half's ``head`` (its first bytes, as
    inflated against stand-in 0) copied from its window; the helper's stand-in inflates say
    which bytes came from it and from where. False where such a byte lies in the last 32 KiB
    of the stretch checked (later copies could carry it anywhere) or the stand-in inflates do
    not line up."""
    high, flipped = (np.frombuffer(stand_in, np.uint8) for stand_in in split.stand_ins)
    if high.size != head.size or flipped.size != head.size:
        return False
    positions = np.flatnonzero(head != flipped)
    if not positions.size:
        return True
    if positions[-1] >= head.size - _WINDOW and head.size == _HEAD:
        return False
    window = np.frombuffer(split.window, np.uint8)
    head[positions] = window[(high[positions].astype(np.intp) << 8) | head[positions]]
    return True


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two buffers one after the other from theirs (zlib's adler32_combine)."""
    base = 65521
    rem = second_length % base
    low = first & 0xFFFF
    high = (rem * low) % base
    low += (second & 0xFFFF) + base - 1
    high += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + base - rem
    return (low % base) | ((high % base) << 16)
