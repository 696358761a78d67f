"""Tiny ONNX models ending in ``Resize -> ArgMax`` (the tail fastseg.head reproduces).

``tail_model``: a strided Conv (3 -> ``classes``, random weights) gives low-resolution
logits; a Resize brings them back to the input size (sizes computed from ``Shape`` as
paddle2onnx exports them) or by constant scales; then ArgMax over the classes, optionally
a Cast. Keyword arguments produce the variants, supported or not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastseg.model_dir import ModelMeta, PreprocessSpec, write_meta


def tail_model(
    path: Path,
    *,
    classes: int = 40,
    stride: int = 4,
    mode: str = "linear",
    coordinate_mode: str = "half_pixel",
    size_from: str = "shape",
    size_casts: bool = False,
    between: str | None = None,
    cast: int | None = None,
    keepdims: int = 0,
    select_last_index: int = 0,
    antialias: int = 0,
    opset: int = 13,
    seed: int = 0,
    qdq_input: bool = False,
) -> Path:
    """Write the model to ``path`` (input ``x`` [N,3,H,W] float32, H and W dynamic).
    ``qdq_input``: ``x`` passes a QuantizeLinear/DequantizeLinear pair first and every node,
    ``Shape`` included, reads the dequantized tensor, as in ONNX Runtime's int8 QDQ graphs."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((classes, 3, stride, stride)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    source = "x"
    nodes = []
    if qdq_input:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(128, np.uint8), "x_zero_point")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x_dq"])]
        source = "x_dq"
    nodes.append(helper.make_node("Conv", [source, "w", "b"], ["logits"], strides=[stride, stride]))
    if size_from == "shape":
        inits += [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("z", 0), ("two", 2), ("four", 4))]
        nodes += [
            helper.make_node("Shape", ["logits"], ["logits_shape"]),
            helper.make_node("Slice", ["logits_shape", "z", "two"], ["nc"]),
            helper.make_node("Shape", [source], ["x_shape"]),
            helper.make_node("Slice", ["x_shape", "two", "four"], ["hw"]),
        ]
        if size_casts:  # paddle2onnx's int32 round trip
            nodes += [
                helper.make_node("Cast", ["hw"], ["hw32"], to=TensorProto.INT32),
                helper.make_node("Cast", ["hw32"], ["hw64"], to=TensorProto.INT64),
            ]
        nodes.append(helper.make_node("Concat", ["nc", "hw64" if size_casts else "hw"], ["sizes"], axis=0))
        resize_inputs = ["logits", "", "", "sizes"]
    else:
        inits.append(numpy_helper.from_array(np.array([1, 1, stride, stride], np.float32), "scales"))
        resize_inputs = ["logits", "", "scales"]
    attrs: dict[str, object] = {"mode": mode, "coordinate_transformation_mode": coordinate_mode}
    if antialias:
        attrs["antialias"] = antialias
    nodes.append(helper.make_node("Resize", resize_inputs, ["up"], **attrs))
    argmax_in = "up"
    if between:
        nodes.append(helper.make_node(between, ["up"], ["between"], **({"axis": 1} if between == "Softmax" else {})))
        argmax_in = "between"
    argmax_attrs = {"axis": 1, "keepdims": keepdims}
    if select_last_index:
        argmax_attrs["select_last_index"] = 1
    nodes.append(helper.make_node("ArgMax", [argmax_in], ["labels"], **argmax_attrs))
    out_name, out_type = "labels", TensorProto.INT64
    if cast is not None:
        nodes.append(helper.make_node("Cast", ["labels"], ["labels_cast"], to=cast))
        out_name, out_type = "labels_cast", cast
    dims: list[str | int] = ["N", 1, "H", "W"] if keepdims else ["N", "H", "W"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    out = helper.make_tensor_value_info(out_name, out_type, dims)
    model = helper.make_model(
        helper.make_graph(nodes, "tail", [x], [out], initializer=inits), opset_imports=[helper.make_opsetid("", opset)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tail_model_dir(root: Path, *, classes: int = 40, **kwargs: object) -> Path:
    """A converted-model directory (model.onnx + fastseg.json, labels output) around ``tail_model``."""
    tail_model(root / "model.onnx", classes=classes, **kwargs)  # type: ignore[arg-type]
    meta = ModelMeta(
        model_name="tiny-tail",
        input_name="x",
        output_kind="labels",
        num_classes=classes,
        class_names=tuple(f"c{i}" for i in range(classes)),
        palette=tuple((i, i, i) for i in range(classes)),
        preprocess=PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize=None, to_rgb=True),
        opset=13,
        provenance={"source": "tests/head_models.py"},
    )
    write_meta(root, meta)
    return root
