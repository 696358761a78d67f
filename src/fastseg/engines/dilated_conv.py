"""Large-dilation 3x3 convolutions as nine shifted 1x1 convolutions, for OpenVINO bf16 on AMX.

oneDNN's AMX bf16 convolution is slow on large dilations. On Deeplabv3-R50 at 1024x2048 (AMX
Xeon, 2 threads, OpenVINO 2026.4 per-layer counters) its three ASPP convolutions (2048 -> 256
channels, dilations 12, 24, 36, 128x256) took 2.4, 4.2 and 6.3 s of a 15.8 s bf16 run:
49-131 GFLOP/s, where a 1x1 convolution of the same arithmetic ran at ~1.1 TFLOP/s.

A 3x3 convolution with dilation d (stride 1, padding d) is the sum of its nine taps: tap (i, j)
multiplies the input at (h + (i-1)d, w + (j-1)d) by the 1x1 weights ``W[:, :, i, j]``. Because
a 1x1 convolution commutes with a shift, each tap is computed unshifted (a dense 1x1
convolution, which AMX runs at full speed) and its output is shifted by (-(i-1)d, -(j-1)d) with
zeros coming in (``Pad`` on one side, ``Slice`` off the other; a shift of d >= the size leaves
zeros, as the dilated convolution reads only its padding there), then the nine are summed. The
arithmetic per output is the same nine dot products; only the order of the sum differs (float
rounding; bf16 rounds each tap's output once more before the sum).

Measured on that Xeon at 1024x2048, OpenVINO bf16, one process, alternating, medians of 4-5:
Deeplabv3-R50 7,062 -> 5,395 ms and Deeplabv3-R101 10,302 -> 8,133 against the phase-image
rewrite this replaces (dense 3x3 convolutions on the d*d phase sub-images, session 7), and
Deeplabv3_Plus-R101 7,249 -> 7,081 (noise: only its backbone's dilations 4-16 are dense).
Session 7 measured the phase rewrite itself against the graph as it is: R50 4,996 -> 2,500 ms
at 512x1024. ONNX Runtime fp32 loses with it (Deeplabv3-R50 512x1024: 3,392 -> 4,220 ms), and
f32 lost with the phase rewrite, and bf16 on AVX512-BF16 without AMX loses with the taps
("AMD EPYC" Zen 5, flags avx2 avx512f avx512_bf16 avx512_vnni, 2 cores, 1024x2048:
Deeplabv3-R50 3,260 -> 3,616 ms, R101 4,627 -> 5,142), so only bf16 sessions on AMX CPUs
apply it. Dense (group 1) convolutions only: a depthwise one (Deeplabv3_Plus's ASPP) runs on
oneDNN's depthwise kernels, not AMX, and its taps would be per-channel scalings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_DILATION = 4
"""Dilation 2 runs at ordinary AMX speed (session 7's profile; the phase rewrite gained nothing
there: 2,453 vs 2,500 ms on R50 at 512x1024). From 4 up the taps were as fast as the phase
images (R50, 1024x2048: 5,480 ms with the taps from 4, 5,586 from 8, 5,505 from 12, medians);
from 2 they lost on R101, whose 23 dilation-2 convolutions they add (10,499 vs 9,499 ms)."""

_TO_END = 2**62
"""A Slice end that means 'to the end of the axis', whatever its size."""


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constants(graph: Any) -> dict[str, Any]:
    """The constant tensors (initializers and Constant nodes) by name, as TensorProtos."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    return tensors


def _matches(node: Any, constants: dict[str, Any], min_dilation: int) -> int:
    """The dilation when ``node`` is a dense (group 1) 3x3, stride-1, 'same'-padded Conv with
    equal dilations >= ``min_dilation`` and constant 4-D weights; else 0."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in constants:
        return 0
    dims = list(constants[node.input[1]].dims)
    if len(dims) != 4 or (len(node.input) > 2 and node.input[2] and node.input[2] not in constants):
        return 0
    a = _attrs(node)
    dilation = list(a.get("dilations", [1, 1]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or list(a.get("kernel_shape", dims[2:])) != [3, 3]:
        return 0
    d = dilation[0]
    ok = list(a.get("strides", [1, 1])) == [1, 1] and dilation == [d, d] and list(a.get("pads", [0] * 4)) == [d] * 4
    dense = int(a.get("group", 1)) == 1  # grouped/depthwise ones run on oneDNN's dw kernels, not AMX: nothing to gain
    return d if ok and dense and d >= min_dilation else 0


def _shift(tap: str, out: str, i: int, j: int, d: int, axes: str) -> tuple[list[Any], dict[str, list[int]]]:
    """Nodes moving ``tap`` by (-(i-1)d, -(j-1)d) with zeros in: pad one side, slice the other."""
    from onnx import helper

    pads = [0, 0, d * (i == 0), d * (j == 0), 0, 0, d * (i == 2), d * (j == 2)]
    starts = [d * (i == 2), d * (j == 2)]
    ends = [-d if i == 0 else _TO_END, -d if j == 0 else _TO_END]
    nodes = [
        helper.make_node("Pad", [tap, tap + "_pads"], [tap + "_padded"]),
        helper.make_node("Slice", [tap + "_padded", tap + "_starts", tap + "_ends", axes], [out]),
    ]
    return nodes, {tap + "_pads": pads, tap + "_starts": starts, tap + "_ends": ends}


def dilated_convs_as_shifted_taps(model: Any, min_dilation: int = MIN_DILATION) -> int:
    """Rewrite ``model``'s qualifying dilated convolutions in place (see the module doc); return
    how many. Shapes stay dynamic: only the shifts (multiples of d) are constants."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = _constants(graph)
    nodes: list[Any] = []
    replaced: set[str] = set()
    count = 0
    for node in graph.node:
        d = _matches(node, constants, min_dilation)
        if not d:
            nodes.append(node)
            continue
        weights = numpy_helper.to_array(constants[node.input[1]])
        p = f"_fastseg_taps{count}_"
        count += 1
        replaced.add(node.input[1])
        ints: dict[str, list[int]] = {p + "axes_hw": [2, 3]}
        terms = []
        for i in range(3):
            for j in range(3):
                tap = f"{p}tap{3 * i + j}"
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weights[:, :, i, j, None, None]), tap + "_w"))
                nodes.append(helper.make_node("Conv", [node.input[0], tap + "_w"], [tap], kernel_shape=[1, 1], name=tap))
                if (i, j) == (1, 1):
                    terms.append(tap)
                    continue
                shift_nodes, shift_ints = _shift(tap, tap + "_shifted", i, j, d, p + "axes_hw")
                nodes += shift_nodes
                ints.update(shift_ints)
                terms.append(tap + "_shifted")
        graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in ints.items())
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(constants[node.input[2]]).reshape(1, -1, 1, 1)
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(bias), p + "bias"))
            nodes += [helper.make_node("Sum", terms, [p + "sum"]), helper.make_node("Add", [p + "sum", p + "bias"], list(node.output), name=node.name)]
        else:
            nodes.append(helper.make_node("Sum", terms, list(node.output), name=node.name))
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        still_used = {name for n in graph.node for name in n.input}
        dropped = replaced - still_used
        kept = [t for t in graph.initializer if t.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        inputs = [v for v in graph.input if v.name not in dropped]  # IR < 4 lists initializers as inputs too
        del graph.input[:]
        graph.input.extend(inputs)
    return count
