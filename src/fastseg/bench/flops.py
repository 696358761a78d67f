"""FLOP counting from the ONNX graph at the benchmark size.

Convention: 1 multiply-accumulate (MAC) = 2 FLOPs. Counted for Conv, ConvTranspose, MatMul and
Gemm after shape inference; other ops (elementwise, pooling, softmax, resize) are not counted, as
in most papers' GFLOPs tables. onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.errors import MissingDependencyError


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of the counted ops; ``unresolved`` lists nodes whose shapes stayed unknown."""

    macs: int
    by_op: Mapping[str, int]
    unresolved: tuple[str, ...]

    @property
    def gflops(self) -> float:
        """GFLOPs with the 1 MAC = 2 FLOPs convention."""
        return 2.0 * self.macs / 1e9


def count_macs(model: Any, *, input_shape: Sequence[int], measure_unresolved: bool = True) -> MacCount:
    """Count Conv/ConvTranspose/MatMul/Gemm MACs of an ONNX model at a fixed input shape.

    Shapes come from ONNX shape inference (with data propagation). paddle2onnx graphs compute
    many Reshape targets from ``Shape`` ops that inference cannot follow; with
    ``measure_unresolved`` the remaining nodes' shapes are read from one un-optimised ONNX
    Runtime run with its profiler on (every node event records its input/output shapes).

    Args:
        model: an ``onnx.ModelProto`` or a path to a .onnx file.
        input_shape: the first graph input's shape, e.g. (1, 3, 1024, 2048).
        measure_unresolved: run the model once to resolve what inference could not.

    Raises:
        MissingDependencyError: the ``onnx`` package is not installed.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError as exc:  # pragma: no cover - onnx is in the convert extra
        raise MissingDependencyError("Counting GFLOPs needs onnx: pip install 'fastseg-ort[convert]'.") from exc
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    proto = _copy_model(proto)
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"fastseg_node_{i}"
    init_names = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in init_names]
    dims = graph_inputs[0].type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    inferred = shape_inference.infer_shapes(proto, data_prop=True)
    shapes: dict[str, list[int] | None] = {}

    def _shape(vi: Any) -> list[int] | None:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            return None
        out = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return None if any(v <= 0 for v in out) else out

    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = _shape(vi)
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    counted = [n for n in inferred.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")]
    pending = [n for n in counted if _node_macs(n, [shapes.get(i) for i in n.input], shapes.get(n.output[0])) is None]
    measured: dict[str, tuple[list[list[int] | None], list[int] | None]] = {}
    if pending and measure_unresolved:
        measured = _profiled_shapes(proto, graph_inputs[0].name, input_shape)
    by_op: dict[str, int] = {}
    unresolved: list[str] = []
    for node in counted:
        ins = [shapes.get(n) for n in node.input]
        out = shapes.get(node.output[0])
        macs = _node_macs(node, ins, out)
        if macs is None and node.name in measured:
            m_ins, m_out = measured[node.name]
            macs = _node_macs(node, [a if a is not None else b for a, b in zip(ins, m_ins + [None] * len(ins))], out or m_out)
        if macs is None:
            unresolved.append(node.name)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return MacCount(macs=sum(by_op.values()), by_op=by_op, unresolved=tuple(unresolved))


def _profiled_shapes(
    proto: Any, input_name: str, input_shape: Sequence[int]
) -> dict[str, tuple[list[list[int] | None], list[int] | None]]:
    """Node name -> (input shapes, first output shape) from one profiled, un-optimised ORT run."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fastseg-flops-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.enable_profiling = True
        so.log_severity_level = 3  # no "Removing initializer" chatter from an un-optimised load
        so.profile_file_prefix = str(Path(tmp) / "shapes")
        session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        session.run(None, {input_name: np.zeros(tuple(int(v) for v in input_shape), np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    out: dict[str, tuple[list[list[int] | None], list[int] | None]] = {}
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") != "Node" or "input_type_shape" not in args:
            continue
        name = str(ev.get("name", "")).removesuffix("_kernel_time")
        ins = [next(iter(d.values())) if d else None for d in args["input_type_shape"]]
        outs = [next(iter(d.values())) if d else None for d in args.get("output_type_shape", [])]
        out[name] = (ins, outs[0] if outs else None)
    return out


def _copy_model(proto: Any) -> Any:
    copy = type(proto)()
    copy.CopyFrom(proto)
    return copy


def _node_macs(node: Any, ins: list[list[int] | None], out: list[int] | None) -> int | None:
    attrs = {a.name: a for a in node.attribute}
    group = int(attrs["group"].i) if "group" in attrs else 1
    if node.op_type == "Conv":
        w = ins[1] if len(ins) > 1 else None
        if out is None or w is None:
            return None
        return int(np.prod(out)) * int(np.prod(w[1:]))  # every output element: Cin/g * kh * kw MACs
    if node.op_type == "ConvTranspose":
        x, w = ins[0], (ins[1] if len(ins) > 1 else None)
        if x is None or w is None:
            return None
        return int(np.prod(x)) * w[1] * int(np.prod(w[2:]))  # every input element: Cout/g * kh * kw
    if node.op_type == "MatMul":
        a = ins[0]
        if out is None or a is None:
            return None
        return int(np.prod(out)) * a[-1]
    if node.op_type == "Gemm":
        a = ins[0]
        if out is None or a is None:
            return None
        trans_a = int(attrs["transA"].i) if "transA" in attrs else 0
        return int(np.prod(out)) * (a[0] if trans_a else a[-1])
    return None  # pragma: no cover


def model_gflops(onnx_path: Path, *, size: tuple[int, int], batch: int = 1) -> float:
    """GFLOPs of one forward pass at ``size`` (per batch of ``batch``), cached beside the model."""
    cache = onnx_path.with_name("gflops.json")
    key = f"{batch}x3x{size[0]}x{size[1]}"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except json.JSONDecodeError:
        known = {}
    if key in known and known.get("_mtime") == onnx_path.stat().st_mtime:
        return float(known[key])
    count = count_macs(onnx_path, input_shape=(batch, 3, size[0], size[1]))
    known = {**(known if known.get("_mtime") == onnx_path.stat().st_mtime else {}), key: count.gflops}
    known["_mtime"] = onnx_path.stat().st_mtime
    from fastseg.files import write_text_atomic

    write_text_atomic(cache, json.dumps(known))
    return count.gflops
