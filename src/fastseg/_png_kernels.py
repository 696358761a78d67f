"""PNG unfiltering as one numba loop per row (``fastseg.jit``), for ``png_decode``.

An 8-bit RGB PNG's inflated IDAT holds each row as a filter byte and 3 x width bytes; the
filters (None, Sub, Up, Average, Paeth) undo against the pixel to the left (a), above (b) and
above-left (c). Sub, Average and Paeth chain each byte to the one three to the left, so the
loops keep the three channels' a and c in registers (three independent chains the CPU runs
side by side) and pick Paeth's predictor branch-free: photos make its branches
unpredictable. Each finished row is written to the output in BGR order, OpenCV's. Imported
only by ``png_decode.compiled_unfilter()``: importing this module imports numba.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from fastseg.jit import kernel


@numba.njit(inline="always")
def _paeth(a: Any, b: Any, c: Any) -> Any:
    # PNG's predictor: a if |b-c| <= min(|a-c|, |a+b-2c|), else b if |a-c| <= |a+b-2c|, else c
    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - c - c)
    nearer = b if pb <= pc else c
    return a if pa <= (pb if pb <= pc else pc) else nearer


@kernel
def unfilter_rgb_to_bgr(raw: Any, height: int, width: int, out: Any) -> bool:
    """Undo the filters of ``raw`` (uint8, height x (1 + 3 x width), modified in place) and
    write the pixels to ``out`` (uint8 [height, width, 3], BGR). False for a filter byte
    over 4 (a corrupt file: the caller lets another decoder report it)."""
    stride = 3 * width
    for r in range(height):
        row = r * (stride + 1) + 1
        up = row - stride - 1  # the row above; the first row's filters see zeros there
        kind = raw[row - 1]
        if kind > 4:
            return False
        if kind == 1 or (kind == 4 and r == 0):  # Paeth over zeros predicts a: Sub
            a0, a1, a2 = 0, 0, 0
            for x in range(width):
                i = row + 3 * x
                a0, a1, a2 = (raw[i] + a0) & 255, (raw[i + 1] + a1) & 255, (raw[i + 2] + a2) & 255
                raw[i], raw[i + 1], raw[i + 2] = a0, a1, a2
        elif kind == 2 and r > 0:
            for k in range(stride):
                raw[row + k] = (raw[row + k] + raw[up + k]) & 255
        elif kind == 3:
            a0, a1, a2 = 0, 0, 0
            for x in range(width):
                i, j = row + 3 * x, up + 3 * x
                b0, b1, b2 = (np.int64(raw[j]), np.int64(raw[j + 1]), np.int64(raw[j + 2])) if r > 0 else (0, 0, 0)
                a0 = (raw[i] + ((a0 + b0) >> 1)) & 255
                a1 = (raw[i + 1] + ((a1 + b1) >> 1)) & 255
                a2 = (raw[i + 2] + ((a2 + b2) >> 1)) & 255
                raw[i], raw[i + 1], raw[i + 2] = a0, a1, a2
        elif kind == 4:
            a0, a1, a2 = 0, 0, 0
            c0, c1, c2 = np.int64(0), np.int64(0), np.int64(0)
            for x in range(width):
                i, j = row + 3 * x, up + 3 * x
                b0, b1, b2 = np.int64(raw[j]), np.int64(raw[j + 1]), np.int64(raw[j + 2])
                a0 = (raw[i] + _paeth(a0, b0, c0)) & 255
                a1 = (raw[i + 1] + _paeth(a1, b1, c1)) & 255
                a2 = (raw[i + 2] + _paeth(a2, b2, c2)) & 255
                raw[i], raw[i + 1], raw[i + 2] = a0, a1, a2
                c0, c1, c2 = b0, b1, b2
        for x in range(width):
            i = row + 3 * x
            out[r, x, 0], out[r, x, 1], out[r, x, 2] = raw[i + 2], raw[i + 1], raw[i]
    return True
