"""MaskFormer's tail rewrite: channels-last labels and the last-layer mask einsum give the labels
and scores of the exported NCHW graph (a tiny graph shaped as paddle2onnx exports MaskFormer)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from fastseg.convert.heads import attach_head
from fastseg.convert.mask_tail import drop_dead_nodes, rewrite_mask_tail
from fastseg.graph_edit import strip_head

L, Q, C, D, h, w, H, W = 3, 6, 5, 4, 4, 5, 16, 20  # layers, queries, classes, mask dim, mask and input sizes


def _maskformer_tail(*, second_hw: tuple[int, int] = (H, W), image_slice: tuple[int, int] = (0, 1)) -> onnx.ModelProto:
    """cls [L,1,Q,C+1], emb [L,1,Q,D], feat [1,D,h,w] -> [1,C,H,W] scores, as the official export:
    mask einsum over all layers, [-1:] slice, Resize to the input size, the image's [0:1] slice,
    sigmoid, einsum with softmax(cls)[:, :-1], and a second Resize to the input size."""
    consts = {"last": [-1], "end": [2**31 - 1], "ax0": [0], "first": [image_slice[0]], "firstend": [image_slice[1]],
              "ax1": [1], "nolast": [-1], "zero": [0], "hw": [H, W], "hw2": list(second_hw), "two": [2]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()]
    n = helper.make_node
    nodes = [
        n("Einsum", ["emb", "feat"], ["m_all"], equation="lbqc,bchw->lbqhw"),
        n("Slice", ["m_all", "last", "end", "ax0"], ["m_last"]), n("Squeeze", ["m_last", "zero"], ["m"]),
        n("Shape", ["m"], ["m_shape"]), n("Slice", ["m_shape", "zero", "two", "zero"], ["m_nc"]),
        n("Concat", ["m_nc", "hw"], ["m_size"], axis=0),
        n("Resize", ["m", "", "", "m_size"], ["m_up"], mode="linear", coordinate_transformation_mode="half_pixel"),
        n("Slice", ["m_up", "first", "firstend", "ax0"], ["m_img"]), n("Squeeze", ["m_img", "zero"], ["m_q"]),
        n("Sigmoid", ["m_q"], ["m_sig"]), n("Identity", ["m_sig"], ["m_in"]),
        n("Slice", ["cls", "last", "end", "ax0"], ["c_last"]), n("Squeeze", ["c_last", "zero"], ["c1"]),
        n("Slice", ["c1", "first", "firstend", "ax0"], ["c_img"]), n("Squeeze", ["c_img", "zero"], ["c_q"]),
        n("Softmax", ["c_q"], ["c_sm"], axis=-1), n("Slice", ["c_sm", "zero", "nolast", "ax1"], ["c_in"]),
        n("Einsum", ["c_in", "m_in"], ["sem"], equation="qc,qhw->chw"),
        n("Unsqueeze", ["sem", "zero"], ["sem4"]),
        n("Shape", ["sem4"], ["s_shape"]), n("Slice", ["s_shape", "zero", "two", "zero"], ["s_nc"]),
        n("Concat", ["s_nc", "hw2"], ["s_size"], axis=0),
        n("Resize", ["sem4", "", "", "s_size"], ["sem_up"], mode="linear", coordinate_transformation_mode="half_pixel"),
        n("Slice", ["sem_up", "first", "firstend", "ax0"], ["s_img"]), n("Squeeze", ["s_img", "zero"], ["s3"]),
        n("Unsqueeze", ["s3", "zero"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "maskformer_tail",
        [helper.make_tensor_value_info("cls", TensorProto.FLOAT, [L, 1, Q, C + 1]),
         helper.make_tensor_value_info("emb", TensorProto.FLOAT, [L, 1, Q, D]),
         helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, D, h, w])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, C, H, W])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"cls": (4 * rng.standard_normal((L, 1, Q, C + 1))).astype(np.float32),
            "emb": rng.standard_normal((L, 1, Q, D)).astype(np.float32),
            "feat": rng.standard_normal((1, D, h, w)).astype(np.float32)}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


def test_labels_and_scores_equal_the_exported_graphs() -> None:
    original = attach_head(_maskformer_tail(), "labels", opset=17)
    model, info = rewrite_mask_tail(attach_head(_maskformer_tail(), "labels", opset=17))
    drop_dead_nodes(model.graph)
    onnx.checker.check_model(model)
    assert info.semantic_tail_channels_last and info.mask_einsums_sliced == 1 and info.changed
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Einsum") == 1 and ops.count("Resize") == 1 and ops.count("MatMul") == 1  # qc,qhw einsum and the identity resize gone
    assert [n for n in model.graph.node if n.op_type == "ArgMax"][0].attribute[0].i == 3
    logits, _ = strip_head(attach_head(_maskformer_tail(), "labels", opset=17))
    for seed in range(3):
        feeds = _feeds(seed)
        labels = _run(model, feeds)
        assert labels.shape == (1, H, W) and labels.dtype == np.int32
        assert np.array_equal(labels, _run(original, feeds))
        assert len(np.unique(labels)) > 1  # the check means something: several classes win
        stripped, removed = strip_head(onnx.load_from_string(model.SerializeToString()))
        assert removed == ("ArgMax", "Cast")
        np.testing.assert_allclose(_run(stripped, feeds), _run(logits, feeds), rtol=1e-5, atol=1e-6)  # NCHW again


def test_a_logits_head_keeps_nchw_scores_and_slices_only_the_mask_einsum() -> None:
    model, info = rewrite_mask_tail(attach_head(_maskformer_tail(), "logits", opset=17), labels=False)
    drop_dead_nodes(model.graph)
    assert (info.semantic_tail_channels_last, info.mask_einsums_sliced) == (False, 1)
    feeds = _feeds(0)
    np.testing.assert_allclose(_run(model, feeds), _run(_maskformer_tail(), feeds), rtol=1e-6, atol=1e-6)


def test_a_second_resize_to_another_size_or_a_batch_wide_slice_is_left_alone() -> None:
    for variant in (_maskformer_tail(second_hw=(2 * H, 2 * W)), _maskformer_tail(image_slice=(0, 2))):
        model, info = rewrite_mask_tail(attach_head(variant, "labels", opset=17))
        assert not info.semantic_tail_channels_last
        assert "qc,qhw->chw" in str([n.attribute for n in model.graph.node if n.op_type == "Einsum"])


def test_subnormal_class_probabilities_are_zeroed_and_the_labels_kept() -> None:
    """Softmax underflow gives subnormal probabilities (slow FMAs); the rewrite zeroes them first."""
    model, _ = rewrite_mask_tail(attach_head(_maskformer_tail(), "labels", opset=17))
    drop_dead_nodes(model.graph)
    ops = [n.op_type for n in model.graph.node]
    assert ops.index("Less") < ops.index("Where") < ops.index("MatMul")
    feeds = _feeds(1)
    feeds["cls"][..., 0] = -95.0  # exp(-95 - max) is subnormal in float32
    feeds["cls"][..., 1:] = np.abs(feeds["cls"][..., 1:])
    original = attach_head(_maskformer_tail(), "labels", opset=17)
    assert np.array_equal(_run(model, feeds), _run(original, feeds))
