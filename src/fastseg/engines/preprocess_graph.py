"""Pre-processing inside the engine: the model's normalisation prepended to its graph.

The fused graph takes the decoded (and, where the model resizes, resized) image as it comes
from OpenCV: uint8 BGR, NHWC ``[N, H, W, 3]``; it lays the batch out NCHW and reorders channels
(still uint8), casts, applies ``pixel * a + b`` per channel (the very coefficients
``fastseg.processing`` uses), then runs the network. For OpenVINO the same ops run in NHWC and
the layout comes last (``layout_last``), where its CPU plugin folds it away. The engine's threads do the work the numpy path did on
one core, and no float32 copy of the batch is made in Python. ONNX Runtime computes exactly
the numpy path's values (same float32 ops in the same order); OpenVINO to float32 rounding (~3e-7 relative).

One ONNX prefix for both engines: OpenVINO's PrePostProcessor was measured first, and its
channel reversal (``convert_color``, ``reverse_channels`` or a custom Gather) on a u8 NHWC
input did not change the output in OpenVINO 2026.4 (logits 2.77 away from the numpy path on
the real PP-HumanSegV2-Lite), while the same Gather in the ONNX graph is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.errors import ModelDirError
from fastseg.model_dir import PreprocessSpec
from fastseg.processing import normalize_coefficients

FUSED_INPUT = "image_bgr_u8"
"""The fused graph's input: uint8 [N, H, W, 3], BGR as OpenCV decodes."""


@dataclass(frozen=True)
class FusedPreprocess:
    """What the prepended graph computes: per channel ``x * scale + shift`` (network channel
    order), after reordering BGR to RGB when ``to_rgb``."""

    scale: tuple[float, float, float]
    shift: tuple[float, float, float]
    to_rgb: bool


def fused_preprocess(spec: PreprocessSpec) -> FusedPreprocess:
    """What to prepend for ``spec``: the numpy path's very coefficients (``normalize_coefficients``)."""
    a, b = normalize_coefficients(spec)
    return FusedPreprocess(
        scale=(float(a[0]), float(a[1]), float(a[2])), shift=(float(b[0]), float(b[1]), float(b[2])), to_rgb=spec.to_rgb
    )


def fused_model_bytes(
    model_path: Path, pre: FusedPreprocess, edit: Callable[[Any], object] | None = None, *, layout_last: bool = False
) -> bytes:
    """``model_path`` with ``pre`` prepended, after ``edit`` (an in-place graph rewrite, when
    given), serialised for an engine to load. ``layout_last``: normalise in NHWC and transpose
    to NCHW last, right before the network (OpenVINO; the values are the same).

    Raises:
        ModelDirError: the model's first input is not float32 [N,3,H,W], or the graph is too
            large to serialise in memory (over 2 GB).
    """
    import onnx

    model = onnx.load(str(model_path))
    if edit is not None:
        edit(model)
    _prepend(model, model_path, pre, layout_last=layout_last)
    try:
        return bytes(model.SerializeToString())
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ModelDirError(f"{model_path} is too large to rewrite in memory ({exc}).") from exc


def _prepend(model: Any, model_path: Path, pre: FusedPreprocess, *, layout_last: bool) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        raise ModelDirError(f"{model_path} has no input to feed.")
    first = inputs[0]
    dims = first.type.tensor_type.shape.dim
    if first.type.tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4 or dims[1].dim_value not in (0, 3):
        raise ModelDirError(f"{model_path}: pre-processing can be fused only for a float32 [N,3,H,W] input.")
    a, b = np.asarray(pre.scale, dtype=np.float32), np.asarray(pre.shift, dtype=np.float32)
    prefix = "_fastseg_pre_"
    # ONNX Runtime: uint8 first, the transpose and the channel reorder move 1 byte per value, not
    # 4 (casting first made PP-LiteSeg-T's ORT end to end 60 ms slower at 1024x2048); then the
    # numpy path's own float32 ops in its order, x * a + b, broadcast over the channel axis.
    # OpenVINO (layout_last): the same ops in NHWC, the transpose last, where the CPU plugin
    # folds it into the reorder its first convolution makes back to NHWC (docs/engines.md).
    channel = 3 if layout_last else 1
    nodes, current = [], FUSED_INPUT
    if not layout_last:
        nodes.append(helper.make_node("Transpose", [current], [prefix + "nchw"], perm=[0, 3, 1, 2]))
        current = prefix + "nchw"
    extra: list[Any] = []
    if pre.to_rgb:
        nodes.append(helper.make_node("Gather", [current, prefix + "bgr2rgb"], [prefix + "rgb"], axis=channel))
        extra.append(numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), prefix + "bgr2rgb"))
        current = prefix + "rgb"
    normalised = prefix + "normalised" if layout_last else first.name
    nodes += [
        helper.make_node("Cast", [current], [prefix + "f32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [prefix + "f32", prefix + "a"], [prefix + "scaled"]),
        helper.make_node("Add", [prefix + "scaled", prefix + "b"], [normalised]),
    ]
    if layout_last:
        nodes.append(helper.make_node("Transpose", [normalised], [first.name], perm=[0, 3, 1, 2]))
    shape = (1, 1, 1, 3) if layout_last else (1, 3, 1, 1)
    extra += [numpy_helper.from_array(a.reshape(shape), prefix + "a"), numpy_helper.from_array(b.reshape(shape), prefix + "b")]
    fused_input = helper.make_tensor_value_info(FUSED_INPUT, TensorProto.UINT8, [_dim(dims[0]), _dim(dims[2]), _dim(dims[3]), 3])
    position = list(graph.input).index(first)
    graph.input.remove(first)
    graph.input.insert(position, fused_input)
    for node in reversed(nodes):
        graph.node.insert(0, node)
    graph.initializer.extend(extra)


def _dim(dim: Any) -> int | str | None:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return str(dim.dim_param) or None
