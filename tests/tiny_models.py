"""Tiny ONNX segmentation models built with onnx.helper, plus their converted-model dirs.

``colour_model``: a 1x1 Conv with identity weights, so class c is the strongest of the
(R, G, B) input channels: pure red -> 0, green -> 1, blue -> 2. Output kinds:
``labels`` (ArgMax inside the graph, int64 [N,H,W]), ``logits`` ([N,3,H,W]) and ``probs``
(Softmax). H and W are dynamic. ``conv_stack_model`` is a mid-size float network used to
measure the run loop.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastseg.model_dir import ModelMeta, PreprocessSpec, ResizeSpec, write_meta

CLASS_NAMES = ("red", "green", "blue")
PALETTE = ((128, 0, 0), (0, 128, 0), (0, 0, 128))


def _save(graph: onnx.GraphProto, path: Path, opset: int = 13) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def colour_model(path: Path, kind: str = "labels") -> Path:
    """Write the identity-conv colour classifier with output ``kind`` to ``path``."""
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"])]
    out_name = "logits"
    if kind == "labels":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])
        out_name = "labels"
    elif kind == "probs":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3, "H", "W"])
        out_name = "probs"
    else:
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, "H", "W"])
    del out_name
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _save(helper.make_graph(nodes, "colour", [x], [out], initializer=[w]), path)


def conv_stack_model(path: Path, *, width: int = 32, depth: int = 4, classes: int = 19, argmax: bool = True) -> Path:
    """A mid-size fully convolutional net (3x3 convs + ReLU, then 1x1 to ``classes``)."""
    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", 3
    for i in range(depth):
        w = rng.standard_normal((width, cin, 3, 3)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", width
    inits.append(numpy_helper.from_array(rng.standard_normal((classes, cin, 1, 1)).astype(np.float32), "head"))
    nodes.append(helper.make_node("Conv", [prev, "head"], ["logits"]))
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])
    else:
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "H", "W"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _save(helper.make_graph(nodes, "convstack", [x], [out], initializer=inits), path)


def colour_model_dir(
    root: Path,
    *,
    kind: str = "labels",
    resize: ResizeSpec | None = None,
    to_rgb: bool = True,
    name: str = "tiny-colour",
) -> Path:
    """A converted-model directory (model.onnx + fastseg.json) around ``colour_model``."""
    root.mkdir(parents=True, exist_ok=True)
    colour_model(root / "model.onnx", kind)
    meta = ModelMeta(
        model_name=name,
        input_name="x",
        output_kind=kind,  # type: ignore[arg-type]
        num_classes=3,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        preprocess=PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize=resize, to_rgb=to_rgb),
        opset=13,
        provenance={"source": "tests/tiny_models.py"},
    )
    write_meta(root, meta)
    return root


def random_conv_model(path: Path, *, kind: str = "labels", classes: int = 5, seed: int = 0) -> Path:
    """Two random 3x3 convs (5x5 receptive field): logits differ per pixel and near window borders,
    so sliding windows give different sums than one pass. Heads as in ``colour_model``; the
    labels head is ArgMax + Cast(int32), as ``fastseg convert`` writes it."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((classes, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["logits"], pads=[1, 1, 1, 1]),
    ]
    if kind == "labels":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["head/argmax"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Cast", ["head/argmax"], ["labels"], to=TensorProto.INT32))
        out = helper.make_tensor_value_info("labels", TensorProto.INT32, ["N", "H", "W"])
    elif kind == "probs":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes, "H", "W"])
    else:
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "H", "W"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _save(helper.make_graph(nodes, "randconv", [x], [out], initializer=[w1, w2]), path)


def random_conv_model_dir(
    root: Path, *, kind: str = "labels", classes: int = 5, resize: ResizeSpec | None = None
) -> Path:
    """A converted-model directory around ``random_conv_model``."""
    root.mkdir(parents=True, exist_ok=True)
    random_conv_model(root / "model.onnx", kind=kind, classes=classes)
    meta = ModelMeta(
        model_name="tiny-randconv",
        input_name="x",
        output_kind=kind,  # type: ignore[arg-type]
        num_classes=classes,
        class_names=tuple(f"c{i}" for i in range(classes)),
        palette=tuple((i * 40, 255 - i * 40, i * 20) for i in range(classes)),
        preprocess=PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize=resize),
        opset=13,
        provenance={"source": "tests/tiny_models.py"},
    )
    write_meta(root, meta)
    return root


def colour_image(h: int = 24, w: int = 40) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3, 2] = 200  # red (BGR)
    img[:, w // 3 : 2 * w // 3, 1] = 200  # green
    img[:, 2 * w // 3 :, 0] = 200  # blue
    return img


def random_net_dir(root: Path) -> Path:
    """A random-weight 19-class network: near-tied logits everywhere, as a reference build's."""
    root.mkdir(parents=True, exist_ok=True)
    conv_stack_model(root / "model.onnx", width=16, depth=3, classes=19)
    names = tuple(f"c{i}" for i in range(19))
    write_meta(root, ModelMeta(
        model_name="random-net", input_name="x", output_kind="labels", num_classes=19, class_names=names,
        palette=tuple((i * 10, i * 5, i) for i in range(19)), preprocess=PreprocessSpec(), opset=13,
    ))
    return root


def photo_dir(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` smooth synthetic photos (gradients + blobs + noise), 48x64."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    for i in range(n):
        base = np.stack([xx * rng.uniform(1, 4), yy * rng.uniform(1, 4), (xx + yy) * rng.uniform(0.5, 2)], -1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"img_{i}.png"), img)
    return root


def slow_model_dir(root: Path, *, pixels_per_step: int = 64) -> Path:
    """The colour classifier behind a ``Loop`` that applies an identity 3x3 conv (H*W /
    ``pixels_per_step``) times: labels as ``colour_model_dir``'s, cost growing with the square of
    the image area (a 16x16 image: 4 steps, instant; 1024x1024: 16,384 full-image convs, minutes),
    for tests that must interrupt a running inference."""
    root.mkdir(parents=True, exist_ok=True)
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    kernel[range(3), range(3), 1, 1] = 1.0
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Conv", ["state", "k"], ["next"], pads=[1, 1, 1, 1]),
        ],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", 3, "H", "W"]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("next", TensorProto.FLOAT, ["N", 3, "H", "W"]),
        ],
    )
    inits = [
        numpy_helper.from_array(kernel, "k"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
        numpy_helper.from_array(np.array(pixels_per_step, np.int64), "per_step"),
        numpy_helper.from_array(np.array(True), "go"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "hw_axes"], ["hw"]),
        helper.make_node("ReduceProd", ["hw"], ["area"], keepdims=0),
        helper.make_node("Div", ["area", "per_step"], ["steps"]),
        helper.make_node("Loop", ["steps", "go", "x"], ["looped"], body=body),
        helper.make_node("ArgMax", ["looped"], ["labels"], axis=1, keepdims=0),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    out = helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])
    _save(helper.make_graph(nodes, "slow", [x], [out], initializer=inits), root / "model.onnx")
    meta = ModelMeta(
        model_name="tiny-slow",
        input_name="x",
        output_kind="labels",
        num_classes=3,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        preprocess=PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), to_rgb=True),
        opset=13,
        provenance={"source": "tests/tiny_models.py"},
    )
    write_meta(root, meta)
    return root
