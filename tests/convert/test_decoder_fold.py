"""The SegFormer decoder fold: a 1x1 fuse conv over concatenated stage projections becomes a sum
of folded projections, with the same outputs to float rounding; anything else is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastseg.convert.decoder_fold import fold_decoder_fuse

E = 8  # decoder channels
STAGES = ((4, 6, 3), (2, 3, 5), (1, 2, 7))  # (h, w, C_k) per stage; stage 0 is already at output size


def _decoder(*, kernel: int = 1, extra_use: bool = False, conv_bias: bool = False, out_ch: int = E) -> onnx.ModelProto:
    """Token inputs -> MatMul+Add -> Transpose -> Reshape -> (Resize) -> Concat -> Conv -> Relu, as paddle2onnx exports SegFormer's head."""
    rng = np.random.default_rng(0)
    nodes, inits, inputs, branch_outs = [], [], [], []
    H, W = STAGES[0][0], STAGES[0][1]
    for k, (h, w, c) in enumerate(STAGES):
        inputs.append(helper.make_tensor_value_info(f"t{k}", TensorProto.FLOAT, [1, h * w, c]))
        inits += [numpy_helper.from_array(rng.standard_normal((c, E)).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(rng.standard_normal(E).astype(np.float32), f"b{k}"),
                  numpy_helper.from_array(np.array([1, E, h, w], dtype=np.int64), f"shape{k}")]
        nodes += [helper.make_node("MatMul", [f"t{k}", f"w{k}"], [f"mm{k}"]),
                  helper.make_node("Add", [f"mm{k}", f"b{k}"], [f"add{k}"]),
                  helper.make_node("Identity", [f"add{k}"], [f"id{k}"]),
                  helper.make_node("Transpose", [f"id{k}"], [f"tr{k}"], perm=[0, 2, 1]),
                  helper.make_node("Reshape", [f"tr{k}", f"shape{k}"], [f"rs{k}"])]
        if k == 0:
            branch_outs.append(f"rs{k}")
        else:
            inits.append(numpy_helper.from_array(np.array([1, E, H, W], dtype=np.int64), f"size{k}"))
            nodes.append(helper.make_node("Resize", [f"rs{k}", "", "", f"size{k}"], [f"up{k}"], mode="linear",
                                          coordinate_transformation_mode="half_pixel"))
            branch_outs.append(f"up{k}")
    fuse = rng.standard_normal((out_ch, E * len(STAGES), kernel, kernel)).astype(np.float32)
    inits.append(numpy_helper.from_array(fuse, "fuse_w"))
    conv_inputs = ["cat", "fuse_w"]
    if conv_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(out_ch).astype(np.float32), "fuse_b"))
        conv_inputs.append("fuse_b")
    pads = [kernel // 2] * 4
    nodes += [helper.make_node("Concat", branch_outs, ["cat"], axis=1),
              helper.make_node("Conv", conv_inputs, ["conv"], kernel_shape=[kernel, kernel], pads=pads),
              helper.make_node("Relu", ["conv"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_ch, H, W])]
    if extra_use:  # a branch tensor someone else also reads: folding would change it
        nodes.append(helper.make_node("Neg", ["rs0"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "decoder", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {f"t{k}": rng.standard_normal((1, h * w, c)).astype(np.float32) for k, (h, w, c) in enumerate(STAGES)}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


@pytest.mark.parametrize("conv_bias", [False, True])
def test_fold_removes_the_fuse_conv_and_keeps_the_outputs(conv_bias: bool) -> None:
    model = _decoder(conv_bias=conv_bias)
    before = _run(model)
    folded, count = fold_decoder_fuse(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(folded)
    ops = [n.op_type for n in folded.graph.node]
    assert count == 1 and "Conv" not in ops and "Concat" not in ops and ops.count("Sum") == 1
    after = _run(folded)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-4)
    # the folded projections keep their shapes ([C_k, E]): the reshapes downstream stay valid
    shapes = {t.name: tuple(t.dims) for t in folded.graph.initializer if t.name.endswith(".folded_w")}
    assert sorted(shapes.values()) == sorted((c, E) for _, _, c in STAGES)


@pytest.mark.parametrize(
    "variant", [{"kernel": 3}, {"extra_use": True}, {"out_ch": E + 1}], ids=["3x3-conv", "branch-used-elsewhere", "channels-change"]
)
def test_anything_but_the_exact_pattern_is_left_alone(variant: dict[str, int | bool]) -> None:
    model = _decoder(**variant)  # type: ignore[arg-type]
    original = model.SerializeToString()
    folded, count = fold_decoder_fuse(model)
    assert count == 0 and folded.SerializeToString() == original
