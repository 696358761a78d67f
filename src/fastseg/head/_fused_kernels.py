"""The banded head's compiled row pass: numba kernels at module level (``fastseg.jit``).
Imported only by ``fused.row_filler()``: importing this module imports numba and decorates
(compilation itself happens on first call).

All arguments are typed at the call: float32 logits [C,h,w], ORT's sampling tables
(``interp.LinearAxis``: intp indices, float32 weights), int64 or int32 labels [H,W].
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
def _span_cells(ix1: Any, ix2: Any, spans: int) -> tuple[Any, Any]:
    """Each span's cells (source column pairs) as two [M, spans] tables, ``q1[m, k]`` and
    ``q2[m, k]`` the m-th cell of span k (output columns ``k * _SPAN`` on), a span with fewer
    than M cells padded with its first, which changes no floor and no "any" over the span."""
    w_n = ix1.size
    cell_q1, cell_q2 = np.empty(w_n, np.int64), np.empty(w_n, np.int64)
    first = np.zeros(spans + 1, np.int64)
    cells = 0
    for k in range(spans):
        first[k] = cells
        for x in range(k * _SPAN, min(w_n, (k + 1) * _SPAN)):
            if cells == first[k] or cell_q1[cells - 1] != ix1[x] or cell_q2[cells - 1] != ix2[x]:
                cell_q1[cells], cell_q2[cells] = ix1[x], ix2[x]
                cells += 1
    first[spans] = cells
    most = 0
    for k in range(spans):
        most = max(most, first[k + 1] - first[k])
    q1, q2 = np.empty((most, spans), np.int64), np.empty((most, spans), np.int64)
    for k in range(spans):
        for m in range(most):
            j = first[k] + m if first[k] + m < first[k + 1] else first[k]
            q1[m, k], q2[m, k] = cell_q1[j], cell_q2[j]
    return q1, q2


@kernel
def _list_candidates(x_chw: Any, r1: int, r2: int, q1: Any, q2: Any, margin: Any, classes: Any, counts: Any,
                     low: Any, high: Any) -> None:
    """Per span, the classes (ascending) that are candidates in one of its cells between source
    rows r1 and r2: a bilinear value lies between its four corners, so a class whose largest
    corner is below the best smallest corner less ``margin`` (twice the rounding bound) can
    neither win nor come within the near-tie bound there (the numpy cell plan's rule). ``low``
    and ``high`` are [C, w] scratch. Each class is tested on every cell of the [M, spans]
    tables (``_span_cells``) in one pass vectorised across spans, with no early exit per span:
    12.6 -> 9.9 ms an image single-threaded on SeaFormer_tiny's reference logits (session 17; AMD
    EPYC Zen 5 with avx2 avx512f avx512_bf16 avx512_vnni)."""
    c_n, h_w = x_chw.shape[0], x_chw.shape[2]
    m_n, spans = q1.shape
    for c in range(c_n):  # class by class: contiguous rows (column-major took 11.3 ms of an image, not 1.5)
        for q in range(h_w):
            u, d = x_chw[c, r1, q], x_chw[c, r2, q]
            low[c, q], high[c, q] = min(u, d), max(u, d)
    need = np.full((m_n, spans), -np.inf, np.float32)  # what the best class surely reaches, less the margin
    for c in range(c_n):
        row = low[c]
        for m in range(m_n):
            for k in range(spans):
                need[m, k] = max(need[m, k], min(row[q1[m, k]], row[q2[m, k]]))
    for m in range(m_n):
        for k in range(spans):
            need[m, k] -= margin
    hit = np.empty(spans, np.bool_)
    counts[:] = 0
    for c in range(c_n):
        row = high[c]
        hit[:] = False
        for m in range(m_n):
            for k in range(spans):
                hit[k] |= max(row[q1[m, k]], row[q2[m, k]]) >= need[m, k]
        for k in range(spans):
            if hit[k]:
                classes[k, counts[k]] = c
                counts[k] += 1


@kernel
def candidate_share(x_chw: Any, tol: Any, iy1: Any, iy2: Any, ix1: Any, ix2: Any, samples: int) -> float:
    """The mean share of classes a span must compare (``fill_candidates``), over ``samples``
    output rows spread over the image: near 1 for noise, ~0.08 for SeaFormer's 150 classes."""
    c_n, w_n, h_n = x_chw.shape[0], ix1.size, iy1.size
    spans = (w_n + _SPAN - 1) // _SPAN
    q1, q2 = _span_cells(ix1, ix2, spans)
    classes, counts = np.empty((spans, c_n), np.int64), np.zeros(spans, np.int64)
    low, high = np.empty((c_n, x_chw.shape[2]), np.float32), np.empty((c_n, x_chw.shape[2]), np.float32)
    total = 0
    for i in range(samples):
        y = (2 * i + 1) * h_n // (2 * samples)
        _list_candidates(x_chw, iy1[y], iy2[y], q1, q2, tol + tol, classes, counts, low, high)
        total += counts.sum()
    return float(total / (samples * spans * c_n))


@kernel
def fill_candidates(
    x_chw: Any, tol: Any, iy1: Any, iy2: Any, dy1: Any, dy2: Any, ix1: Any, ix2: Any, dx1: Any, dx2: Any,
    out: Any, y0: int, y1: int,
) -> None:  # fmt: skip
    """``fill`` where few classes can win (``candidate_share``): per source row pair and span of
    ``_SPAN`` output columns, only the span's candidate classes (``_list_candidates``) are
    resized and compared, vectorised across the span, with ``fill``'s arithmetic, class order,
    runner-up and near-tie rule: the same labels. The ranking and labelling loops repeat
    ``fill``'s on purpose: as shared helpers they cost ``fill`` 20-30% at 19 classes when
    numba inlined them and this pass 65% when it called them (session 14)."""
    c_n, w_n = x_chw.shape[0], out.shape[1]
    spans = (w_n + _SPAN - 1) // _SPAN
    q1, q2 = _span_cells(ix1, ix2, spans)
    low, high = np.empty((c_n, x_chw.shape[2]), np.float32), np.empty((c_n, x_chw.shape[2]), np.float32)
    upper = np.empty((c_n, w_n), np.float32)
    lower = np.empty((c_n, w_n), np.float32)
    classes = np.empty((spans, c_n), np.int64)
    counts = np.zeros(spans, np.int64)
    best = np.empty(_SPAN, np.float32)
    second = np.empty(_SPAN, np.float32)
    arg = np.empty(_SPAN, np.int64)
    listed_r1, listed_r2 = -1, -1
    for y in range(y0, y1):
        r1, r2, t = iy1[y], iy2[y], dy1[y]
        if listed_r1 != r1 or listed_r2 != r2:
            listed_r1, listed_r2 = r1, r2
            _list_candidates(x_chw, r1, r2, q1, q2, tol + tol, classes, counts, low, high)
            for k in range(spans):
                for n in range(counts[k]):
                    c = classes[k, n]
                    for x in range(k * _SPAN, min(w_n, (k + 1) * _SPAN)):  # resize_row's arithmetic
                        a = x_chw[c, r1, ix1[x]]
                        upper[c, x] = a + (x_chw[c, r1, ix2[x]] - a) * dx1[x]
                        if r2 != r1:
                            a = x_chw[c, r2, ix1[x]]
                            lower[c, x] = a + (x_chw[c, r2, ix2[x]] - a) * dx1[x]
        below = upper if r1 == r2 else lower
        for k in range(spans):
            xa, xb = k * _SPAN, min(w_n, (k + 1) * _SPAN)
            m = xb - xa
            c = classes[k, 0]
            for i in range(m):
                a = upper[c, xa + i]
                best[i], second[i], arg[i] = a + (below[c, xa + i] - a) * t, -np.inf, c
            for n in range(1, counts[k]):
                c = classes[k, n]
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
