"""convert/static_fold.py: a frozen-shape graph's shape-only If and sequence ops become constants
(the pattern paddle2onnx gives Swin's attention masks); dynamic graphs are left alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastseg.convert.static_fold import fold_static_control_flow


def _masked_model(hw: tuple[int | str, int | str]) -> Any:
    """x + mask, where mask comes from an If on x's height whose else-branch splits a constant
    into a sequence and concatenates it back (paddle2onnx's set_value shape)."""
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2), "table")
    splits = helper.make_node("SplitToSequence", ["table"], ["seq"], axis=1)
    joined = helper.make_node("ConcatFromSequence", ["seq"], ["mask_else"], axis=1)
    else_branch = helper.make_graph([splits, joined], "else", [], [helper.make_tensor_value_info("mask_else", TensorProto.FLOAT, None)])
    zeros = helper.make_node("Constant", [], ["mask_then"], value=numpy_helper.from_array(np.zeros((1, 3, 2, 2), np.float32)))
    then_branch = helper.make_graph([zeros], "then", [], [helper.make_tensor_value_info("mask_then", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["height"], axis=0),
        helper.make_node("Equal", ["height", "one"], ["is_one"]),
        helper.make_node("If", ["is_one"], ["mask"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["x", "mask"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, *hw])],
        initializer=[table, numpy_helper.from_array(np.array(2, np.int64), "two"), numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


def test_frozen_shape_control_flow_becomes_constants(tmp_path: Path) -> None:
    model = _masked_model((2, 2))
    x = np.random.default_rng(1).standard_normal((1, 3, 2, 2)).astype(np.float32)
    expected = _run(model, x)
    folded, report = fold_static_control_flow(model, tmp_path / "work")
    ops = {n.op_type for n in folded.graph.node}
    assert not ops & {"If", "SplitToSequence", "ConcatFromSequence", "Shape"}, ops
    assert report.ops_before == {"If": 1} and report.ops_after == {} and report.constants >= 1 and report.changed
    assert "match" in report.check
    np.testing.assert_array_equal(_run(folded, x), expected)
    np.testing.assert_array_equal(expected, x + np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2))
    onnx.checker.check_model(folded)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino (the [openvino] extra)")
def test_openvino_reads_the_folded_graph(tmp_path: Path) -> None:
    from fastseg.offline import import_openvino_quietly

    ov = import_openvino_quietly()
    folded, _ = fold_static_control_flow(_masked_model((2, 2)), tmp_path / "work")
    path = tmp_path / "folded.onnx"
    onnx.save(folded, str(path))
    x = np.ones((1, 3, 2, 2), np.float32)
    compiled = ov.Core().compile_model(str(path), "CPU")
    np.testing.assert_array_equal(compiled({0: x})[0], _run(folded, x))


def test_dynamic_input_is_left_alone(tmp_path: Path) -> None:
    model = _masked_model(("H", "W"))
    same, report = fold_static_control_flow(model, tmp_path / "work")
    assert same is model and not report.changed and report.check == "dynamic input: not folded"


def test_graph_without_control_flow_is_left_alone(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    same, report = fold_static_control_flow(model, tmp_path / "work")
    assert same is model and report.check == "not needed" and not report.changed


def test_a_fold_that_fails_keeps_the_graph_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastseg.convert.static_fold as static_fold

    def too_large(model: Any, work: Path) -> Any:
        raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")

    monkeypatch.setattr(static_fold, "_ort_basic", too_large)
    model = _masked_model((2, 2))
    same, report = fold_static_control_flow(model, tmp_path / "work")
    assert same is model and not report.changed and report.ops_after == {"If": 1}
    assert report.check.startswith("kept the unfolded graph: ValueError: Message onnx.ModelProto exceeds"), report.check
