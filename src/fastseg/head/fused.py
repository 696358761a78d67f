"""The linear ``Resize -> ArgMax`` tail as one compiled pass per output row (numba).

numpy's dense path (banded.py) makes ~8 passes over a [C, W] row per output row and pays a
call's overhead for each; here the same arithmetic runs as one loop per row, vectorised
across W: the two source rows resized horizontally once (``a + (b - a) * t``), the vertical
lerp, and a running maximum, runner-up and first index over classes. Where the runner-up is
within the rounding bound of the maximum (a near tie), ORT's exact 4-term formula and its
first-index rule decide, as in the numpy path, so the labels are ORT's.

The kernels live in ``_fused_kernels.py`` (module level, so numba's disk cache finds them in
the next process): compiled on first use (~2-3 s) and cached beside that file, in
``NUMBA_CACHE_DIR`` or the user's cache; compiled per process where numba has nowhere to
write. ``nogil``, so bands run on plain threads. Without numba, ``row_filler()`` is None and
banded.py keeps its numpy paths.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.head.interp import LinearAxis

CANDIDATES_MIN_CLASSES = 8
"""Classes from which an image's logits are checked for the candidate pass (``fill_candidates``)."""
CANDIDATE_SHARE_MAX = 0.25
"""The candidate pass runs where a 64-column span must compare at most this share of the
classes (``candidate_share``, 8 sampled rows, ~0.1 ms at 19 classes, ~0.7 at 150). Measured on
Zen 5 (``benchmarks/head_tail.py``; one thread on the reference logits): SeaFormer_tiny's
150 classes share 0.08, 27 ms against 64-66 for every class; PP-LiteSeg-T's 19 share 0.43,
11.3 ms against 8.4, so it keeps the every-class pass."""
_SAMPLES = 8

BandFill = Callable[[npt.NDArray[Any], int, int], None]
"""Writes the labels of output rows [y0, y1) into ``out_hw``."""
FillRows = Callable[[npt.NDArray[np.float32], float, LinearAxis, LinearAxis], BandFill]
"""For one image's logits, rounding bound and sampling tables: its ``BandFill``."""


@functools.cache
def row_filler() -> FillRows | None:
    """The compiled row filler (numba imported and the kernels decorated on first call;
    compiled on their first use, or loaded from numba's disk cache), or None without numba."""
    try:
        from fastseg.head import _fused_kernels as kernels
    except ImportError:
        return None

    def for_image(x_chw: npt.NDArray[np.float32], tolerance: float, ay: LinearAxis, ax: LinearAxis) -> BandFill:
        """The pass for these finite float32 [C,h,w] logits: the candidate pass where few
        classes can win in each span (trained models, SeaFormer's 150 classes), else the
        every-class pass. Both give the same labels."""
        tol = np.float32(tolerance)
        fill = kernels.fill
        if x_chw.shape[0] >= CANDIDATES_MIN_CLASSES:
            share = kernels.candidate_share(x_chw, tol, ay.i1, ay.i2, ax.i1, ax.i2, _SAMPLES)
            if share <= CANDIDATE_SHARE_MAX:
                fill = kernels.fill_candidates

        def band(out_hw: npt.NDArray[Any], y0: int, y1: int) -> None:
            fill(x_chw, tol, ay.i1, ay.i2, ay.d1, ay.d2, ax.i1, ax.i2, ax.d1, ax.d2, out_hw, y0, y1)

        return band

    return for_image


def ready_row_filler() -> FillRows | None:
    """``row_filler()`` once it can run without waiting: at once when no warm-up was started
    (direct calls), else only after the background load finished. Until then the caller
    takes the numpy paths (the same labels), so a process's first image does not wait ~1 s
    for numba."""
    if warm_up.cache_info().currsize and warm_up().is_alive():
        return None
    return row_filler()


@functools.cache
def warm_up() -> threading.Thread:
    """Load (or compile) the pass on a background thread, once per process.

    Importing numba and loading the cached machine code take ~1 s; started when a Segmenter
    picks the banded head, it overlaps the engine's model compilation and the first image's
    decoding and inference; until it is done, ``ready_row_filler()`` answers None and the
    numpy paths label those first images."""

    def load() -> None:
        if row_filler() is not None:
            from fastseg.head import _fused_kernels as kernels
            from fastseg.head.interp import linear_axis, size_scale

            axis = linear_axis("half_pixel", 4, 2, size_scale(2, 4))
            logits, tol = np.zeros((2, 2, 2), np.float32), np.float32(0.0)
            for fill in (kernels.fill, kernels.fill_candidates):  # the types of real calls: compiled once
                for labels in (np.int64, np.int32):  # ArgMax's, and a graph's Cast after it
                    fill(logits, tol, axis.i1, axis.i2, axis.d1, axis.d2, axis.i1, axis.i2, axis.d1, axis.d2,
                         np.empty((4, 4), labels), 0, 4)
            kernels.candidate_share(logits, tol, axis.i1, axis.i2, axis.i1, axis.i2, 1)

    thread = threading.Thread(target=load, name="fastseg-head-warm-up", daemon=True)
    thread.start()
    return thread
