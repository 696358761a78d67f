"""PNG unfiltering 32 rows at a time in SIMD (numba, ``fastseg.jit``), for ``png_decode``.

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

Two things decide its speed (session 17, Cityscapes frame, 990 Paeth rows, AMD EPYC Zen 5 with
avx2 avx512f avx512_bf16 avx512_vnni, one core: 7.5 ms ->
3.2-3.5): the diagonal computes in uint8 (numba widens int16 arithmetic to 64 bits, so LLVM
had filled a 512-bit vector with 8 lanes; 3.5 -> 0.8 ms), and rows go in and out of the skewed
buffer as 32-bit words, four pixels per three loads or stores (2.3 -> 1.2 ms in, 1.4 -> ~1
out).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.jit import kernel

BAND = 32
"""Rows undone together; with lane 0 (the row above) 33 lanes of 4 bytes, and the 128 bytes of
lanes 1-32 a step: four 32-byte vectors, no remainder."""
_LANES = BAND + 1


def _work_shape(width: int) -> tuple[int, int]:
    return width + _LANES + 1, 4 * _LANES


def new_work(width: int) -> npt.NDArray[np.uint8]:
    """The zeroed work buffer ``unfilter_rows`` needs for an image ``width`` pixels wide (one per
    image: it carries the last row of one band into the next call)."""
    return np.zeros(_work_shape(width), np.uint8)


def work_fits(width: int, height: int) -> bool:
    """Whether ``new_work(width)`` (132 bytes per column, all of it touched by every band) is at
    most the image's own size, or 4 MiB: a short, very wide image would cost far more than its
    pixels (a 4,000,000x1 PNG, 11 KB of file, took 512 MiB and 1.4 s), so libspng decodes those."""
    rows, row_bytes = _work_shape(width)
    return rows * row_bytes <= max(height * (3 * width + 1), 1 << 22)


@kernel
def unfilter_rows(raw: Any, start: int, stop: int, width: int, out: Any, work: Any, row_pass: bool) -> bool:
    """Undo the filters of rows ``start`` to ``stop``, which ``raw`` holds from its first byte
    (uint8, C-contiguous, rows of 1 + 3 x width bytes; left as it is), and write their pixels to
    ``out`` (uint8 [height, width, 3], C-contiguous, BGR). Calls go in row order with ``work``
    from ``new_work``, each starting where the last stopped, at a multiple of ``BAND``. With
    ``row_pass``, a band whose rows all use None, Sub or Up is undone a row at a time
    (``_unfilter_sub_up_none``). False for a filter byte over 4 (a corrupt file: the caller lets
    another decoder report it)."""
    stride, full, groups = 3 * width, 4 * _LANES, width // 4
    pixels = work.view(np.uint32)  # work[step, 4 lane : 4 lane + 4] as one word: R | G << 8 | B << 16
    kinds = np.zeros(full, np.uint8)
    flat = out.reshape(-1)  # out's bytes
    for top in range(start, stop, BAND):
        rows = min(BAND, stop - top)
        first = (top - start) * (stride + 1)
        if row_pass and _only_sub_up_none(raw, first, rows, stride):
            _unfilter_sub_up_none(raw, first, top, rows, width, out)
            continue
        if top == 0:
            pixels[:, 0] = 0
        else:  # lane 0: the row above the band, undone (out is BGR, lanes RGB)
            for x in range(width):
                above = out[top - 1, x]
                pixels[x + 1, 0] = np.uint32(above[2]) | np.uint32(above[1]) << 8 | np.uint32(above[0]) << 16
        for lane in range(1, _LANES):
            kind = 0
            if lane <= rows:
                row = first + (lane - 1) * (stride + 1)
                kind = raw[row]
                if kind > 4:
                    return False
                _skew_row_in(raw, row + 1, width, groups, pixels, lane)
            kinds[4 * lane : 4 * lane + 4] = kind  # a lane past the band's rows adds nothing: its values are never read
        for step in range(2, width + _LANES):  # one anti-diagonal a step; branch-free and in uint8 throughout
            above_left, left, here = work[step - 2], work[step - 1], work[step]
            for q in range(4, full):
                a, b, c = left[q], left[q - 4], above_left[q - 4]
                pa = np.uint8(max(b, c) - min(b, c))
                pb = np.uint8(max(a, c) - min(a, c))
                total = np.uint8(pa + pb)
                pc = (np.uint8(255) if total < pa else total) if (a >= c) == (b >= c) else np.uint8(max(pa, pb) - min(pa, pb))
                near = b if pb <= pc else c
                paeth = a if (pa <= pb and pa <= pc) else near
                k = kinds[q]
                average = np.uint8((np.uint16(a) + np.uint16(b)) >> 1)
                guess = paeth if k == 4 else (average if k == 3 else (b if k == 2 else (a if k == 1 else np.uint8(0))))
                here[q] = np.uint8(here[q] + guess)
        for lane in range(1, rows + 1):  # each row out in BGR, four pixels as three 32-bit stores
            # (inline: as a helper function, like _skew_row_in, it cost 1 ms more an image)
            row = (top + lane - 1) * stride
            words = flat[row : row + 12 * groups].view(np.uint32)
            for g in range(groups):
                step = 4 * g + lane + 1
                p0, p1 = _rgb_to_bgr(pixels[step, lane]), _rgb_to_bgr(pixels[step + 1, lane])
                p2, p3 = _rgb_to_bgr(pixels[step + 2, lane]), _rgb_to_bgr(pixels[step + 3, lane])
                words[3 * g] = p0 | p1 << 24
                words[3 * g + 1] = p1 >> 8 | p2 << 16
                words[3 * g + 2] = p2 >> 16 | p3 << 8
            for x in range(4 * groups, width):
                value, at = pixels[x + lane + 1, lane], row + 3 * x
                flat[at], flat[at + 1], flat[at + 2] = np.uint8(value >> 16), np.uint8(value >> 8), np.uint8(value)
    return True


@kernel
def _skew_row_in(raw: Any, at: int, width: int, groups: int, pixels: Any, lane: int) -> None:
    """Row ``lane`` of a band (its RGB bytes from ``raw[at]``) into the skewed work buffer,
    pixel x at ``pixels[x + lane + 1, lane]``: four pixels from three 32-bit loads."""
    words = raw[at : at + 12 * groups].view(np.uint32)
    for g in range(groups):
        w0, w1, w2 = words[3 * g], words[3 * g + 1], words[3 * g + 2]
        step = 4 * g + lane + 1
        pixels[step, lane] = w0 & 0xFFFFFF
        pixels[step + 1, lane] = w0 >> 24 | (w1 & 0xFFFF) << 8
        pixels[step + 2, lane] = w1 >> 16 | (w2 & 0xFF) << 16
        pixels[step + 3, lane] = w2 >> 8
    for x in range(4 * groups, width):
        src = at + 3 * x
        pixels[x + lane + 1, lane] = np.uint32(raw[src]) | np.uint32(raw[src + 1]) << 8 | np.uint32(raw[src + 2]) << 16


@kernel
def _rgb_to_bgr(pixel: Any) -> Any:
    """A work-buffer pixel word (R | G << 8 | B << 16) as B | G << 8 | R << 16."""
    return (pixel >> 16 & 0xFF) | (pixel & 0xFF00) | (pixel & 0xFF) << 16


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
    chains: ~2.5 ms for 2048x1024 against ~3.6 ms for the diagonal loop (the CPU above), which pays only
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
