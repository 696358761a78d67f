"""The winning class's probability after a graph's final Resize, computed band by band.

``softmax(Resize(logits))[label]`` at every output pixel needs every class's upsampled value
there, but never all of them at once: each band of output rows resizes only the source rows it
reads (the same ORT sampling tables as the labels, ``interp.py``), so memory is
C x band x W, never C x H x W.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt

from fastseg.head.banded import TailResize
from fastseg.head.interp import linear_axis, nearest_axis, size_scale

_F = np.float32
_BAND_FLOATS = 4_000_000  # ~16 MB of float32 per band


def _probability(values: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """softmax(values, axis 0)[labels]: 1 / sum_c exp(v_c - v_label), at most 1."""
    chosen = np.take_along_axis(values, labels[None], axis=0)
    values -= chosen
    np.exp(values, out=values)
    total = values.sum(axis=0)
    return cast("npt.NDArray[np.float32]", np.minimum(_F(1.0) / total, _F(1.0)).astype(np.float32, copy=False))


def resize_score(
    logits_nchw: npt.NDArray[np.float32],
    labels_nhw: npt.NDArray[np.int64],
    spec: TailResize,
    *,
    scales_hw: tuple[float, float] | None = None,
) -> npt.NDArray[np.float32]:
    """float32 [N,H,W]: the probability of ``labels_nhw`` (the head's labels) under the softmax of
    ORT's Resize of ``logits_nchw`` to (H, W), one band of rows at a time."""
    n, c, h, w = logits_nchw.shape
    out_h, out_w = int(labels_nhw.shape[1]), int(labels_nhw.shape[2])
    sh, sw = (size_scale(h, out_h), size_scale(w, out_w)) if scales_hw is None else (_F(scales_hw[0]), _F(scales_hw[1]))
    scores = np.empty((n, out_h, out_w), dtype=np.float32)
    rows = max(1, _BAND_FLOATS // max(1, c * out_w))
    for i in range(n):
        x = np.asarray(logits_nchw[i], dtype=np.float32)
        if spec.mode == "nearest":
            iy = nearest_axis(spec.coordinate_mode, spec.nearest_mode, out_h, h, sh)
            ix = nearest_axis(spec.coordinate_mode, spec.nearest_mode, out_w, w, sw)
            for y0 in range(0, out_h, rows):
                band = x[:, iy[y0 : y0 + rows]][:, :, ix]
                scores[i, y0 : y0 + rows] = _probability(band, labels_nhw[i, y0 : y0 + rows])
            continue
        ay = linear_axis(spec.coordinate_mode, out_h, h, sh)
        ax = linear_axis(spec.coordinate_mode, out_w, w, sw)
        for y0 in range(0, out_h, rows):
            y1 = min(y0 + rows, out_h)
            r0 = int(min(ay.i1[y0:y1].min(), ay.i2[y0:y1].min()))
            r1 = int(max(ay.i1[y0:y1].max(), ay.i2[y0:y1].max())) + 1
            src = x[:, r0:r1]
            across = src[:, :, ax.i1] * ax.d2 + src[:, :, ax.i2] * ax.d1  # [C, rows read, W]
            top, bottom = ay.i1[y0:y1] - r0, ay.i2[y0:y1] - r0
            lerp = across[:, top] * ay.d2[y0:y1, None] + across[:, bottom] * ay.d1[y0:y1, None]
            scores[i, y0:y1] = _probability(lerp.astype(np.float32, copy=False), labels_nhw[i, y0:y1])
    return scores
