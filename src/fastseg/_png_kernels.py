"""PNG unfiltering 31 rows at a time in SIMD (numba, ``fastseg.jit``), for ``png_decode``.

An 8-bit RGB PNG's inflated IDAT holds each row as a filter byte and 3 x width bytes; the
filters (None, Sub, Up, Average, Paeth) undo against the pixel to the left (a), above (b) and
above-left (c). Within a row each pixel waits for the one to its left, so a row at a time is a
chain of scalar steps (~13 ms for a 2048x1024 photo, mostly Paeth). Across rows the pixels of
one anti-diagonal are independent: pixel (row r, x) needs (r, x-1), (r-1, x) and (r-1, x-1),
all on earlier diagonals. So a band's rows are laid out skewed in a work buffer, row l shifted
right by l pixels (``work[x + l + 1, 4 l + channel]``, a fourth byte of padding per pixel), and
one step undoes one diagonal: 128 contiguous bytes whose a, b and c sit in the two steps before
it, a loop LLVM vectorises. Lane 0 holds the row above the band (zeros above the first row),
and pixels left of a row stay zero, as the filters assume. Each finished row is written to the
output in BGR order, OpenCV's. Imported only by ``png_decode.compiled_unfilter()``: importing
this module imports numba.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.jit import kernel

BAND = 31
"""Rows undone together; with lane 0 (the row above) 32 lanes of 4 bytes: 128 bytes a step."""
_LANES = BAND + 1


def _work_shape(width: int) -> tuple[int, int]:
    return width + _LANES + 1, 4 * _LANES


def new_work(width: int) -> npt.NDArray[np.uint8]:
    """The zeroed work buffer ``unfilter_rows`` needs for an image ``width`` pixels wide (one per
    image: it carries the last row of one band into the next call)."""
    return np.zeros(_work_shape(width), np.uint8)


def work_fits(width: int, height: int) -> bool:
    """Whether ``new_work(width)`` (128 bytes per column, all of it touched by every band) is at
    most the image's own size, or 4 MiB: a short, very wide image would cost far more than its
    pixels (a 4,000,000x1 PNG, 11 KB of file, took 512 MiB and 1.4 s), so libspng decodes those."""
    rows, row_bytes = _work_shape(width)
    return rows * row_bytes <= max(height * (3 * width + 1), 1 << 22)


@kernel
def unfilter_rows(raw: Any, start: int, stop: int, width: int, out: Any, work: Any, row_pass: bool) -> bool:
    """Undo the filters of rows ``start`` to ``stop``, which ``raw`` holds from its first byte
    (uint8, rows of 1 + 3 x width bytes; left as it is), and write their pixels to ``out``
    (uint8 [height, width, 3], BGR). Calls go in row order with ``work`` from ``new_work``,
    each starting where the last stopped, at a multiple of ``BAND``. With ``row_pass``, a band
    whose rows all use None, Sub or Up is undone a row at a time (``_unfilter_sub_up_none``).
    False for a filter byte over 4 (a corrupt file: the caller lets another decoder report it)."""
    stride, full = 3 * width, 4 * _LANES
    m_paeth, m_avg = np.zeros(full, np.int16), np.zeros(full, np.int16)
    m_up, m_sub = np.zeros(full, np.int16), np.zeros(full, np.int16)
    for top in range(start, stop, BAND):
        rows = min(BAND, stop - top)
        first = (top - start) * (stride + 1)
        if row_pass and _only_sub_up_none(raw, first, rows, stride):
            _unfilter_sub_up_none(raw, first, top, rows, width, out)
            continue
        if top == 0:
            work[:, 0:4] = 0
        else:  # lane 0: the row above the band, undone (out is BGR, lanes RGB)
            for x in range(width):
                for ch in range(3):
                    work[x + 1, ch] = out[top - 1, x, 2 - ch]
        for lane in range(1, _LANES):
            kind = 0
            if lane <= rows:
                row = (top - start + lane - 1) * (stride + 1)
                kind = raw[row]
                if kind > 4:
                    return False
                for x in range(width):
                    at, src = x + lane + 1, row + 1 + 3 * x
                    work[at, 4 * lane] = raw[src]
                    work[at, 4 * lane + 1] = raw[src + 1]
                    work[at, 4 * lane + 2] = raw[src + 2]
            for ch in range(4):  # a lane past the band's rows adds nothing: its values are never read
                q = 4 * lane + ch
                m_paeth[q], m_avg[q] = -np.int16(kind == 4), -np.int16(kind == 3)
                m_up[q], m_sub[q] = -np.int16(kind == 2), -np.int16(kind == 1)
        for step in range(2, width + _LANES):
            left, above_left, here = work[step - 1], work[step - 2], work[step]
            for q in range(4, full):  # branch-free, so LLVM vectorises it
                a, b, c = np.int16(left[q]), np.int16(left[q - 4]), np.int16(above_left[q - 4])
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - c - c)
                near = c ^ ((b ^ c) & -np.int16(pb <= pc))  # PNG's Paeth: a, else b, else c
                paeth = near ^ ((a ^ near) & -np.int16(pa <= min(pb, pc)))
                guess = (paeth & m_paeth[q]) | (((a + b) >> 1) & m_avg[q]) | (b & m_up[q]) | (a & m_sub[q])
                here[q] = np.uint8((here[q] + guess) & 255)
        for lane in range(1, rows + 1):
            r = top + lane - 1
            for x in range(width):
                at = x + lane + 1
                out[r, x, 0] = work[at, 4 * lane + 2]
                out[r, x, 1] = work[at, 4 * lane + 1]
                out[r, x, 2] = work[at, 4 * lane]
    return True


@kernel
def _only_sub_up_none(raw: Any, first: int, rows: int, stride: int) -> bool:
    """Whether the ``rows`` rows from byte ``first`` all use None, Sub or Up (OpenCV writes
    every row Sub): those need no diagonal, only the pixel to the left or the one above."""
    for lane in range(rows):
        if raw[first + lane * (stride + 1)] > 2:
            return False
    return True


@kernel
def _unfilter_sub_up_none(raw: Any, first: int, top: int, rows: int, width: int, out: Any) -> None:
    """Rows ``top`` to ``top + rows`` (None, Sub or Up, from byte ``first`` of ``raw``) a row at a
    time, into ``out`` as BGR. Sub carries the left pixel in registers, three independent byte
    chains: ~2.4 ms for 2048x1024 against ~7.5 ms for the diagonal loop, which pays only
    where Average or Paeth rows need the pixel above-left. Not for the one-inflate pipeline:
    with its unfilter this fast, isal's inflate on the helper thread ran slower (decoding
    2048x1024 in 12.0-12.7 ms against 10.5-11.4; cause not isolated), so only the two-inflate
    split and the whole path use it."""
    stride = 3 * width
    for lane in range(rows):
        r, at = top + lane, first + lane * (stride + 1)
        kind, src = raw[at], at + 1
        if kind == 1:
            red, green, blue = np.uint8(0), np.uint8(0), np.uint8(0)
            for x in range(width):
                red, green, blue = np.uint8(red + raw[src]), np.uint8(green + raw[src + 1]), np.uint8(blue + raw[src + 2])
                out[r, x, 0], out[r, x, 1], out[r, x, 2] = blue, green, red
                src += 3
        elif kind == 2 and r > 0:
            for x in range(width):
                out[r, x, 0] = np.uint8(raw[src + 2] + out[r - 1, x, 0])
                out[r, x, 1] = np.uint8(raw[src + 1] + out[r - 1, x, 1])
                out[r, x, 2] = np.uint8(raw[src] + out[r - 1, x, 2])
                src += 3
        else:  # None, or Up on the first row (nothing above: zeros)
            for x in range(width):
                out[r, x, 0], out[r, x, 1], out[r, x, 2] = raw[src + 2], raw[src + 1], raw[src]
                src += 3
