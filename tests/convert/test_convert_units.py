"""Converter building blocks that need no Paddle: adaptive pool rewrite, heads, JSON edits,
sources and error messages."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fastseg.convert import pir_program
from fastseg.convert.adaptive_pool import replace_adaptive_pools
from fastseg.convert.heads import attach_head
from fastseg.convert.pir_program import AdaptivePool
from fastseg.convert.sources import open_source, palette, read_deploy_config
from fastseg.convert.verify import verification_inputs
from fastseg.errors import ConversionError, ModelDirError
from fastseg.model_dir import PreprocessSpec
from fastseg.reference import REFERENCE_MARKER
from fastseg.zoo import load_zoo


def paddle_adaptive_avg_pool(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """PaddlePaddle's adaptive average pool bins, written out in numpy (the spec)."""
    n, c, h, w = x.shape
    out = np.empty((n, c, kh, kw), np.float64)
    for i in range(kh):
        h0, h1 = (i * h) // kh, -(-((i + 1) * h) // kh)
        for j in range(kw):
            w0, w1 = (j * w) // kw, -(-((j + 1) * w) // kw)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def _pool_graph(kernel: tuple[int, int], opset: int) -> onnx.ModelProto:
    """A graph shaped like paddle2onnx's output: a fixed-kernel AveragePool named like pool2d #0."""
    node = helper.make_node(
        "AveragePool", ["x"], ["p2o.pd_op.pool2d.0.0"], kernel_shape=list(kernel), strides=list(kernel)
    )
    out = helper.make_node("Identity", ["p2o.pd_op.pool2d.0.0"], ["y"])
    graph = helper.make_graph(
        [node, out],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, "kh", "kw"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("k", [(2, 2), (4, 4), (3, 6), (1, 4)])
def test_adaptive_pool_rewrite_is_exact_at_any_size(k: tuple[int, int], opset: int) -> None:
    model = replace_adaptive_pools(_pool_graph((8, 8), opset), [AdaptivePool(ordinal=0, output_hw=k)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for h, w in [(16, 32), (4, 7), (3, 5), (13, 29), (97, 211), (2, 2)]:
        x = rng.standard_normal((2, 5, h, w)).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        want = paddle_adaptive_avg_pool(x.astype(np.float64), *k)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_adaptive_pool_rewrite_rejects_unexpected_node() -> None:
    with pytest.raises(ConversionError, match="pool2d.7.0"):
        replace_adaptive_pools(_pool_graph((8, 8), 17), [AdaptivePool(ordinal=7, output_hw=(2, 2))])


def _logits_model() -> onnx.ModelProto:
    w = np.random.default_rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["fetch_name_0"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("fetch_name_0", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_heads_labels_logits_probs() -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 7)).astype(np.float32)
    outs = {}
    for head in ("labels", "logits", "probs"):
        model = attach_head(_logits_model(), head, opset=17)
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert sess.get_outputs()[0].name == head
        outs[head] = sess.run(None, {"x": x})[0]
    assert outs["labels"].dtype == np.int32 and outs["labels"].shape == (2, 5, 7)
    assert outs["logits"].shape == (2, 4, 5, 7)
    np.testing.assert_array_equal(outs["labels"], outs["logits"].argmax(1))
    np.testing.assert_allclose(outs["probs"].sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(outs["probs"].argmax(1), outs["labels"])
    with pytest.raises(ConversionError, match="opset >= 13"):
        attach_head(_logits_model(), "probs", opset=11)


def _op(op: str, ins: list[int], outs: list[tuple[int, list[int], str]], **attrs: Any) -> dict[str, Any]:
    return {
        "#": f"1.{op}",
        "A": [{"AT": {"D": v}, "N": k} for k, v in attrs.items()],
        "I": [{"%": i} for i in ins],
        "O": [{"%": v, "TT": {"#": "0.t_dtensor", "D": [{"#": dt}, shape, "NCHW", [], 0]}} for v, shape, dt in outs],
    }


def _program() -> dict[str, Any]:
    f32, i32 = "0.t_f32", "0.t_i32"
    ops = [
        _op("data", [], [(1, [-1, 3, -1, -1], f32)], name="x"),
        _op("pool2d", [1, 90], [(2, [-1, 3, -1, -1], f32)], adaptive=False, pooling_type="avg", global_pooling=False),
        _op("pool2d", [2, 91], [(3, [-1, 3, 2, 3], f32)], adaptive=True, pooling_type="avg", global_pooling=False),
        _op("pool2d", [2, 92], [(4, [-1, 3, 1, 1], f32)], adaptive=True, pooling_type="avg", global_pooling=False),
        _op("full", [], [(5, [1], "0.t_i64")]),
        _op("argmax", [3, 5], [(6, [-1, -1, -1], i32)], keepdims=False),
        _op("fetch", [6], [(7, [-1, -1, -1], i32)], name="fetch_name_0"),
    ]
    return {"base_code": {"magic": "pir"}, "program": {"regions": [{"blocks": [{"ops": ops}]}]}}


def test_pir_edits_find_pools_strip_head_and_make_pool_inputs_static() -> None:
    prog = _program()
    pools = pir_program.adaptive_pools(prog)
    assert pools == [AdaptivePool(ordinal=1, output_hw=(2, 3)), AdaptivePool(ordinal=2, output_hw=(1, 1))]
    assert pools[0].onnx_output == "p2o.pd_op.pool2d.1.0"
    stripped, info = pir_program.strip_program_head(prog)
    assert info.removed == ("argmax",) and info.source_output == "labels"
    names = [pir_program.op_name(o) for o in pir_program.ops_of(stripped)]
    assert "argmax" not in names and "full" not in names
    fetch = pir_program.ops_of(stripped)[-1]
    assert fetch["I"][0]["%"] == 3 and fetch["O"][0]["TT"]["D"][1] == [-1, 3, 2, 3]
    static = pir_program.make_adaptive_inputs_static(stripped)
    assert pir_program.ops_of(static)[1]["O"][0]["TT"]["D"][1] == [-1, 3, 8, 12]  # 4 x lcm(2,1), 4 x lcm(3,1)
    assert pir_program.ops_of(prog)[1]["O"][0]["TT"]["D"][1] == [-1, 3, -1, -1]  # input untouched
    assert pir_program.input_name(prog) == "x"


def test_palette_matches_zoo() -> None:
    zoo = load_zoo()
    assert palette(19) == zoo.datasets["Cityscapes"].palette
    assert palette(150) == zoo.datasets["ADE20K"].palette


def test_deploy_config_paddlex_and_paddleseg(tmp_path: Path) -> None:
    yml = tmp_path / "inference.yml"
    yml.write_text(
        "Deploy:\n  transforms:\n  - type: Normalize\n    mean: [0.485, 0.456, 0.406]\n    std: [0.229, 0.224, 0.225]\n"
        "  - type: Resize\n    target_size: [1024, 512]\n    keep_ratio: true\n    size_divisor: 32\n"
        "  output_op: argmax\nGlobal:\n  model_name: My-Seg\n"
    )
    cfg = read_deploy_config(yml)
    assert cfg.model_name == "My-Seg" and cfg.output_op == "argmax"
    assert cfg.preprocess.mean == (0.485, 0.456, 0.406)
    assert cfg.preprocess.resize is not None and cfg.preprocess.resize.target_size == (1024, 512)
    assert cfg.preprocess.resize.keep_ratio and cfg.preprocess.resize.size_divisor == 32
    deploy = tmp_path / "deploy.yaml"
    deploy.write_text("Deploy:\n  transforms:\n  - type: Normalize\n")
    assert read_deploy_config(deploy).output_op is None
    deploy.write_text("Deploy:\n  transforms:\n  - type: RandomFlip\n")
    with pytest.raises(ConversionError, match="'RandomFlip'"):
        read_deploy_config(deploy)


def test_resize_defaults_follow_the_runtime_that_reads_the_file(tmp_path: Path) -> None:
    """A bare ``Resize`` means keep_ratio + size_divisor 32 to PaddleX (inference.yml) and a
    plain 512x512 stretch to PaddleSeg (deploy.yaml); target_size -1 means no resize to PaddleX."""
    (tmp_path / "x").mkdir()
    (tmp_path / "s").mkdir()
    paddlex, paddleseg = tmp_path / "x" / "inference.yml", tmp_path / "s" / "deploy.yaml"
    for f in (paddlex, paddleseg):
        f.write_text("Deploy:\n  transforms:\n  - type: Resize\n    target_size: [1024, 512]\n  - type: Normalize\n")
    rx = read_deploy_config(paddlex).preprocess.resize
    rs = read_deploy_config(paddleseg).preprocess.resize
    assert rx is not None and (rx.target_size, rx.keep_ratio, rx.size_divisor) == ((1024, 512), True, 32)
    assert rs is not None and (rs.target_size, rs.keep_ratio, rs.size_divisor) == ((1024, 512), False, None)
    paddlex.write_text("Deploy:\n  transforms:\n  - type: Resize\n  - type: Normalize\n")
    assert read_deploy_config(paddlex).preprocess.resize is None
    paddleseg.write_text("Deploy:\n  transforms:\n  - type: Resize\n    size_divisor: 16\n")
    rs = read_deploy_config(paddleseg).preprocess.resize
    assert rs is not None and (rs.target_size, rs.size_divisor) == ((512, 512), 16)


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


PIR = json.dumps({"base_code": {"magic": "pir"}, "program": {}}).encode()


def test_sources_tarball_and_dir(tmp_path: Path) -> None:
    tar = _write_tar(
        tmp_path / "X-1_infer.tar",
        {"X-1_infer/inference.json": PIR, "X-1_infer/inference.pdiparams": b"p", "X-1_infer/inference.yml": b"{}"},
    )
    src = open_source(tar, tmp_path / "work")
    assert src.paddle_format == "pir" and src.default_name == "X-1" and src.config_file is not None
    assert len(src.sha256) == 64 and not src.reference
    marked = _write_tar(
        tmp_path / "X-2_infer.tar",
        {"X-2_infer/inference.json": PIR, "X-2_infer/inference.pdiparams": b"p", f"X-2_infer/{REFERENCE_MARKER}": b"random"},
    )
    assert open_source(marked, tmp_path / "work2").reference  # a fastseg reference build, labelled when converted
    d = tmp_path / "legacy_model"
    d.mkdir()
    (d / "model.pdmodel").write_bytes(b"x")
    (d / "model.pdiparams").write_bytes(b"p")
    assert open_source(d, tmp_path / "w2").paddle_format == "legacy"


def test_a_relative_source_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Paddle child runs in the conversion's own workdir, so ``--model-dir ../models/x``
    (relative to where the user stands) must reach it as an absolute path: it did not, and
    the legacy translation failed with "There is no directory named <workdir>/..."."""
    d = tmp_path / "models" / "legacy_model"
    d.mkdir(parents=True)
    (d / "model.pdmodel").write_bytes(b"x")
    (d / "model.pdiparams").write_bytes(b"p")
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    src = open_source(Path("../models/legacy_model"), tmp_path / "work")
    assert src.model_file.is_absolute() and src.params_file.is_absolute() and src.root.is_absolute()
    assert src.model_file.samefile(d / "model.pdmodel")


@pytest.mark.parametrize(
    ("members", "error", "match"),
    [
        ({"../evil/inference.json": PIR}, ModelDirError, "unsafe member"),
        ({"/abs/inference.json": PIR}, ModelDirError, "unsafe member"),
        ({"m/inference.json": PIR}, ConversionError, "Params file inference.pdiparams is missing"),
        ({"m/readme.txt": b"hi"}, ConversionError, "No Paddle inference program"),
        ({"m/inference.json": b"{}", "m/inference.pdiparams": b"p"}, ConversionError, "not a PIR program"),
    ],
)
def test_sources_errors(tmp_path: Path, members: dict[str, bytes], error: type[Exception], match: str) -> None:
    tar = _write_tar(tmp_path / "m.tar", members)
    with pytest.raises(error, match=match) as info:
        open_source(tar, tmp_path / "work")
    assert "\n" not in str(info.value)


def test_sources_corrupt_tarball(tmp_path: Path) -> None:
    good = _write_tar(tmp_path / "g.tar", {"m/inference.json": PIR * 100})
    bad = tmp_path / "bad.tar"
    bad.write_bytes(good.read_bytes()[:700])
    with pytest.raises(ModelDirError, match="not") as info:
        open_source(bad, tmp_path / "work")
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelDirError, match="not a tar archive"):
        open_source(junk, tmp_path / "work2")


def test_public_api_is_exported() -> None:
    import fastseg.convert as convert

    assert convert.__all__ == sorted(convert.__all__)
    assert {"convert_model", "ConvertReport"} <= set(convert.__all__)
    assert all(hasattr(convert, n) for n in convert.__all__)


def test_output_dir_with_other_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    pytest.importorskip("paddle2onnx", reason="convert_model checks the [convert] extra first")
    from fastseg.convert import convert_model

    tar = _write_tar(
        tmp_path / "X-1_infer.tar",
        {"X-1_infer/inference.json": PIR, "X-1_infer/inference.pdiparams": b"p", "X-1_infer/inference.yml": b"{}"},
    )
    out = tmp_path / "my_outputs"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ConversionError, match="not a fastseg model directory"):
        convert_model(tar, out, verify=False)
    assert (out / "keep.txt").read_text() == "user data" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_verification_images_keep_their_size_unless_the_export_is_fixed(tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "b.tif"), rng.integers(0, 255, (33, 21, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    own = verification_inputs(images_dir=tmp_path, sizes=[], preprocess=PreprocessSpec())
    assert {k: v.shape for k, v in own.items()} == {"a.png": (1, 3, 40, 60), "b.tif": (1, 3, 33, 21)}
    fixed = verification_inputs(images_dir=tmp_path, sizes=[], preprocess=PreprocessSpec(), fixed_hw=(32, 48))
    assert {v.shape for v in fixed.values()} == {(1, 3, 32, 48)}
    assert all(v.dtype == np.float32 and -1.0 <= v.min() and v.max() <= 1.0 for v in fixed.values())


def test_fixed_batch_leaves_out_the_batch_of_two() -> None:
    sizes = [(16, 24)]
    both = verification_inputs(images_dir=None, sizes=sizes, preprocess=PreprocessSpec())
    assert {k: v.shape for k, v in both.items()} == {
        "synthetic_16x24": (1, 3, 16, 24), "synthetic_batch2_16x24": (2, 3, 16, 24)}
    one = verification_inputs(images_dir=None, sizes=sizes, preprocess=PreprocessSpec(), batch2=False)
    assert {k: v.shape for k, v in one.items()} == {"synthetic_16x24": (1, 3, 16, 24)}


def _data_op_program(shape: list[int]) -> dict[str, object]:
    data = {"#": "1.data", "A": [{"AT": {"#": "0.a_str", "D": "x"}, "N": "name"},
                                 {"AT": {"#": "1.a_intarray", "D": shape}, "N": "shape"}], "I": [], "O": []}
    return {"program": {"regions": [{"blocks": [{"ops": [data]}]}]}}


def test_static_input_shape_of_a_fixed_export_freezes_the_conversion() -> None:
    # PaddleX's MaskFormer export: InputSpec [1, 3, 512, 512]
    assert pir_program.static_input_shape(_data_op_program([1, 3, 512, 512])) == (1, (512, 512))
    assert pir_program.static_input_shape(_data_op_program([-1, 3, -1, -1])) == (None, None)
    assert pir_program.check_fixed_hw((512, 512), None) == (512, 512)
    assert pir_program.check_fixed_hw(None, (64, 96)) == (64, 96)
    with pytest.raises(ConversionError, match="fixed input of 512x512.*Omit --fixed-shape"):
        pir_program.check_fixed_hw((512, 512), (256, 256))


def test_tie_figures_locate_disagreements_at_small_margins() -> None:
    from fastseg.convert.verify import tie_figures

    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 0] = [[5.0, 5.0], [5.0, 1.0]]
    logits[0, 1] = [[1.0, 4.999], [0.0, 3.0]]  # pixel (0, 1): a near-tie, margin 1e-3
    mismatch = np.array([[[False, True], [False, False]]])
    figs = tie_figures(logits, mismatch)
    assert figs["disagreeing_pixels"] == 1
    assert figs["max_top2_margin_at_disagreements"] == pytest.approx(1e-3, abs=1e-6)
    assert figs["median_top2_margin"] > 1.0
    assert "max_top2_margin_at_disagreements" not in tie_figures(logits, np.zeros_like(mismatch))
    assert tie_figures(np.zeros((1, 2, 2), np.int32), mismatch) == {}
