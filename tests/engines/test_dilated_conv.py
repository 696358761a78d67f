"""engines/dilated_conv.py: a large-dilation 3x3 convolution computed as nine shifted 1x1
convolutions gives the same values (float rounding only), at any size, sizes smaller than d
included; other convolutions (grouped, depthwise, small dilations, strided) are left as they
are, and the replaced weights leave the graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastseg.engines.cpu import cpu_flags
from fastseg.engines.dilated_conv import dilated_convs_as_shifted_taps
from fastseg.engines.preprocess_graph import fused_model_bytes


def _conv(name: str, x: str, y: str, c_in: int, c_out: int, rng: np.random.Generator, **attrs: Any) -> tuple[Any, list[Any]]:
    group = attrs.get("group", 1)
    w = numpy_helper.from_array(rng.standard_normal((c_out, c_in // group, 3, 3)).astype(np.float32), name + "_w")
    b = numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), name + "_b")
    return helper.make_node("Conv", [x, name + "_w", name + "_b"], [y], name=name, kernel_shape=[3, 3], **attrs), [w, b]


def _model() -> Any:
    """Dilations 4, 5, 12, a depthwise dilation-6, a dilation-2 and a strided conv, dynamic H and W."""
    rng = np.random.default_rng(3)
    specs: list[tuple[str, str, str, int, int, dict[str, Any]]] = [
        ("d4", "x", "a", 4, 8, {"dilations": [4, 4], "pads": [4] * 4}),
        ("g6", "a", "a2", 8, 8, {"dilations": [6, 6], "pads": [6] * 4, "group": 8}),  # depthwise: not AMX, kept
        ("d5", "a2", "b", 8, 6, {"dilations": [5, 5], "pads": [5] * 4}),
        ("d12", "b", "c", 6, 6, {"dilations": [12, 12], "pads": [12] * 4}),
        ("d2", "c", "e", 6, 5, {"dilations": [2, 2], "pads": [2] * 4}),
        ("s2", "e", "y", 5, 3, {"dilations": [4, 4], "pads": [4] * 4, "strides": [2, 2]}),
    ]
    nodes, inits = [], []
    for name, x, y, c_in, c_out, attrs in specs:
        node, weights = _conv(name, x, y, c_in, c_out, rng, **attrs)
        nodes.append(node)
        inits += weights
    graph = helper.make_graph(
        nodes, "dilated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])], initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return out


@pytest.mark.parametrize("hw", [(24, 40), (13, 21), (3, 7), (61, 64)])
def test_rewritten_graph_computes_the_same_values(hw: tuple[int, int]) -> None:
    model = _model()
    x = np.random.default_rng(hw[0]).standard_normal((1, 4, *hw)).astype(np.float32)
    expected = _run(model, x)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert dilated_convs_as_shifted_taps(rewritten) == 3  # d4, d5, d12; not the depthwise, d2 or strided ones
    onnx.checker.check_model(rewritten)
    convs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in rewritten.graph.node if n.op_type == "Conv"}
    assert not {"d4", "d5", "d12"} & set(convs)
    assert sum(a["kernel_shape"] == [1, 1] for a in convs.values()) == 27  # nine taps each
    assert convs["g6"]["dilations"] == [6, 6] and convs["d2"]["dilations"] == [2, 2] and convs["s2"]["strides"] == [2, 2]
    initializers = {t.name for t in rewritten.graph.initializer}
    assert not {"d4_w", "d5_w", "d12_w"} & initializers and {"g6_w", "d2_w", "s2_w"} <= initializers
    got = _run(rewritten, x)
    assert got.shape == expected.shape
    # float32 sums in another order: errors scale with the activations (up to ~1e5 here), not with each output
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * float(np.abs(expected).max()))


def test_a_model_without_large_dilations_is_unchanged() -> None:
    model = _model()
    before = model.SerializeToString()
    assert dilated_convs_as_shifted_taps(model, min_dilation=13) == 0
    assert model.SerializeToString() == before


def test_the_openvino_loader_rewrites_only_when_asked_and_only_what_changes(tmp_path: Path) -> None:
    from fastseg.engines.openvino import _model_source
    from fastseg.engines.preprocess_graph import FUSED_INPUT, FusedPreprocess

    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    assert _model_source(path, None, rewrite_dilations=False) == str(path)
    edited = _model_source(path, None, rewrite_dilations=True)
    assert isinstance(edited, bytes)
    assert sum(n.op_type == "Sum" for n in onnx.load_from_string(edited).graph.node) == 3
    pre = FusedPreprocess(scale=(1.0, 1.0, 1.0), shift=(0.0, 0.0, 0.0), to_rgb=True)
    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    assert _model_source(plain, None, rewrite_dilations=True) == str(plain)  # nothing to rewrite: the file itself
    fused = onnx.load_from_string(fused_model_bytes(plain, pre, dilated_convs_as_shifted_taps))
    assert fused.graph.input[0].name == FUSED_INPUT


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino (the [openvino] extra)")
@pytest.mark.skipif("amx_bf16" not in cpu_flags(), reason="the rewrite applies to OpenVINO bf16 on AMX CPUs only")
def test_openvino_bf16_session_on_amx_runs_the_rewritten_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastseg.engines.openvino as ov_engine
    from fastseg.engines import open_session

    rewrites: list[int] = []
    monkeypatch.setattr(ov_engine, "dilated_convs_as_shifted_taps", lambda m: rewrites.append(dilated_convs_as_shifted_taps(m)))
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    x = np.random.default_rng(0).standard_normal((1, 4, 26, 38)).astype(np.float32)
    with open_session(path, "cpu", engine="openvino") as f32:
        f32.run(x)
    assert rewrites == []  # f32 loses with the rewrite: never applied there
    with open_session(path, "cpu", engine="openvino", precision="bf16") as bf16:
        out = bf16.run(x)
    assert rewrites == [3]
    monkeypatch.setattr(ov_engine, "cpu_flags", lambda: frozenset({"avx512_bf16"}))  # a Zen 4: not measured there
    with open_session(path, "cpu", engine="openvino", precision="bf16") as zen4:
        zen4.run(x)
    assert rewrites == [3]
    expected = _run(_model(), x)
    assert out.shape == expected.shape
    assert float(np.abs(out - expected).max()) < 0.05 * float(np.abs(expected).max())  # bf16 rounding
