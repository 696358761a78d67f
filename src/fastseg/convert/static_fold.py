"""Fold a frozen-shape graph's shape-only control flow into constants (MaskFormer's Swin masks).

paddle2onnx exports Paddle's ``set_value`` (Swin's shifted-window attention mask is built that
way) as an ``If`` on a shape test whose branch builds ScatterND indices with ONNX sequence ops
(``SplitToSequence``, ``SequenceMap``, ``ConcatFromSequence``) and a ``ReduceProd`` on their
output. OpenVINO's ONNX front end has no rule for those ops, so it cannot read the graph. When
the input shape is frozen (PaddleX exports MaskFormer at 512x512), every one of them computes
a constant: the four attention masks, 4.8 MB in all on MaskFormer_tiny.

Two steps, both by ONNX Runtime, so the constants are the values the graph computes:
1. ONNX Runtime's basic graph optimisations (standard ONNX ops only: shape folding, constant
   folding, inlining an ``If`` whose condition became constant, expanding function ops such as
   ``SequenceMap`` into ``Loop``), saved back as ONNX.
2. Every node that reads only initializers (inside its subgraphs too) is evaluated once, and the
   tensors the rest of the graph reads from them become initializers; those nodes go.

The folded graph is then run against the unfolded one on a deterministic input, and kept only
if its outputs match (>= 99.99% of labels; scores within ``_SCORE_ATOL``). Graphs with a dynamic
input dimension, or without such ops, are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEQUENCE_OPS = frozenset({
    "If", "Loop", "SequenceMap", "SplitToSequence", "ConcatFromSequence", "SequenceEmpty", "SequenceAt",
    "SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceLength",
})
_SCORE_ATOL = 1e-4
_LABEL_AGREEMENT = 0.9999  # ONNX Runtime's fusions (MatMul + Add -> Gemm) may round differently


@dataclass(frozen=True)
class StaticFold:
    """What ``fold_static_control_flow`` did (recorded in the model's provenance)."""

    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    constants: int = 0
    check: str = ""

    @property
    def changed(self) -> bool:
        return self.constants > 0 or self.ops_before != self.ops_after

    def provenance(self) -> dict[str, Any]:
        return {"control_flow_ops_before": self.ops_before, "control_flow_ops_after": self.ops_after,
                "constants_folded": self.constants, "check": self.check}


def _count(graph: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in SEQUENCE_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _outer_reads(graph: Any) -> set[str]:
    """Names a subgraph reads from outside itself (its nested subgraphs included)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    reads: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                reads |= _outer_reads(sub)
        reads |= {i for i in node.input if i}
        defined |= set(node.output)
    return reads - defined


def _reads(node: Any) -> set[str]:
    reads = {i for i in node.input if i}
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            reads |= _outer_reads(sub)
    return reads


def _ort_basic(model: Any, work: Path) -> Any:
    """ONNX Runtime's basic optimisations, saved as a plain ONNX model."""
    import onnx
    import onnxruntime as ort

    src, dst = work / "unfolded.onnx", work / "basic.onnx"
    onnx.save(model, str(src))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(dst))


def _fold_constant_nodes(model: Any) -> int:
    """Evaluate the nodes that read only initializers; their consumed outputs become initializers."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = model.graph
    known = {t.name for t in graph.initializer}
    constant_nodes = []
    for node in graph.node:
        if _reads(node) <= known:
            constant_nodes.append(node)
            known |= set(node.output)
    folded_ids = {id(n) for n in constant_nodes}
    initial = {t.name for t in graph.initializer}
    needed = set().union(*[_reads(n) for n in graph.node if id(n) not in folded_ids], {o.name for o in graph.output})
    frontier = sorted((known - initial) & needed)
    if not frontier:
        return 0
    typed = onnx.shape_inference.infer_shapes(helper.make_model(
        helper.make_graph(constant_nodes, "types", [], [], initializer=list(graph.initializer)),
        opset_imports=model.opset_import, ir_version=model.ir_version,
    ))
    types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
    if any(not types.get(name) for name in frontier):
        return 0  # a type shape inference could not give: leave the graph as it is
    evaluator = helper.make_model(
        helper.make_graph(constant_nodes, "fold", [], [helper.make_tensor_value_info(n, types[n], None) for n in frontier],
                          initializer=list(graph.initializer)),
        opset_imports=model.opset_import, ir_version=model.ir_version,
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(evaluator.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(frontier, {})
    keep = [n for n in graph.node if id(n) not in folded_ids]
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in zip(frontier, values))
    used = set().union(*[_reads(n) for n in graph.node], {o.name for o in graph.output})
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(frontier)


def _static_shape(model: Any) -> list[int] | None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    return shape if shape and all(v > 0 for v in shape) else None


def _outputs_match(before: Any, after: Any, shape: list[int]) -> str:
    """'' when both graphs give the same outputs on a deterministic input, else why not."""
    import onnxruntime as ort

    feed = {before.graph.input[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    results = [
        ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)[0]
        for m in (before, after)
    ]
    a, b = results
    if a.shape != b.shape:
        return f"output shape {b.shape} != {a.shape}"
    if np.issubdtype(a.dtype, np.integer):
        agreement = float((a == b).mean())
        return "" if agreement >= _LABEL_AGREEMENT else f"labels agree on {agreement:.6%} only"
    diff = float(np.abs(a.astype(np.float64) - b).max())
    return "" if diff <= _SCORE_ATOL else f"max |score diff| {diff:.3g} > {_SCORE_ATOL}"


def fold_static_control_flow(model: Any, work: Path) -> tuple[Any, StaticFold]:
    """``model`` with its shape-only control flow folded (see the module doc), and what changed;
    ``model`` itself when the input shape is dynamic, nothing needs folding, or the check fails."""
    before = _count(model.graph)
    shape = _static_shape(model)
    if not before or shape is None:
        return model, StaticFold(before, before, 0, "not needed" if not before else "dynamic input: not folded")
    import onnx

    work.mkdir(parents=True, exist_ok=True)
    try:
        folded = _ort_basic(model, work)
        constants = _fold_constant_nodes(folded)
        onnx.checker.check_model(folded)
        mismatch = _outputs_match(model, folded, shape)
    except Exception as exc:  # an optimisation: whatever stops it (a > 2 GB graph, an op ORT refuses) keeps the graph
        return model, StaticFold(before, before, 0, f"kept the unfolded graph: {type(exc).__name__}: {str(exc)[:200]}")
    after = _count(folded.graph)
    if mismatch:
        return model, StaticFold(before, before, 0, f"kept the unfolded graph: {mismatch}")
    return folded, StaticFold(before, after, constants, "outputs match the unfolded graph's on a deterministic input")
