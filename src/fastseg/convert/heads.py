"""Append the requested head to a logits graph ([N, C, H, W] float32, one output).

The converter always exports the Paddle program with its own head stripped (see
``pir_program.strip_program_head``), so every head is built the same way here:

* ``labels``: ArgMax(axis=1) + Cast -> [N, H, W] int32, as PaddleX (argmax stays in the graph);
* ``logits``: the graph as is;
* ``probs``: Softmax(axis=1) (opset >= 13: earlier Softmax flattens the trailing axes).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from fastseg.errors import ConversionError

HEADS = ("labels", "logits", "probs")


def attach_head(logits_model: onnx.ModelProto, head: str, *, opset: int) -> onnx.ModelProto:
    """A copy of ``logits_model`` whose single output is ``head`` (named after it).

    Raises:
        ConversionError: unknown head, or ``probs`` with an opset below 13.
    """
    if head not in HEADS:
        raise ConversionError(f"Unknown head {head!r}; choose one of {', '.join(HEADS)}.")
    model = onnx.ModelProto()
    model.CopyFrom(logits_model)
    graph = model.graph
    if len(graph.output) != 1:
        raise ConversionError(f"Expected one output from the exported graph, found {len(graph.output)}.")
    logits = graph.output[0].name
    del graph.output[:]
    if head == "logits":
        graph.node.append(helper.make_node("Identity", [logits], ["logits"], name="head/identity"))
        graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "C", "H", "W"]))
    elif head == "probs":
        if opset < 13:
            raise ConversionError(f"head='probs' needs opset >= 13 (asked for {opset}).")
        graph.node.append(helper.make_node("Softmax", [logits], ["probs"], name="head/softmax", axis=1))
        graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "C", "H", "W"]))
    else:
        graph.node.append(helper.make_node("ArgMax", [logits], ["head/argmax"], name="head/argmax", axis=1, keepdims=0))
        graph.node.append(helper.make_node("Cast", ["head/argmax"], ["labels"], name="head/cast", to=TensorProto.INT32))
        graph.output.append(helper.make_tensor_value_info("labels", TensorProto.INT32, ["N", "H", "W"]))
    return model
