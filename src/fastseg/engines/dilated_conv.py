"""Large-dilation 3x3 convolutions as dense ones on sub-images, for OpenVINO bf16 on AMX.

oneDNN's AMX bf16 convolution is slow on large dilations. On Deeplabv3-R50 at 512x1024 (AMX
Xeon, 2 threads, OpenVINO 2026.4 per-layer counters) three of its dilation 4-36 convolutions
took 3,196 ms in bf16 against 1,266 ms in f32, which made bf16 slower than f32 overall.

A 3x3 convolution with dilation d (stride 1, padding d) reads, for output (h, w), inputs at
(h + i*d, w + j*d), i, j in {-1, 0, 1}: only pixels of the same phase (h mod d, w mod d). So it
equals a dense 3x3 convolution (dilation 1, padding 1) applied separately to each of the d*d
phase sub-images ``x[a::d, b::d]``, interleaved back. In ONNX: zero-pad H and W up to multiples
of d (the zeros are the padding the dilated convolution reads anyway), ``SpaceToDepth(d)``,
the d*d phases moved into the batch axis, the same Conv with dilation 1, the phases moved back,
``DepthToSpace(d, DCR)``, and a Slice to the original size. The arithmetic per output is the
same nine products; only the order of the sum can differ (float rounding).

Measured on that Xeon, 512x1024, OpenVINO bf16 (f32 in brackets), minimum dilation 4:
Deeplabv3-R50 4,996 -> 2,500 ms (f32 4,967 -> 5,025), Deeplabv3-R101 4,822 -> 2,940
(6,013 -> 7,246), Deeplabv3_Plus-R101 2,419 -> 2,358 (5,033 -> 6,682; its depthwise ASPP
rewritten too, see below). f32 loses, so the OpenVINO engine applies this to bf16 sessions on
AMX CPUs only (the only CPU it was measured on).
Dense (group 1) convolutions only: Deeplabv3_Plus's ASPP is depthwise (group 2048, dilations
12-36), runs on oneDNN's depthwise kernels rather than AMX, and rewritten with the rest it made
Deeplabv3_Plus-R50 slower (bf16 at 1024x2048: 9,327 vs 6,749 ms, one pair on a noisy machine).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_DILATION = 4
"""Dilation 2 gained nothing more on Deeplabv3-R50 (2,453 vs 2,500 ms) and the 3x3s at
dilation 2 ran at ordinary AMX speed in the profile; 4 keeps the rewrite to where it paid."""


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _weight_shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the constant tensors (initializers and Constant nodes)."""
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    return shapes


def _matches(node: Any, weights: dict[str, tuple[int, ...]], min_dilation: int) -> int:
    """The dilation when ``node`` is a dense (group 1) 3x3, stride-1, 'same'-padded Conv with
    equal dilations >= ``min_dilation`` and constant 4-D weights; else 0."""
    if node.op_type != "Conv" or len(node.input) < 2 or len(weights.get(node.input[1], ())) != 4:
        return 0
    a = _attrs(node)
    dilation = list(a.get("dilations", [1, 1]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or list(a.get("kernel_shape", weights[node.input[1]][2:])) != [3, 3]:
        return 0
    d = dilation[0]
    ok = list(a.get("strides", [1, 1])) == [1, 1] and dilation == [d, d] and list(a.get("pads", [0] * 4)) == [d] * 4
    dense = int(a.get("group", 1)) == 1  # grouped/depthwise ones run on oneDNN's dw kernels, not AMX: nothing to gain
    return d if ok and dense and d >= min_dilation else 0


def dilated_convs_as_space_to_batch(model: Any, min_dilation: int = MIN_DILATION) -> int:
    """Rewrite ``model``'s qualifying dilated convolutions in place (see the module doc); return
    how many. Shapes stay dynamic: the padding and the reshapes are computed from the input."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = _weight_shapes(graph)
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        d = _matches(node, weights, min_dilation)
        if not d:
            nodes.append(node)
            continue
        a = _attrs(node)
        group = int(a.get("group", 1))
        c_out, c_in = weights[node.input[1]][0], weights[node.input[1]][1] * group
        p = f"_fastseg_s2b{count}_"
        count += 1
        constants = {"two": [2], "four": [4], "d": [d], "pad_nchw": [0, 0, 0, 0, 0, 0], "batch_c": [-1, c_in],
                     "depth_c": [-1, d * d * c_out], "zero2": [0, 0], "axes_hw": [2, 3]}
        graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.int64), p + k) for k, v in constants.items())
        x = node.input[0]
        nodes += [
            helper.make_node("Shape", [x], [p + "shape"]),
            helper.make_node("Slice", [p + "shape", p + "two", p + "four"], [p + "hw"]),
            helper.make_node("Mod", [p + "hw", p + "d"], [p + "rem"]),
            helper.make_node("Sub", [p + "d", p + "rem"], [p + "short"]),
            helper.make_node("Mod", [p + "short", p + "d"], [p + "pad_hw"]),  # 0 when already a multiple
            helper.make_node("Concat", [p + "pad_nchw", p + "pad_hw"], [p + "pads"], axis=0),
            helper.make_node("Pad", [x, p + "pads"], [p + "padded"]),
            helper.make_node("SpaceToDepth", [p + "padded"], [p + "phases"], blocksize=d),
            helper.make_node("Shape", [p + "phases"], [p + "phases_shape"]),
            helper.make_node("Slice", [p + "phases_shape", p + "two", p + "four"], [p + "small_hw"]),
            helper.make_node("Concat", [p + "batch_c", p + "small_hw"], [p + "batch_shape"], axis=0),
            helper.make_node("Reshape", [p + "phases", p + "batch_shape"], [p + "batched"]),
            helper.make_node("Conv", [p + "batched", *node.input[1:]], [p + "conv"], name=node.name,
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group),
            helper.make_node("Concat", [p + "depth_c", p + "small_hw"], [p + "depth_shape"], axis=0),
            helper.make_node("Reshape", [p + "conv", p + "depth_shape"], [p + "depth"]),
            helper.make_node("DepthToSpace", [p + "depth"], [p + "full"], blocksize=d, mode="DCR"),
            helper.make_node("Slice", [p + "full", p + "zero2", p + "hw", p + "axes_hw"], list(node.output)),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count
