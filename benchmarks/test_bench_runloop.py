"""ONNX Runtime run loop: IO binding (output buffer bound once) vs plain ``session.run``.

On CPU the difference is the output allocation and copy; the suite keeps both so a regression
in either path shows up. The graph is a small conv stack ending in ArgMax (a labels head), as
the converted PaddleX models do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _conv_stack(classes: int = 19, width: int = 32) -> bytes:
    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", 3
    for i, stride in enumerate((2, 1, 1)):
        w = numpy_helper.from_array((rng.normal(size=(width, cin, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [prev, w.name], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", width
    head = numpy_helper.from_array(rng.normal(size=(classes, width, 1, 1)).astype(np.float32), "head")
    inits.append(head)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    inits.append(scales)
    nodes += [
        helper.make_node("Conv", [prev, "head"], ["logits_half"]),
        helper.make_node("Resize", ["logits_half", "", "scales"], ["logits"], mode="linear"),
        helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def session() -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(_conv_stack(), so, providers=["CPUExecutionProvider"])


@pytest.fixture()
def batch(bench_size: tuple[int, int]) -> np.ndarray:
    h, w = bench_size
    return np.random.default_rng(1).random((1, 3, h, w), dtype=np.float32)


def test_plain_run(benchmark: Any, session: Any, batch: np.ndarray) -> None:
    out = benchmark(lambda: session.run(["labels"], {"x": batch})[0])
    assert out.shape == (1, *batch.shape[2:]) and out.dtype == np.int64


def test_iobinding_run(benchmark: Any, session: Any, batch: np.ndarray) -> None:
    binding = session.io_binding()
    binding.bind_cpu_input("x", batch)
    binding.bind_output("labels", "cpu")

    def run() -> np.ndarray:
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    out = benchmark(run)
    np.testing.assert_array_equal(out, session.run(["labels"], {"x": batch})[0])
