"""The linear ``Resize -> ArgMax`` tail as one compiled pass per output row (numba).

numpy's dense path (banded.py) makes ~8 passes over a [C, W] row per output row and pays a
call's overhead for each; here the same arithmetic runs as one loop per row, vectorised
across W: the two source rows resized horizontally once (``a + (b - a) * t``), the vertical
lerp, and a running maximum, runner-up and first index over classes. Where the runner-up is
within the rounding bound of the maximum (a near tie), ORT's exact 4-term formula and its
first-index rule decide, as in the numpy path, so the labels are ORT's.

Compiled on first use (about 2 s) and cached by numba beside this file (or in
``NUMBA_CACHE_DIR``); ``nogil`` so bands run on plain threads. Without numba, ``row_filler()``
is None and banded.py keeps its numpy paths.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.head.interp import LinearAxis

log = logging.getLogger(__name__)

FillRows = Callable[[npt.NDArray[np.float32], float, LinearAxis, LinearAxis, npt.NDArray[np.int64], int, int], None]


@functools.cache
def row_filler() -> FillRows | None:
    """The compiled row filler (numba imported on first call), or None without numba.

    Compiled code is cached on disk where numba finds a writable place (beside this module,
    ``NUMBA_CACHE_DIR`` or the user's cache); where it finds none (a read-only install and
    HOME), numba refuses ``cache=True``, and the pass is compiled per process instead."""
    try:
        import numba
    except ImportError:
        return None
    try:
        return _build(numba, cache=True)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        log.info("numba cannot cache the banded head's pass here (%s); compiling it per process", exc)
        return _build(numba, cache=False)


def _build(numba: Any, *, cache: bool) -> FillRows:
    """Compile-on-first-call the row pass; ``cache`` persists the machine code."""
    jit: Callable[[Callable[..., Any]], Any] = numba.njit(nogil=True, cache=cache, boundscheck=False)  # no fastmath: ORT rounding

    @jit
    def resize_row(x_chw: Any, r: int, i1: Any, i2: Any, d1: Any, dst: Any) -> None:
        for c in range(x_chw.shape[0]):
            for x in range(dst.shape[1]):
                a = x_chw[c, r, i1[x]]
                dst[c, x] = a + (x_chw[c, r, i2[x]] - a) * d1[x]

    @jit
    def exact(x_chw: Any, r1: int, r2: int, dy1: Any, dy2: Any, q1: int, q2: int, dx1: Any, dx2: Any) -> int:
        # ORT: dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22, in float32, this order.
        w11, w21, w12, w22 = dx2 * dy2, dx1 * dy2, dx2 * dy1, dx1 * dy1
        best = w11 * x_chw[0, r1, q1]
        best += w21 * x_chw[0, r1, q2]
        best += w12 * x_chw[0, r2, q1]
        best += w22 * x_chw[0, r2, q2]
        arg = 0
        for c in range(1, x_chw.shape[0]):
            v = w11 * x_chw[c, r1, q1]
            v += w21 * x_chw[c, r1, q2]
            v += w12 * x_chw[c, r2, q1]
            v += w22 * x_chw[c, r2, q2]
            if v > best:
                best, arg = v, c
        return arg

    @jit
    def fill(
        x_chw: Any, tol: Any, iy1: Any, iy2: Any, dy1: Any, dy2: Any, ix1: Any, ix2: Any, dx1: Any, dx2: Any,
        out: Any, y0: int, y1: int,
    ) -> None:  # fmt: skip
        c_n, w_n = x_chw.shape[0], out.shape[1]
        upper = np.empty((c_n, w_n), np.float32)  # source row iy1[y], resized horizontally
        lower = np.empty((c_n, w_n), np.float32)  # source row iy2[y]
        have_upper, have_lower = -1, -1
        best = np.empty(w_n, np.float32)
        second = np.empty(w_n, np.float32)
        arg = np.empty(w_n, np.int32)
        for y in range(y0, y1):
            r1, r2, t = iy1[y], iy2[y], dy1[y]
            if have_upper != r1:  # rows only move down: the old lower row may be the new upper
                if have_lower == r1:
                    upper, lower = lower, upper
                    have_lower = -1
                else:
                    resize_row(x_chw, r1, ix1, ix2, dx1, upper)
                have_upper = r1
            if r2 != r1 and have_lower != r2:
                resize_row(x_chw, r2, ix1, ix2, dx1, lower)
                have_lower = r2
            below = upper if r1 == r2 else lower  # clamped edge: a + (a - a) * t is ORT's a
            for x in range(w_n):
                a = upper[0, x]
                best[x], second[x], arg[x] = a + (below[0, x] - a) * t, -np.inf, 0
            for c in range(1, c_n):
                for x in range(w_n):
                    a = upper[c, x]
                    v = a + (below[c, x] - a) * t
                    b, s = best[x], second[x]
                    gt = v > b
                    second[x] = b if gt else (v if v > s else s)
                    best[x] = v if gt else b
                    arg[x] = c if gt else arg[x]
            for x in range(w_n):
                if second[x] >= best[x] - tol:  # near tie: ORT's formula decides
                    out[y, x] = exact(x_chw, r1, r2, dy1[y], dy2[y], ix1[x], ix2[x], dx1[x], dx2[x])
                else:
                    out[y, x] = arg[x]

    def fill_rows(
        x_chw: npt.NDArray[np.float32],
        tolerance: float,
        ay: LinearAxis,
        ax: LinearAxis,
        out_hw: npt.NDArray[np.int64],
        y0: int,
        y1: int,
    ) -> None:
        """Labels of output rows [y0, y1) into ``out_hw`` (finite float32 [C,h,w] logits)."""
        fill(
            x_chw, np.float32(tolerance), ay.i1, ay.i2, ay.d1, ay.d2, ax.i1, ax.i2, ax.d1, ax.d2, out_hw, y0, y1
        )

    return fill_rows

