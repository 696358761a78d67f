"""ONNX Runtime's own linear ``Resize -> ArgMax`` on given logits: the reference the banded head's
benchmarks time and compare against (feed ``L`` float32 [N,C,h,w] and ``sizes`` int64 [4])."""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from onnx import TensorProto, helper


def ort_tail_session(threads: int) -> Any:
    """An ORT CPU session of ``ArgMax(Resize(L, sizes), axis=1)`` (half_pixel, int64 labels)."""
    logits = helper.make_tensor_value_info("L", TensorProto.FLOAT, ["N", "C", "h", "w"])
    sizes = helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])
    labels = helper.make_tensor_value_info("A", TensorProto.INT64, None)
    nodes = [
        helper.make_node("Resize", ["L", "", "", "sizes"], ["R"], mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("ArgMax", ["R"], ["A"], axis=1, keepdims=0),
    ]
    model = helper.make_model(helper.make_graph(nodes, "tail", [logits, sizes], [labels]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
