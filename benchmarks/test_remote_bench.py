"""remote_bench's strip/fill: the graph travels without its large weights and comes back runnable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.remote_bench import STATS_FILE, fill, strip


def _model(folder: Path) -> Path:
    """A conv whose weight is an initializer, a bias from a Constant node, and an int8 table."""
    rng = np.random.default_rng(1)
    weight = rng.normal(0.2, 0.05, size=(16, 8, 3, 3)).astype(np.float32)  # 1,152 elements: stripped
    bias = rng.normal(0, 1, size=(16,)).astype(np.float32)  # small: travels as it is
    table = rng.integers(-7, 9, size=(2048,)).astype(np.int8)  # stripped, re-drawn in [-7, 8]
    big_const = rng.normal(0, 3, size=(1, 16, 1, 1100)).astype(np.float32)  # a Constant node's value
    nodes = [
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(bias, "b")),
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(big_const, "k")),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["t"], ["t32"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["t32"], ["s"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 5, 7]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 16, 1, 1100])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(table, "t")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "fastseg.json").write_text("{}")
    return folder


def _run(folder: Path) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {"x": np.ones((1, 8, 5, 7), np.float32)})]


def test_strip_keeps_the_graph_and_fill_redraws_weights_of_the_same_shape_and_range(tmp_path: Path) -> None:
    src = _model(tmp_path / "src")
    out = tmp_path / "out"
    strip(src, out)
    stats = json.loads((out / STATS_FILE).read_text())
    assert set(stats) == {"w", "t", "k"}  # the bias (16 elements) travels as it is
    assert (out / "fastseg.json").read_text() == "{}"
    assert (out / "model.onnx").stat().st_size < 2_000 < (src / "model.onnx").stat().st_size
    assert abs(stats["w"]["mean"] - 0.2) < 0.02 and (stats["t"]["min"], stats["t"]["max"]) == (-7.0, 8.0)

    fill(out)
    assert not (out / STATS_FILE).exists()
    before, after = onnx.load(str(src / "model.onnx")), onnx.load(str(out / "model.onnx"))
    w = numpy_helper.to_array(next(t for t in after.graph.initializer if t.name == "w"))
    t = numpy_helper.to_array(next(t for t in after.graph.initializer if t.name == "t"))
    assert w.shape == (16, 8, 3, 3) and w.dtype == np.float32 and abs(float(w.mean()) - 0.2) < 0.02
    assert t.dtype == np.int8 and t.min() >= -7 and t.max() <= 8 and len(np.unique(t)) > 8
    bias = [n for n in after.graph.node if n.output[0] == "b"][0].attribute[0].t
    assert np.array_equal(numpy_helper.to_array(bias),
                          numpy_helper.to_array([n for n in before.graph.node if n.output[0] == "b"][0].attribute[0].t))
    y_src, _, k_src = _run(src)
    y_out, _, k_out = _run(out)
    assert y_out.shape == y_src.shape and k_out.shape == k_src.shape == (1, 16, 1, 1100)
    assert not np.array_equal(y_out, y_src)  # re-drawn, not carried
