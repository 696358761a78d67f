"""ONNX Runtime's Resize sampling tables, reproduced bit for bit in float32.

For every output row (or column) ``i``, ORT's CPU Resize computes a source coordinate in
float32 (``coordinate_transformation_mode``), clamps it, and reads the two neighbours ``i1``,
``i2`` with weights ``d2`` (for ``i1``) and ``d1`` (for ``i2``) in linear mode, or one
neighbour in nearest mode. These functions build the same tables with numpy float32
arithmetic, so an interpolation written from them rounds exactly as ORT does
(onnxruntime/core/providers/cpu/tensor/upsample.cc: ``SetupUpsampleBilinear``,
``UpsampleNearestSetupInputMappings``; upsamplebase.h: the coordinate and nearest functions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")

_F = np.float32


@dataclass(frozen=True)
class LinearAxis:
    """Linear-mode neighbours and weights of one axis: out[i] = d2[i]*in[i1[i]] + d1[i]*in[i2[i]]."""

    i1: npt.NDArray[np.intp]
    i2: npt.NDArray[np.intp]
    d1: npt.NDArray[np.float32]  # weight of i2 (ORT's dx1/dy1)
    d2: npt.NDArray[np.float32]  # weight of i1 (ORT's dx2/dy2)


def output_length(in_len: int, scale: float) -> int:
    """ORT's output size from a scale: ``int64(float(scale) * float(in_len))`` (truncation)."""
    return int(_F(scale) * _F(in_len))


def size_scale(in_len: int, out_len: int) -> np.float32:
    """ORT's scale when sizes are given: ``float(out_len) / float(in_len)`` in float32."""
    return _F(1.0) if in_len == 0 else _F(out_len) / _F(in_len)


def original_coordinates(mode: str, out_len: int, in_len: int, scale: np.float32) -> npt.NDArray[np.float32]:
    """Source coordinate (float32, unclamped) of each output index, as ORT computes it."""
    x = np.arange(out_len, dtype=_F)
    s = _F(scale)
    if mode == "half_pixel":
        return (x + _F(0.5)) / s - _F(0.5)
    if mode == "pytorch_half_pixel":
        return (x + _F(0.5)) / s - _F(0.5) if out_len > 1 else np.zeros(out_len, _F)
    if mode == "align_corners":
        return np.zeros(out_len, _F) if out_len == 1 else x * _F(in_len - 1) / _F(out_len - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nn":
        return (x + _F(0.5)) / s
    raise ValueError(f"unsupported coordinate_transformation_mode {mode!r}")


def linear_axis(mode: str, out_len: int, in_len: int, scale: np.float32) -> LinearAxis:
    """ORT's ``SetupUpsampleBilinear`` for one axis (scale 1 maps i -> i, as ORT does)."""
    if _F(scale) == _F(1.0):
        v = np.arange(out_len, dtype=_F)
    else:
        v = original_coordinates(mode, out_len, in_len, scale)
    v = np.maximum(_F(0.0), np.minimum(v, _F(in_len - 1)))
    i1 = np.minimum(v.astype(np.intp), in_len - 1)  # v >= 0: truncation is floor
    i2 = np.minimum(i1 + 1, in_len - 1)
    d1 = np.abs(v - i1.astype(_F))
    d2 = np.abs(v - i2.astype(_F))
    same = i1 == i2
    d1[same] = _F(0.5)
    d2[same] = _F(0.5)
    return LinearAxis(i1=i1, i2=i2, d1=d1, d2=d2)


def _round_half_away(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """C's ``std::round`` (halves away from zero); exact for float32 inputs held in float64."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def nearest_axis(mode: str, nearest_mode: str, out_len: int, in_len: int, scale: np.float32) -> npt.NDArray[np.intp]:
    """ORT's nearest-mode source index of each output index (scale 1 maps i -> i)."""
    if _F(scale) == _F(1.0):
        return np.arange(out_len, dtype=np.intp)
    v = original_coordinates(mode, out_len, in_len, scale).astype(np.float64)
    if nearest_mode == "round_prefer_floor":
        half = v == np.trunc(v) + 0.5
        idx = np.where(half, np.floor(v), _round_half_away(v))
    elif nearest_mode == "round_prefer_ceil":
        idx = _round_half_away(v)  # ORT: std::round
    elif nearest_mode == "floor":
        idx = np.floor(v)
    elif nearest_mode == "ceil":
        idx = np.ceil(v)
    else:
        raise ValueError(f"unsupported nearest_mode {nearest_mode!r}")
    return np.clip(idx, 0, in_len - 1).astype(np.intp)
