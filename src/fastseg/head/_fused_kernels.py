"""The banded head's compiled row pass: numba kernels at module level (``fastseg.jit``).
Imported only by ``fused.row_filler()``: importing this module imports numba and decorates
(compilation itself happens on first call).

All arguments are typed at the call: float32 logits [C,h,w], ORT's sampling tables
(``interp.LinearAxis``: intp indices, float32 weights), int64 labels [H,W].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastseg.jit import kernel


@kernel
def resize_row(x_chw: Any, r: int, i1: Any, i2: Any, d1: Any, dst: Any) -> None:
    for c in range(x_chw.shape[0]):
        for x in range(dst.shape[1]):
            a = x_chw[c, r, i1[x]]
            dst[c, x] = a + (x_chw[c, r, i2[x]] - a) * d1[x]


@kernel
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


@kernel
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



_SPAN = 64
"""Output columns that share one candidate list in ``fill_candidates`` (eight cells at 8x)."""


@kernel
def fill_candidates(
    x_chw: Any, tol: Any, iy1: Any, iy2: Any, dy1: Any, dy2: Any, ix1: Any, ix2: Any, dx1: Any, dx2: Any,
    out: Any, y0: int, y1: int,
) -> None:  # fmt: skip
    """``fill`` for many classes: per source row pair and span of ``_SPAN`` output columns,
    only the classes that are candidates in one of its cells (``_mark_candidates``) are
    resized and compared, vectorised across the span, with ``fill``'s arithmetic, class order,
    runner-up and near-tie rule: the same labels, for a fraction of the classes."""
    c_n, w_n = x_chw.shape[0], out.shape[1]
    spans = (w_n + _SPAN - 1) // _SPAN
    upper = np.empty((c_n, w_n), np.float32)
    lower = np.empty((c_n, w_n), np.float32)
    classes = np.empty((spans, c_n), np.int64)
    counts = np.zeros(spans, np.int64)
    mark = np.zeros(c_n, np.bool_)
    best = np.empty(_SPAN, np.float32)
    second = np.empty(_SPAN, np.float32)
    arg = np.empty(_SPAN, np.int64)
    margin = tol + tol
    h_w = x_chw.shape[2]
    col_lo = np.empty((h_w, c_n), np.float32)
    col_hi = np.empty((h_w, c_n), np.float32)
    listed_r1, listed_r2 = -1, -1
    for y in range(y0, y1):
        r1, r2, t = iy1[y], iy2[y], dy1[y]
        if listed_r1 != r1 or listed_r2 != r2:
            listed_r1, listed_r2 = r1, r2
            for q in range(h_w):  # per source column: the two rows' min and max, class by class
                for c in range(c_n):
                    u, d = x_chw[c, r1, q], x_chw[c, r2, q]
                    col_lo[q, c], col_hi[q, c] = min(u, d), max(u, d)
            for k in range(spans):
                xa, xb = k * _SPAN, min(w_n, (k + 1) * _SPAN)
                mark[:] = False
                q1, q2 = -1, -1
                for x in range(xa, xb):
                    if q1 != ix1[x] or q2 != ix2[x]:
                        q1, q2 = ix1[x], ix2[x]
                        floor = -np.inf
                        for c in range(c_n):
                            floor = max(floor, min(col_lo[q1, c], col_lo[q2, c]))
                        floor -= margin
                        for c in range(c_n):
                            mark[c] |= max(col_hi[q1, c], col_hi[q2, c]) >= floor
                n = 0
                for c in range(c_n):
                    if mark[c]:
                        classes[k, n] = c
                        n += 1
                        for x in range(xa, xb):  # resize_row's arithmetic, for this class and span
                            a = x_chw[c, r1, ix1[x]]
                            upper[c, x] = a + (x_chw[c, r1, ix2[x]] - a) * dx1[x]
                            if r2 != r1:
                                a = x_chw[c, r2, ix1[x]]
                                lower[c, x] = a + (x_chw[c, r2, ix2[x]] - a) * dx1[x]
                counts[k] = n
        below = upper if r1 == r2 else lower
        for k in range(spans):
            xa, xb = k * _SPAN, min(w_n, (k + 1) * _SPAN)
            m = xb - xa
            c = classes[k, 0]
            for i in range(m):
                a = upper[c, xa + i]
                best[i], second[i], arg[i] = a + (below[c, xa + i] - a) * t, -np.inf, c
            for j in range(1, counts[k]):
                c = classes[k, j]
                for i in range(m):
                    a = upper[c, xa + i]
                    v = a + (below[c, xa + i] - a) * t
                    b, s = best[i], second[i]
                    gt = v > b
                    second[i] = b if gt else (v if v > s else s)
                    best[i] = v if gt else b
                    arg[i] = c if gt else arg[i]
            for i in range(m):
                x = xa + i
                if second[i] >= best[i] - tol:  # near tie: ORT's formula decides, over every class
                    out[y, x] = exact(x_chw, r1, r2, dy1[y], dy2[y], ix1[x], ix2[x], dx1[x], dx2[x])
                else:
                    out[y, x] = arg[i]
