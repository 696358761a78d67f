"""Labels = ArgMax(Resize(logits)) without materialising the full-resolution logits.

A graph ending in ``ArgMax(Resize(logits [N,C,h,w] -> [N,C,H,W]), axis=1)`` spends most of
its time writing and re-reading C*H*W floats (SeaFormer_tiny, 150 classes at 1024x2048:
90% of the run). ``resize_argmax`` computes the same labels from the low-resolution logits:

* nearest mode: the upsampled vector of a pixel *is* a source vector, so the label is the
  source pixel's argmax (exact).
* linear mode: an output pixel is a non-negative weighted sum of the 4 source pixels of its
  cell. A class whose largest value over those 4 pixels is below the best "smallest value
  over the 4" (minus a bound on float32 rounding) can never win, so each cell keeps only its
  candidate classes. Cells with one candidate (almost all, on trained models) give their
  label directly; for the others, the candidate values are computed with ORT's own formula
  and rounding order (``interp.py``), so the winner, ties included (first index), is the one
  ORT's ``ArgMax`` picks. With numba installed, linear mode instead runs ``fused.py``: one
  compiled pass per output row over all classes (the numpy dense path's arithmetic, 2-9x
  faster), ORT's formula again deciding near ties. The work runs in bands of output rows,
  on a few threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.head.fused import FillRows, ready_row_filler
from fastseg.head.interp import LinearAxis, linear_axis, nearest_axis, size_scale

# Rounding bound: ORT's value of a class is 4 products summed in float32, off by at most ~5
# ulps of the largest |logit| each; a class is dropped only when it loses by 64 ulps of it.
_ROUND_ULPS = 64.0 * float(np.finfo(np.float32).eps)
_FEW = 4  # candidate slots of an ordinary "contested" cell; cells with more go to the full path
_F = np.float32


@dataclass(frozen=True)
class TailResize:
    """The Resize attributes the head reproduces (see ``tail.py``)."""

    mode: str  # "linear" | "nearest"
    coordinate_mode: str
    nearest_mode: str = "round_prefer_floor"
    select_last_index: bool = False


def resize_argmax(
    logits_nchw: npt.NDArray[np.float32],
    out_hw: tuple[int, int],
    spec: TailResize,
    *,
    scales_hw: tuple[float, float] | None = None,
    band_rows: int | None = None,
    threads: int = 2,
    use_fused: bool = True,
    dtype: type[np.int32] | type[np.int64] = np.int64,
) -> npt.NDArray[Any]:
    """ArgMax over classes of ORT's Resize of ``logits_nchw`` to ``out_hw``, band by band.

    Args:
        logits_nchw: float32 [N,C,h,w] low-resolution logits (the Resize's input).
        out_hw: the Resize's output (H, W).
        spec: Resize mode, coordinate mode, nearest mode and ArgMax tie rule.
        scales_hw: the Resize's (H, W) scales when it was given scales (ORT then uses them
            as given); None when it was given sizes (ORT uses out/in in float32).
        band_rows: output rows per band (None: about 128K output pixels per band).
        threads: bands computed in parallel (numpy and the compiled pass release the GIL).
        use_fused: linear mode runs the compiled row pass (``fused.py``) when numba is
            installed and loaded (while a Segmenter's background load runs, the numpy
            paths); False keeps the numpy paths (tests compare the two).
        dtype: the labels' integer type, int64 (ArgMax's) or int32 (a graph's Cast after it):
            written directly, so no converted copy of a full-size map follows.

    Returns:
        ``dtype`` [N,H,W] class indices, identical to ORT's ``ArgMax(Resize(...))``.
    """
    n, c, h, w = logits_nchw.shape
    out_h, out_w = out_hw
    sh, sw = (size_scale(h, out_h), size_scale(w, out_w)) if scales_hw is None else (_F(scales_hw[0]), _F(scales_hw[1]))
    labels = np.empty((n, out_h, out_w), dtype=dtype)
    if labels.size == 0:
        return labels
    fused = ready_row_filler() if use_fused else None
    rows = band_rows or max(1, 131072 // out_w)
    bands = [(y, min(y + rows, out_h)) for y in range(0, out_h, rows)]
    workers = max(1, min(threads, len(bands)))
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for i in range(n):
            x_chw = np.ascontiguousarray(logits_nchw[i], dtype=np.float32)
            if spec.select_last_index:  # the last max = the first max of the reversed classes
                x_chw = np.ascontiguousarray(x_chw[::-1])
            if spec.mode == "nearest":
                iy = nearest_axis(spec.coordinate_mode, spec.nearest_mode, out_h, h, sh)
                ix = nearest_axis(spec.coordinate_mode, spec.nearest_mode, out_w, w, sw)
                labels[i] = first_argmax(x_chw.reshape(c, -1)).reshape(h, w)[iy][:, ix]
            else:
                ay = linear_axis(spec.coordinate_mode, out_h, h, sh)
                ax = linear_axis(spec.coordinate_mode, out_w, w, sw)
                fill = _band_filler(x_chw, ay, ax, labels[i], fused)
                if pool is None:
                    for y0, y1 in bands:
                        fill(y0, y1)
                else:
                    list(pool.map(lambda band: fill(band[0], band[1]), bands))
            if spec.select_last_index:
                labels[i] = (c - 1) - labels[i]
    return labels


def _band_filler(
    x_chw: npt.NDArray[np.float32], ay: LinearAxis, ax: LinearAxis, out_hw: npt.NDArray[Any], fused: FillRows | None
) -> Callable[[int, int], None]:
    """``fill(y0, y1)`` writing the labels of output rows [y0, y1): the compiled row pass
    for finite logits when available, else the numpy cell/dense paths."""
    magnitude = float(np.abs(x_chw).max(initial=0.0))
    if fused is not None and np.isfinite(magnitude):  # max|x| is finite iff every logit is
        tolerance = _ROUND_ULPS * magnitude
        band = fused(x_chw, tolerance, ay, ax)  # picks the pass for this image once
        return lambda y0, y1: band(out_hw, y0, y1)
    plan = _CellPlan.build(x_chw, ay, ax)
    return lambda y0, y1: plan.fill(out_hw, y0, y1)


def first_argmax(values: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Index of the first maximum along axis 0 (ORT's ArgMax), with elementwise passes only
    (numpy's own argmax over a strided axis 0 is ~50x slower)."""
    top = values.max(axis=0)
    reverse = np.arange(values.shape[0] - 1, -1, -1, dtype=np.int32).reshape((-1,) + (1,) * (values.ndim - 1))
    hits = np.multiply(values == top, reverse, dtype=np.int32)
    return (values.shape[0] - 1) - hits.max(axis=0).astype(np.int64)  # type: ignore[no-any-return]


@dataclass
class _CellPlan:
    """Per source cell (rows r, r+1; columns q, q+1, clamped): its label when uncontested,
    else its candidate classes; plus ORT's sampling tables."""

    x_chw: npt.NDArray[np.float32]
    ay: LinearAxis
    ax: LinearAxis
    single: npt.NDArray[np.int64]  # [h*w] the cell's label, or -1 (few candidates) / -2 (many)
    slot: npt.NDArray[np.intp]  # [h*w] row of the cell in cand/corners (few candidates)
    cand: npt.NDArray[np.intp]  # [k, _FEW] candidate classes, ascending, padded with the first
    corners: npt.NDArray[np.float32]  # [k, 4, _FEW] values at (y1,x1), (y1,x2), (y2,x1), (y2,x2)
    tolerance: float  # two computations of a value (ORT's, separable) differ by less than this

    @classmethod
    def build(cls, x_chw: npt.NDArray[np.float32], ay: LinearAxis, ax: LinearAxis) -> _CellPlan:
        c, h, w = x_chw.shape
        padded = np.pad(x_chw, ((0, 0), (0, 1), (0, 1)), mode="edge")  # cell (r, q): rows r, r+1 clamped
        corners = [padded[:, dy : dy + h, dx : dx + w] for dy in (0, 1) for dx in (0, 1)]
        hi = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
        lo = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
        finite = bool(np.isfinite(x_chw).all())
        tolerance = _ROUND_ULPS * float(np.abs(x_chw).max(initial=0.0)) if finite else np.inf
        floor = lo.max(axis=0) - _F(tolerance)  # what the best class surely reaches
        is_cand = (hi >= floor).reshape(c, h * w)
        del hi, lo
        count = is_cand.sum(axis=0, dtype=np.int32)
        crowded = np.flatnonzero(count > _FEW)
        if crowded.size and np.count_nonzero(count == 1) >= 0.25 * count.size:  # trained-like: refine
            ry, rx = np.divmod(crowded, w)
            flat = [padded[:, ry + dy, rx + dx] for dy in (0, 1) for dx in (0, 1)]
            is_cand[:, crowded] &= _beats_corner_winners(flat, tolerance)
            count[crowded] = is_cand[:, crowded].sum(axis=0, dtype=np.int32)
        owner = np.multiply(is_cand, np.arange(c, dtype=np.int32)[:, None], dtype=np.int32).sum(axis=0)
        single = np.where(count == 1, owner, -2).astype(np.int64)
        few = np.flatnonzero((count > 1) & (count <= _FEW))
        single[few] = -1
        slot = np.zeros(h * w, dtype=np.intp)
        slot[few] = np.arange(few.size)
        cells, classes = np.nonzero(is_cand[:, few].T)  # row-major: classes ascending per cell
        starts = np.searchsorted(cells, np.arange(few.size))
        cand = np.repeat(classes[starts][:, None], _FEW, axis=1)  # pad with the first candidate
        cand[cells, np.arange(cells.size) - starts[cells]] = classes
        cy, cx = np.divmod(few, w)
        values = np.stack(
            [padded[cand, cy[:, None] + dy, cx[:, None] + dx] for dy in (0, 1) for dx in (0, 1)], axis=1
        )  # [k, 4, _FEW]: (y1,x1), (y1,x2), (y2,x1), (y2,x2), as ORT names them X11, X21, X12, X22
        return cls(x_chw, ay, ax, single, slot, cand, values, tolerance)

    def fill(self, out_hw: npt.NDArray[Any], y0: int, y1: int) -> None:
        """Write the labels of output rows [y0, y1) into ``out_hw``: cell by cell where few
        cells are contested (trained models), densely where many are (e.g. random weights)."""
        c, h, w = self.x_chw.shape
        ay, ax = self.ay, self.ax
        cell = (ay.i1[y0:y1, None] * w + ax.i1[None, :]).reshape(-1)
        band = self.single[cell]
        contested = np.flatnonzero(band < 0)
        many = band[contested] == -2
        n_many = int(np.count_nonzero(many))
        # CPU cost per pixel, measured in ns: dense ~c + 10; a few-candidate pixel ~130; a
        # many-candidate pixel ~6 per class (it gathers whole class vectors).
        if 130 * (contested.size - n_many) + 6 * c * n_many > (c + 10) * band.size:
            out_hw[y0:y1] = self._dense(y0, y1)
            return
        if contested.size:
            out_w = out_hw.shape[1]
            ys, xs = contested // out_w + y0, contested % out_w
            few = ~many
            if few.any():
                rows = self.slot[cell[contested[few]]]
                q = self.corners[rows]  # [P, 4, _FEW]
                values = _ort_bilinear(q[:, 0], q[:, 1], q[:, 2], q[:, 3], ay, ax, ys[few], xs[few])
                band[contested[few]] = self.cand[rows, values.argmax(axis=1)]
            if n_many:
                band[contested[many]] = self._exact(ys[many], xs[many])
        out_hw[y0:y1] = band.reshape(y1 - y0, -1)

    def _exact(self, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """ORT's value of every class at output pixels (ys, xs), and its first argmax."""
        x, ay, ax = self.x_chw, self.ay, self.ax
        y1, y2, x1, x2 = ay.i1[ys], ay.i2[ys], ax.i1[xs], ax.i2[xs]
        values = _ort_bilinear(x[:, y1, x1].T, x[:, y1, x2].T, x[:, y2, x1].T, x[:, y2, x2].T, ay, ax, ys, xs)
        return values.argmax(axis=1)  # type: ignore[no-any-return]

    def _dense(self, y0: int, y1: int) -> npt.NDArray[np.intp]:
        """Rows [y0, y1) computed separably: each source row resized horizontally once (a
        contiguous [C, W] array), then per output row a vertical lerp, the maximum over
        classes, and the classes within the rounding tolerance of it, all elementwise passes
        vectorised across W. One such class: that is ORT's label; more (a near tie): ORT's
        exact formula decides. Lerps are written a + (b - a) * t: fewer passes, and their
        rounding stays far inside the tolerance (a few ulps of the largest |logit|)."""
        x, ay, ax = self.x_chw, self.ay, self.ax
        c = x.shape[0]
        out_w = ax.i1.size
        resized: dict[int, npt.NDArray[np.float32]] = {}
        rises: dict[int, npt.NDArray[np.float32]] = {}

        def row(r: int) -> npt.NDArray[np.float32]:
            if r not in resized:
                src = x[:, r]
                left = np.take(src, ax.i1, axis=1)
                step = np.take(src, ax.i2, axis=1)
                step -= left
                step *= ax.d1
                left += step
                resized[r] = left
            return resized[r]

        # Each class within tolerance of the maximum adds big + its index: a sum below 2*big
        # means exactly one class (sum - big is the label). uint16 when no sum can overflow.
        big = 1 << max(8, c.bit_length())
        code_type = np.uint16 if c * (big + c) < 2**16 else np.int32
        code = (big + np.arange(c)).astype(code_type)[:, None]
        labels = np.empty((y1 - y0, out_w), dtype=np.intp)
        values = np.empty((c, out_w), dtype=np.float32)
        near = np.empty((c, out_w), dtype=np.bool_)
        coded = np.empty((c, out_w), dtype=code_type)
        tolerance = _F(self.tolerance)
        for y in range(y0, y1):
            r1, r2 = int(ay.i1[y]), int(ay.i2[y])
            for old in [r for r in resized if r < r1]:  # rows only move down: keep two
                del resized[old]
                rises.pop(old, None)
            if r1 == r2:  # clamped edge row: ORT's 0.5*a + 0.5*a is a
                values[...] = row(r1)
            else:
                if r1 not in rises:
                    rises[r1] = row(r2) - row(r1)
                np.multiply(rises[r1], ay.d1[y], out=values)
                values += row(r1)
            top = values.max(axis=0)
            np.greater_equal(values, top - tolerance, out=near)
            np.multiply(near.view(np.uint8), code, out=coded, dtype=code_type)
            total = coded.sum(axis=0, dtype=code_type).astype(np.intp)
            label = total - big
            tied = np.flatnonzero(total >= 2 * big)
            if tied.size:
                label[tied] = self._exact(np.full(tied.size, y, dtype=np.intp), tied)
            labels[y - y0] = label
        return labels


def _beats_corner_winners(corners: list[npt.NDArray[np.float32]], tolerance: float) -> npt.NDArray[np.bool_]:
    """For cells given as their 4 corner vectors ([C, m] each), the classes that can beat the
    mean of the 4 corner winners somewhere in the cell.

    A class winning at a pixel beats each corner's winning class there, hence their mean;
    its margin over that mean is bilinear across the cell, so it peaks at a corner: a class
    whose margin is negative at all 4 corners never wins in the cell. (Tighter than the
    max/min test at borders between confident regions.)
    """
    m = corners[0].shape[1]
    cells = np.arange(m)
    winners = [first_argmax(v) for v in corners]
    best = np.full(corners[0].shape, -np.inf, dtype=np.float32)
    for v in corners:
        mean = (v[winners[0], cells] + v[winners[1], cells] + v[winners[2], cells] + v[winners[3], cells]) / _F(4)
        np.maximum(best, v - mean, out=best)
    return best >= -_F(tolerance)


def _ort_bilinear(
    x11: npt.NDArray[np.float32],
    x21: npt.NDArray[np.float32],
    x12: npt.NDArray[np.float32],
    x22: npt.NDArray[np.float32],
    ay: LinearAxis,
    ax: LinearAxis,
    ys: npt.NDArray[np.intp],
    xs: npt.NDArray[np.intp],
) -> npt.NDArray[np.float32]:
    """ORT's ``dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22`` in its rounding order.

    ``x11`` etc. are [P, K] values at (y1,x1), (y1,x2), (y2,x1), (y2,x2) of P output pixels.
    """
    dx1, dx2 = ax.d1[xs][:, None], ax.d2[xs][:, None]
    dy1, dy2 = ay.d1[ys][:, None], ay.d2[ys][:, None]
    out = (dx2 * dy2) * x11
    out += (dx1 * dy2) * x21
    out += (dx2 * dy1) * x12
    out += (dx1 * dy1) * x22
    return out
