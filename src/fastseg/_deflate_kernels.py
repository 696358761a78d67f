"""Finding a deflate block in the middle of a stream (numba, ``fastseg.jit``), for ``png_split``.

A deflate stream is a chain of blocks whose boundaries sit at arbitrary bit positions and are
recorded nowhere. ``find_dynamic_block`` tries each bit position in turn for the header of a
block with its own Huffman codes (type 2, the kind zlib writes for image data) and keeps the
first whose header is what zlib's inflate would accept: the code-length code complete, the
code lengths decoding to exactly HLIT + HDIST entries, end-of-block present, both codes
complete (or a single one-bit code, the one incomplete kind zlib allows). Random bits pass that
rarely; the caller then inflates from the candidate, which rejects the rest, and checks the
Adler-32 of the whole output. Imported only by ``png_split``: importing this module imports numba.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastseg.jit import kernel

_ORDER = np.array([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15], np.int64)
"""The order in which a dynamic header lists the code-length code's lengths (RFC 1951, 3.2.7)."""


@kernel
def _bits(data: Any, at: int, count: int) -> int:
    """``count`` (<= 24) bits of ``data`` from bit ``at``, least significant first; the caller
    keeps ``at // 8 + 3`` inside ``data``."""
    byte = at >> 3
    word = np.int64(data[byte]) | (np.int64(data[byte + 1]) << 8) | (np.int64(data[byte + 2]) << 16) | (np.int64(data[byte + 3]) << 24)
    return int((word >> (at & 7)) & ((1 << count) - 1))


@kernel
def _code_is_valid(lengths: Any, first: int, count: int, longest: int, single_allowed: bool) -> bool:
    """Whether lengths[first:first + count] form a prefix code zlib accepts: complete, or (where
    ``single_allowed``) one code of one bit, or none at all."""
    counts = np.zeros(16, np.int64)
    for i in range(first, first + count):
        counts[lengths[i]] += 1
    left, used, top = 1, 0, 0
    for length in range(1, longest + 1):
        left = (left << 1) - counts[length]
        if left < 0:
            return False  # over-subscribed
        used += counts[length]
        if counts[length]:
            top = length
    if left == 0:
        return True
    return single_allowed and (used == 0 or (used == 1 and top == 1))


@kernel
def _header_end(data: Any, at: int, limit: int) -> int:
    """The bit after a valid dynamic block header starting at bit ``at`` (BFINAL 0), or -1."""
    if _bits(data, at, 3) != 4:  # BFINAL 0, BTYPE 2 (bits 0, 0 then 1)
        return -1
    hlit, hdist, hclen = _bits(data, at + 3, 5) + 257, _bits(data, at + 8, 5) + 1, _bits(data, at + 13, 4) + 4
    if hlit > 286 or hdist > 30:
        return -1
    pos = at + 17
    code_lengths = np.zeros(19, np.int64)
    for i in range(hclen):
        code_lengths[_ORDER[i]] = _bits(data, pos, 3)
        pos += 3
    if not _code_is_valid(code_lengths, 0, 19, 7, False):
        return -1
    counts, symbols = np.zeros(8, np.int64), np.zeros(19, np.int64)
    for symbol in range(19):
        counts[code_lengths[symbol]] += 1
    offsets = np.zeros(9, np.int64)
    for length in range(1, 8):
        offsets[length + 1] = offsets[length] + counts[length]
    for symbol in range(19):
        if code_lengths[symbol]:
            symbols[offsets[code_lengths[symbol]]] = symbol
            offsets[code_lengths[symbol]] += 1
    lengths = np.zeros(hlit + hdist, np.int64)
    filled = 0
    while filled < hlit + hdist:
        if pos + 32 > limit:
            return -1
        code, first, index, symbol = 0, 0, 0, -1
        for length in range(1, 8):  # canonical decoding, a bit at a time (as zlib's puff does)
            code |= _bits(data, pos, 1)
            pos += 1
            if code - counts[length] < first:
                symbol = symbols[index + code - first]
                break
            index += counts[length]
            first = (first + counts[length]) << 1
            code <<= 1
        if symbol < 0:
            return -1
        if symbol < 16:
            lengths[filled] = symbol
            filled += 1
            continue
        if symbol == 16:
            if filled == 0:
                return -1
            value, repeat = lengths[filled - 1], 3 + _bits(data, pos, 2)
            pos += 2
        elif symbol == 17:
            value, repeat = 0, 3 + _bits(data, pos, 3)
            pos += 3
        else:
            value, repeat = 0, 11 + _bits(data, pos, 7)
            pos += 7
        if filled + repeat > hlit + hdist:
            return -1
        for _ in range(repeat):
            lengths[filled] = value
            filled += 1
    if lengths[256] == 0:
        return -1
    if not _code_is_valid(lengths, 0, hlit, 15, True) or not _code_is_valid(lengths, hlit, hdist, 15, True):
        return -1
    return pos


@kernel
def find_dynamic_block(data: Any, start: int, stop: int) -> int:
    """The first bit from ``start`` (below ``stop``) of ``data`` (uint8) where a non-final
    dynamic-Huffman deflate block header passes ``_header_end``; -1 if none does."""
    limit = 8 * (data.size - 4)
    for at in range(start, min(stop, limit - 64)):
        if _bits(data, at, 3) != 4 or _bits(data, at + 3, 5) > 29 or _bits(data, at + 8, 5) > 29:
            continue
        kraft, fields = 0, _bits(data, at + 13, 4) + 4  # the code-length code must be complete
        for i in range(fields):
            length = _bits(data, at + 17 + 3 * i, 3)
            if length:
                kraft += 1 << (7 - length)
        if kraft == 128 and _header_end(data, at, limit) >= 0:
            return at
    return -1


@kernel
def shift_bits(data: Any, first_bit: int, out: Any) -> None:
    """``out[i]`` = the 8 bits of ``data`` from bit ``first_bit + 8 i`` (least significant
    first), so a block that starts mid-byte can be inflated from a whole byte; ``out`` holds
    ``data.size - first_bit // 8`` bytes, the last padded with zeros, and may be ``data``'s own
    front (in place: each 64 KiB goes through a small buffer; 0.4 ms for 1.2 MB, against 0.9
    byte by byte in place)."""
    byte, shift = first_bit >> 3, np.int32(first_bit & 7)
    back = np.int32(8) - shift
    n = out.size
    buffer = np.empty(min(n, 1 << 16), np.uint8)
    for start in range(0, n, buffer.size):
        m = min(buffer.size, n - start)
        whole = m if byte + start + m < data.size else m - 1  # the stream's last byte has nothing after it
        source = data[byte + start : byte + start + whole + 1]
        for i in range(whole):
            buffer[i] = np.uint8((np.int32(source[i]) >> shift) | (np.int32(source[i + 1]) << back))
        if whole < m:
            buffer[whole] = np.uint8(np.int32(data[byte + start + whole]) >> shift)
        out[start : start + m] = buffer[:m]
