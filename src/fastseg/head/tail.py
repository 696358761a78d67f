"""Find a graph's ``ArgMax(Resize(logits))`` tail and cut the graph before it.

Supported tail (anything else keeps the graph's own head):

    logits [N,C,h,w] float32 -> Resize(mode linear|nearest, opset >= 11, antialias 0,
        coordinate mode half_pixel|pytorch_half_pixel|align_corners|asymmetric|
        tf_half_pixel_for_nn, no axes/keep_aspect_ratio_policy) -> [Identity]*
        -> ArgMax(axis 1) -> [Cast | Identity]* -> the single graph output

The Resize's sizes/scales must be computable from the *shapes* of the graph input and of the
logits (Shape, Slice, Concat, Cast, ... on shapes, as exporters emit them). That small
subgraph is kept as JSON (``size_program``) and evaluated in numpy by ``size_expr.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastseg.head.interp import COORDINATE_MODES, NEAREST_MODES
from fastseg.head.size_expr import ONNX_DTYPES, INPUT, LOGITS, SIZE_OPS


class UnsupportedTail(Exception):
    """The graph's tail is not one the banded head reproduces exactly (the message says why)."""


@dataclass(frozen=True)
class Tail:
    """What the banded head needs to know about a graph's tail (JSON-serialisable fields)."""

    logits_name: str
    num_classes: int | None
    mode: str
    coordinate_mode: str
    nearest_mode: str
    select_last_index: bool
    keepdims: bool
    output_dtype: str  # numpy dtype name of the graph output
    size_program: dict[str, Any]  # see size_expr.evaluate_sizes


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def find_tail(model: Any) -> Tail:
    """Analyse an ``onnx.ModelProto`` (external data not needed).

    Raises:
        UnsupportedTail: the tail is not the supported pattern.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if len(graph.output) != 1:
        raise UnsupportedTail(f"the graph has {len(graph.output)} outputs (the banded head needs one)")
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1

    def node_of(name: str, why: str) -> Any:
        if name not in producer:
            raise UnsupportedTail(f"{why}: {name!r} is not computed by a node")
        return producer[name]

    out_vi = graph.output[0]
    elem = out_vi.type.tensor_type.elem_type
    if elem in (TensorProto.UNDEFINED, TensorProto.STRING, TensorProto.BOOL):
        raise UnsupportedTail(f"the output type {elem} is not numeric")
    output_dtype = helper.tensor_dtype_to_np_dtype(elem).name
    node = node_of(out_vi.name, "graph output")
    while node.op_type in ("Cast", "Identity") and node.domain in ("", "ai.onnx"):
        node = node_of(node.input[0], node.op_type)
    if node.op_type != "ArgMax":
        raise UnsupportedTail(f"the output comes from {node.op_type}, not ArgMax")
    argmax = _attrs(node)
    if argmax.get("axis", 0) not in (1, -3):
        raise UnsupportedTail(f"ArgMax over axis {argmax.get('axis', 0)}, not the class axis 1")
    node = node_of(node.input[0], "ArgMax input")
    while node.op_type == "Identity":
        node = node_of(node.input[0], "Identity")
    if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
        raise UnsupportedTail(f"ArgMax reads {node.op_type}, not Resize")
    if opset < 11:
        raise UnsupportedTail(f"Resize of opset {opset} (< 11) has other semantics")
    resize = _attrs(node)
    mode = resize.get("mode", "nearest")
    coord = resize.get("coordinate_transformation_mode", "half_pixel")
    nearest = resize.get("nearest_mode", "round_prefer_floor")
    if mode not in ("linear", "nearest"):
        raise UnsupportedTail(f"Resize mode {mode!r} (linear and nearest are reproduced)")
    if coord not in COORDINATE_MODES:
        raise UnsupportedTail(f"Resize coordinate_transformation_mode {coord!r}")
    if mode == "nearest" and nearest not in NEAREST_MODES:
        raise UnsupportedTail(f"Resize nearest_mode {nearest!r}")
    if resize.get("antialias", 0):
        raise UnsupportedTail("Resize with antialias=1")
    if resize.get("axes") or resize.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedTail("Resize with axes/keep_aspect_ratio_policy")
    logits = node.input[0]
    logits_info = _logits_info(model, logits)
    if logits_info.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise UnsupportedTail("the logits are not float32")
    inputs = list(node.input) + [""] * (4 - len(node.input))
    program = size_program(graph, scales=inputs[2], sizes=inputs[3], logits=logits)
    return Tail(
        logits_name=logits,
        num_classes=_channels(logits_info),
        mode=mode,
        coordinate_mode=coord,
        nearest_mode=nearest,
        select_last_index=bool(argmax.get("select_last_index", 0)),
        keepdims=bool(argmax.get("keepdims", 1)),
        output_dtype=output_dtype,
        size_program=program,
    )


def _value_info(graph: Any, name: str) -> Any | None:
    for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
        if vi.name == name:
            return vi
    return None


def _logits_info(model: Any, name: str) -> Any:
    """The ValueInfo (type, shape) of tensor ``name``, from the graph or by shape inference."""
    import onnx

    vi = _value_info(model.graph, name)
    if vi is None:
        vi = _value_info(onnx.shape_inference.infer_shapes(model).graph, name)
    if vi is None:
        raise UnsupportedTail(f"the type of {name!r} is unknown")
    return vi


def _channels(info: Any) -> int | None:
    dims = info.type.tensor_type.shape.dim
    return int(dims[1].dim_value) if len(dims) == 4 and dims[1].dim_value > 0 else None


_SHAPE_KEEPING = frozenset({"QuantizeLinear", "DequantizeLinear"})


def size_program(graph: Any, *, scales: str, sizes: str, logits: str) -> dict[str, Any]:
    """The nodes computing the Resize's ``scales``/``sizes``, as JSON for ``size_expr``.

    Raises:
        UnsupportedTail: they depend on a tensor's values (not just shapes) or on an op
            ``size_expr`` does not evaluate.
    """
    from onnx import numpy_helper

    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}
    graph_inputs = [i.name for i in graph.input if i.name not in initializers]
    if not graph_inputs:
        raise UnsupportedTail("the graph has no input")
    nodes: list[dict[str, Any]] = []
    constants: dict[str, Any] = {}
    seen: set[str] = set()

    def shape_source(name: str) -> str:
        """The tensor whose shape ``name`` has: through QuantizeLinear/DequantizeLinear, which
        keep shapes (an int8 QDQ graph takes ``Shape`` of the dequantized input)."""
        while (node := producer.get(name)) is not None and node.op_type in _SHAPE_KEEPING and node.domain in ("", "ai.onnx"):
            name = node.input[0]
        return name

    def visit(name: str, *, shape_of: bool = False) -> None:
        if shape_of:
            name = shape_source(name)
        if not name or name in seen:
            return
        if shape_of and name in (logits, graph_inputs[0]):
            return  # only its shape is read: known at run time
        seen.add(name)
        if name in initializers:
            constants[name] = _encode(numpy_helper.to_array(initializers[name]))
            return
        node = producer.get(name)
        if node is None:
            raise UnsupportedTail(f"the Resize size depends on {name!r}, which is not a constant")
        if node.op_type not in SIZE_OPS or node.domain not in ("", "ai.onnx"):
            raise UnsupportedTail(f"the Resize size is computed with {node.op_type} (not evaluated here)")
        attrs = _attrs(node)
        if node.op_type == "Cast" and attrs.get("to") not in ONNX_DTYPES:
            raise UnsupportedTail(f"a Cast to element type {attrs.get('to')} in the size computation")
        if node.op_type == "Constant":
            if "value" not in attrs:
                raise UnsupportedTail("a Constant without a tensor value in the size computation")
            constants[name] = _encode(numpy_helper.to_array(attrs.pop("value")))
            return
        for i in node.input:
            visit(i, shape_of=node.op_type == "Shape")
        if node.op_type == "Shape":
            src = shape_source(node.input[0])
            if src not in (logits, graph_inputs[0]):
                raise UnsupportedTail(f"the Resize size reads the shape of {src!r} (an inner tensor)")
            inputs = [LOGITS if src == logits else INPUT]
        else:
            inputs = list(node.input)
        nodes.append({"op": node.op_type, "inputs": inputs, "outputs": list(node.output), "attrs": _plain(attrs)})

    visit(scales)
    visit(sizes)
    if not scales and not sizes:
        raise UnsupportedTail("Resize has neither scales nor sizes")
    return {"nodes": nodes, "constants": constants, "scales": scales, "sizes": sizes}


def _encode(array: Any) -> dict[str, Any]:
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": array.ravel().tolist()}


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, (int, float, str)):
            out[key] = value
        elif isinstance(value, Iterable):
            out[key] = list(value)
        else:
            raise UnsupportedTail(f"attribute {key!r} of a size op is not a plain value")
    return out


def cut_body(model: Any, tail: Tail) -> Any:
    """A copy of ``model`` whose single output is the logits, with the tail's nodes pruned."""
    import onnx

    vi = _logits_info(model, tail.logits_name)
    body = onnx.ModelProto()
    body.CopyFrom(model)
    graph = body.graph
    needed = {tail.logits_name}
    keep = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_subgraph_inputs(node))
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    kept_inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    kept_inputs = [i for i in graph.input if i.name in needed]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.output[:]
    out = graph.output.add()
    out.CopyFrom(vi)
    kept_vi = [v for v in graph.value_info if v.name in needed and v.name != tail.logits_name]
    del graph.value_info[:]
    graph.value_info.extend(kept_vi)
    return body


def _subgraph_inputs(node: Any) -> set[str]:
    """Names a control-flow node's subgraphs read from the outer scope (all of them, to be safe)."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in list(attr.g.node if attr.HasField("g") else []) + [n for g in attr.graphs for n in g.node]:
            names.update(i for i in sub.input if i)
            names.update(_subgraph_inputs(sub))
    return names


def load_for_analysis(path: Path) -> Any:
    """The model's graph without its external weights (analysis reads no weights)."""
    import onnx

    return onnx.load(str(path), load_external_data=False)
