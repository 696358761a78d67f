"""Fold an all-MLP decoder's 1x1 fuse convolution into its per-stage projections (SegFormer).

SegFormer's head projects each encoder stage to E channels (MatMul + bias on tokens), lays the
tokens out as NCHW, upsamples stages 2-4 to 1/4 resolution (bilinear), concatenates the four
(4E channels) and mixes them with a 1x1 convolution (E x 4E) before BatchNorm + ReLU. Every step
between a stage's MatMul and that convolution is linear and acts on channels alone or on space
alone, so the convolution's k-th E x E slice F_k can be applied to the projection instead:

    conv(concat_k(up(x_k W_k + b_k))) = sum_k up(x_k (W_k F_k^T) + b_k F_k^T)

(bilinear and nearest weights sum to 1, so a constant passes through ``up`` unchanged). W_k F_k^T
has W_k's shape, so the fold deletes the convolution: 2 x (H/4 x W/4) x 4E x E FLOPs, 618 of
SegFormer-B2's 1407 GFLOPs at 1024x2048, and its 4E-channel input (1.5 GiB there, plus ONNX
Runtime's reordered copy of it). The sum is the same linear map evaluated in another order, so
results differ by float rounding only; the converter verifies the folded graph against Paddle
like every conversion.

The pattern is matched exactly (op types, 1x1 kernel, group 1, no padding, concat on channels,
E output channels, tensors on the path used by nothing else but ``Shape``); anything else is
left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_SAME_SHAPE_OPS = ("Identity",)
_UPSAMPLE_MODES = (b"linear", b"nearest")


@dataclass(frozen=True)
class _Branch:
    matmul: Any  # onnx NodeProto
    add: Any
    bias_input: int  # which input of ``add`` is the bias
    weight: npt.NDArray[np.float32]  # [C_k, E]
    bias: npt.NDArray[np.float32]  # [E]


@dataclass(frozen=True)
class _Plan:
    conv: Any
    concat: Any
    between: tuple[Any, ...]  # Identity nodes between concat and conv
    branches: tuple[_Branch, ...]
    fuse: npt.NDArray[np.float32]  # [E, k*E]
    conv_bias: npt.NDArray[np.float32] | None


class GraphIndex:
    """Producer/consumer maps and constant lookup of one ONNX graph."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self._numpy_helper = numpy_helper
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def const(self, name: str) -> npt.NDArray[Any] | None:
        """The value of an initializer or Constant node output, else None."""
        if name in self.inits:
            return np.asarray(self._numpy_helper.to_array(self.inits[name]))
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return np.asarray(self._numpy_helper.to_array(attr.t))
        return None

    def only_used_by(self, tensor: str, node: Any) -> bool:
        """``tensor`` feeds ``node`` and otherwise only ``Shape`` ops, and is no graph output."""
        users = self.consumers.get(tensor, [])
        return tensor not in self.outputs and node in users and all(u is node or u.op_type == "Shape" for u in users)

    def up_through_identity(self, tensor: str, user: Any) -> tuple[Any | None, list[Any]]:
        """The first non-Identity producer above ``tensor`` (fed only to ``user``), and the Identities passed."""
        passed: list[Any] = []
        while True:
            if not self.only_used_by(tensor, user):
                return None, passed
            node = self.producer.get(tensor)
            if node is None or node.op_type not in _SAME_SHAPE_OPS:
                return node, passed
            passed.append(node)
            tensor, user = node.input[0], node


def node_attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _is_pointwise_conv(conv: Any, weight: npt.NDArray[Any] | None) -> bool:
    return (
        weight is not None
        and weight.ndim == 4
        and weight.shape[2:] == (1, 1)
        and node_attr(conv, "group", 1) == 1
        and all(v == 1 for v in node_attr(conv, "strides", [1, 1]))
        and all(v == 1 for v in node_attr(conv, "dilations", [1, 1]))
        and all(v == 0 for v in node_attr(conv, "pads", [0, 0, 0, 0]))
    )


def _branch(g: GraphIndex, tensor: str, concat: Any, channels: int) -> _Branch | None:
    """Match ``MatMul -> Add(bias) -> Transpose[0,2,1] -> Reshape -> [Resize] -> concat`` above ``tensor``."""
    node, _ = g.up_through_identity(tensor, concat)
    if node is not None and node.op_type == "Resize":
        if node_attr(node, "mode", b"nearest") not in _UPSAMPLE_MODES:
            return None
        node, _ = g.up_through_identity(node.input[0], node)
    if node is None or node.op_type != "Reshape":
        return None
    node, _ = g.up_through_identity(node.input[0], node)
    if node is None or node.op_type != "Transpose" or list(node_attr(node, "perm", [])) != [0, 2, 1]:
        return None
    add, _ = g.up_through_identity(node.input[0], node)
    if add is None or add.op_type != "Add":
        return None
    for bias_input in (1, 0):
        bias = g.const(add.input[bias_input])
        if bias is not None and bias.size == channels:
            break
    else:
        return None
    matmul, _ = g.up_through_identity(add.input[1 - bias_input], add)
    if matmul is None or matmul.op_type != "MatMul":
        return None
    weight = g.const(matmul.input[1])
    if weight is None or weight.ndim != 2 or weight.shape[1] != channels or g.const(matmul.input[0]) is not None:
        return None
    return _Branch(matmul, add, bias_input, weight.astype(np.float32), bias.reshape(-1).astype(np.float32))


def _plan(g: GraphIndex, conv: Any) -> _Plan | None:
    weight = g.const(conv.input[1]) if len(conv.input) > 1 else None
    if not _is_pointwise_conv(conv, weight):
        return None
    assert weight is not None
    concat, between = g.up_through_identity(conv.input[0], conv)
    if concat is None or concat.op_type != "Concat" or node_attr(concat, "axis", 0) != 1:
        return None
    k, out_ch, in_ch = len(concat.input), weight.shape[0], weight.shape[1]
    if k < 2 or in_ch != k * out_ch:  # each branch must keep E channels, so reshapes stay valid
        return None
    branches = [_branch(g, name, concat, out_ch) for name in concat.input]
    if any(b is None for b in branches) or len({id(b.matmul) for b in branches if b}) != k:
        return None
    bias = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    return _Plan(
        conv, concat, tuple(between), tuple(b for b in branches if b is not None),
        weight[:, :, 0, 0].astype(np.float32), None if bias is None else bias.astype(np.float32),
    )


def _apply(g: GraphIndex, plan: _Plan) -> None:
    from onnx import helper, numpy_helper

    out_ch = plan.fuse.shape[0]
    for k, branch in enumerate(plan.branches):
        fuse_k = plan.fuse[:, k * out_ch : (k + 1) * out_ch].astype(np.float64)  # [E_out, E]
        weight = branch.weight.astype(np.float64) @ fuse_k.T
        bias = branch.bias.astype(np.float64) @ fuse_k.T
        if k == 0 and plan.conv_bias is not None:
            bias = bias + plan.conv_bias.astype(np.float64)
        w_name, b_name = f"{branch.matmul.output[0]}.folded_w", f"{branch.add.output[0]}.folded_b"
        g.graph.initializer.extend([
            numpy_helper.from_array(weight.astype(np.float32), w_name),
            numpy_helper.from_array(bias.astype(np.float32), b_name),
        ])
        branch.matmul.input[1] = w_name
        branch.add.input[branch.bias_input] = b_name
    nodes = list(g.graph.node)
    at = nodes.index(plan.conv)
    total = helper.make_node("Sum", list(plan.concat.input), [plan.conv.output[0]], name=f"{plan.conv.name}.folded_sum")
    g.graph.node.insert(at, total)
    for node in (plan.conv, plan.concat, *plan.between):
        g.graph.node.remove(node)


def _names_used(graph: Any) -> set[str]:
    """Every tensor name a node of ``graph`` reads, inside its subgraphs (If/Loop bodies) too."""
    used: set[str] = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                used |= _names_used(sub)
    return used


def drop_dead_nodes(graph: Any) -> None:
    """Remove nodes none of whose outputs is used (a fold or rewrite orphans the old nodes).

    Names read inside If/Loop bodies count as used: paddle2onnx's bodies read outer Constants.
    """
    while True:
        used = _names_used(graph) | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def fold_decoder_fuse(model: Any) -> tuple[Any, int]:
    """Fold every matching decoder fuse convolution of ``model`` (edited in place); return it and the count."""
    folded = 0
    g = GraphIndex(model.graph)
    for conv in [n for n in model.graph.node if n.op_type == "Conv"]:
        plan = _plan(g, conv)
        if plan is not None:
            _apply(g, plan)
            folded += 1
            g = GraphIndex(model.graph)  # the fold rewired the graph
    if folded:
        drop_dead_nodes(model.graph)
    return model, folded
