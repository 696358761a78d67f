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

import numpy as np
import numpy.typing as npt

from fastseg.head.interp import LinearAxis

CANDIDATES_MIN_CLASSES = 64
"""Classes from which each span compares only its cells' candidate classes (``fill_candidates``).
Measured on Zen 5, one thread, the bench frame's reference logits at 1024x2048: 150 classes
(SeaFormer_tiny) 34 ms against 59-60 for every class; 19 (PP-LiteSeg-T) 13-19 against 9-15."""

FillRows = Callable[[npt.NDArray[np.float32], float, LinearAxis, LinearAxis, npt.NDArray[np.int64], int, int], None]


@functools.cache
def row_filler() -> FillRows | None:
    """The compiled row filler (numba imported and the kernels decorated on first call;
    compiled on their first use, or loaded from numba's disk cache), or None without numba."""
    try:
        from fastseg.head import _fused_kernels as kernels
    except ImportError:
        return None

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
        fill = kernels.fill_candidates if x_chw.shape[0] >= CANDIDATES_MIN_CLASSES else kernels.fill
        fill(
            x_chw, np.float32(tolerance), ay.i1, ay.i2, ay.d1, ay.d2, ax.i1, ax.i2, ax.d1, ax.d2, out_hw, y0, y1
        )

    return fill_rows


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
        fill = row_filler()
        if fill is not None:
            from fastseg.head.interp import linear_axis, size_scale

            axis = linear_axis("half_pixel", 4, 2, size_scale(2, 4))
            for classes in (2, CANDIDATES_MIN_CLASSES):  # both kernels
                fill(np.zeros((classes, 2, 2), np.float32), 0.0, axis, axis, np.empty((4, 4), np.int64), 0, 4)

    thread = threading.Thread(target=load, name="fastseg-head-warm-up", daemon=True)
    thread.start()
    return thread
