"""Exact, shape-dynamic adaptive average pooling for ONNX graphs.

PaddlePaddle's adaptive average pool with output size k splits an axis of length H into bins
``[floor(i*H/k), ceil((i+1)*H/k))`` (bins may overlap when k does not divide H). ONNX has no
such op, and paddle2onnx only emits a fixed-kernel AveragePool, exact at one input size.

``replace_adaptive_pools`` swaps each such node for a subgraph that computes the bins from the
runtime shape (Shape -> integer Mul/Add/Div, Div on non-negative int64 is floor division) and,
per bin, Slice + ReduceMean; rows first, then columns. Averaging rows then columns of a
rectangular bin equals averaging the bin, so the result matches Paddle to float rounding at
every input size. k is small in practice (1, 2, 3, 4, 6), so this is 2k Slice/ReduceMean nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fastseg.convert.pir_program import AdaptivePool
from fastseg.errors import ConversionError


def _opset(model: onnx.ModelProto) -> int:
    return int(max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


class _Builder:
    """Collects the nodes and constants of one replacement subgraph (unique names by prefix)."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}/{hint}_{self._n}"

    def const(self, value: int) -> str:
        out = self.name("c")
        self.inits.append(numpy_helper.from_array(np.array([value], dtype=np.int64), out))
        return out

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def reduce_mean(self, x: str, axis: int) -> str:
        if self.opset >= 18:  # axes became an input in opset 18
            return self.node("ReduceMean", [x, self.const(axis)], keepdims=1)
        return self.node("ReduceMean", [x], axes=[axis], keepdims=1)

    def pool_axis(self, x: str, axis: int, k: int) -> str:
        """Adaptive mean over ``axis`` (2 or 3) of ``x`` into ``k`` bins, Paddle's boundaries."""
        if k == 1:
            return self.reduce_mean(x, axis)
        size = self.node("Slice", [self.node("Shape", [x]), self.const(axis), self.const(axis + 1)])
        parts = []
        for i in range(k):
            start = self.node("Div", [self.node("Mul", [size, self.const(i)]), self.const(k)])
            end_num = self.node("Add", [self.node("Mul", [size, self.const(i + 1)]), self.const(k - 1)])
            end = self.node("Div", [end_num, self.const(k)])
            part = self.node("Slice", [x, start, end, self.const(axis)])
            parts.append(self.reduce_mean(part, axis))
        return self.node("Concat", parts, axis=axis)


def replace_adaptive_pools(model: onnx.ModelProto, pools: Sequence[AdaptivePool]) -> onnx.ModelProto:
    """Replace the nodes producing each pool's output with the exact dynamic subgraph.

    Also drops ``value_info`` (it may hold the static shapes used to get through paddle2onnx)
    so shape inference recomputes it.

    Raises:
        ConversionError: a pool's output tensor is not produced by an (Global)AveragePool node.
    """
    graph = model.graph
    opset = _opset(model)
    by_output = {out: idx for idx, n in enumerate(graph.node) for out in n.output}
    new_nodes: dict[int, list[onnx.NodeProto]] = {}
    for pool in pools:
        idx = by_output.get(pool.onnx_output)
        if idx is None or graph.node[idx].op_type not in ("AveragePool", "GlobalAveragePool"):
            found = "nothing" if idx is None else graph.node[idx].op_type
            raise ConversionError(
                f"Adaptive pool {pool.onnx_output} came out of paddle2onnx as {found}, not AveragePool; "
                "this paddle2onnx version is not supported for dynamic shapes (try --fixed-shape HxW)."
            )
        old = graph.node[idx]
        if pool.output_hw == (1, 1) and old.op_type == "GlobalAveragePool":
            continue
        b = _Builder(f"adaptive_pool_{pool.ordinal}", opset)
        rows = b.pool_axis(old.input[0], 2, pool.output_hw[0])
        cols = b.pool_axis(rows, 3, pool.output_hw[1])
        b.nodes.append(helper.make_node("Identity", [cols], [pool.onnx_output], name=b.name("out")))
        new_nodes[idx] = b.nodes
        graph.initializer.extend(b.inits)
    rebuilt: list[onnx.NodeProto] = []
    for idx, n in enumerate(graph.node):
        rebuilt.extend(new_nodes.get(idx, [n]))
    del graph.node[:]
    graph.node.extend(rebuilt)
    del graph.value_info[:]
    return model
