"""Per-pixel scores (the winning class's probability) computed band by band by the banded head,
checked against ONNX Runtime running Resize -> Softmax -> ReduceMax on the same logits."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from head_models import tail_model, tail_model_dir
from onnx import TensorProto, helper

import fastseg.head.score as score_module
from fastseg.head import prepare_head
from fastseg.segmenter import Segmenter

VARIANTS: dict[str, dict[str, Any]] = {
    "half_pixel": {},
    "align_corners": {"coordinate_mode": "align_corners"},
    "scales": {"size_from": "scales", "stride": 3},
    "nearest": {"mode": "nearest", "coordinate_mode": "asymmetric"},
    "last_index_keepdims": {"keepdims": 1, "select_last_index": 1},
}


def _score_reference(model: Path, out: Path) -> Path:
    """The same graph with ArgMax replaced by Softmax -> ReduceMax: ORT's own scores."""
    m = onnx.load(str(model))
    argmax = m.graph.node[-1]
    assert argmax.op_type == "ArgMax"
    del m.graph.node[-1]
    m.graph.node.extend([
        helper.make_node("Softmax", [argmax.input[0]], ["probs"], axis=1),
        helper.make_node("ReduceMax", ["probs"], [argmax.output[0]], axes=[1], keepdims=0),
    ])
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    del m.graph.output[0].type.tensor_type.shape.dim[:]
    onnx.save(m, str(out))
    return out


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_banded_scores_equal_ort_softmax(variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tail_model(tmp_path / "m.onnx", classes=6, **VARIANTS[variant])
    reference = _score_reference(model, tmp_path / "ref.onnx")
    head = prepare_head(model, head="banded", home=tmp_path / "home")
    x = np.random.default_rng(3).standard_normal((2, 3, 37, 53)).astype(np.float32)
    logits = _run(head.model_path, x)
    labels, scores = head.finish_scored(logits, x.shape)
    np.testing.assert_array_equal(labels, _run(model, x))  # the same labels as finish
    out_hw = labels.shape[-2:]  # the input size, or 3x the logits' for the scales variant
    assert scores is not None and scores.dtype == np.float32 and scores.shape == (2, *out_hw)
    want = _run(reference, x).reshape(scores.shape)
    np.testing.assert_allclose(scores, want, atol=2e-6)
    monkeypatch.setattr(score_module, "_BAND_FLOATS", 6 * out_hw[1] * 3)  # 3 rows per band
    np.testing.assert_allclose(head.finish_scored(logits, x.shape)[1], scores, atol=1e-7)


def test_segmenter_scores_on_an_argmax_model(tmp_path: Path) -> None:
    model_dir = tail_model_dir(tmp_path / "model", classes=8)
    reference = _score_reference(model_dir / "model.onnx", tmp_path / "ref.onnx")
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    with Segmenter(model_dir, home=tmp_path / "home", scores=True) as scored, \
            Segmenter(model_dir, home=tmp_path / "home", head="graph") as plain:
        assert (scored.head, plain.head) == ("banded", "graph")
        res = next(scored.predict(image))
        np.testing.assert_array_equal(res.pred, next(plain.predict(image)).pred)
        x = np.empty((1, 3, 45, 70), np.float32)
        from fastseg.processing import preprocess_into

        batch = preprocess_into([image], x, scored.meta.preprocess, resize=scored.resize)
    assert res.score is not None and res.score.shape == (1, 45, 70) and "score" in res
    assert res.score.dtype == np.float16  # float16 in Python, half the memory of float32
    np.testing.assert_allclose(res.score[0].astype(np.float32), _run(reference, batch)[0], atol=5e-4)
    assert 1.0 / 8 <= float(res.score.min()) and float(res.score.max()) <= 1.0


def test_scores_are_float16_softmax_of_the_logits(tmp_path: Path) -> None:
    """A logits model: ``res.score`` is float16 max(softmax(logits)), and its PNG is round(255 * score)."""
    from tiny_models import random_conv_model_dir

    from fastseg.processing import preprocess_into
    from fastseg.results import score_png

    import cv2

    model_dir = random_conv_model_dir(tmp_path / "logits", kind="logits", classes=5)
    image = np.random.default_rng(1).integers(0, 256, (19, 23, 3), dtype=np.uint8)
    with Segmenter(model_dir, scores=True) as seg:
        res = next(seg.predict(image))
        batch = preprocess_into([image], np.empty((1, 3, 19, 23), np.float32), seg.meta.preprocess, resize=seg.resize)
    logits = _run(model_dir / "model.onnx", batch)[0].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=0)) / np.exp(logits - logits.max(axis=0)).sum(axis=0)
    assert res.score is not None and res.score.dtype == np.float16 and res.score.shape == (1, 19, 23)
    np.testing.assert_allclose(res.score[0].astype(np.float64), probs.max(axis=0), atol=5e-4)
    np.testing.assert_array_equal(res.pred[0], probs.argmax(axis=0))
    grey = cv2.imdecode(np.frombuffer(score_png(res.score[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, np.rint(res.score[0].astype(np.float32) * 255).astype(np.uint8))
    assert score_png(res.score) == score_png(res.score[0])  # the result's [1,H,W] score as it comes
    from fastseg.errors import InputError

    with pytest.raises(InputError, match=r"score map \[H,W\] or a result's score \[1,H,W\], got shape \(2, 19, 23\)"):
        score_png(np.zeros((2, 19, 23), np.float32))


def test_graph_head_without_logits_gives_no_score(tmp_path: Path) -> None:
    model_dir = tail_model_dir(tmp_path / "model", classes=4)
    image = np.zeros((8, 8, 3), np.uint8)
    with Segmenter(model_dir, home=tmp_path / "home", scores=True, head="graph") as seg:
        assert next(seg.predict(image)).score is None


def test_cli_save_scores_images_and_video(tmp_path: Path) -> None:
    import cv2
    from click.testing import CliRunner

    from fastseg.cli import main

    model_dir = tail_model_dir(tmp_path / "model", classes=8)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "p.png"), rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 5, (28, 20))
    for _ in range(3):
        writer.write(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    env = {"FASTSEG_HOME": str(tmp_path / "home")}
    for name in ("p.png", "v.avi"):
        result = CliRunner(env=env).invoke(main, ["predict", "--input", str(tmp_path / name), "--model", str(model_dir),
                                                  "--save_path", str(out), "--no-json", "--save_scores"])
        assert result.exit_code == 0, result.output
    with Segmenter(model_dir, home=tmp_path / "home", scores=True) as seg:
        want = next(seg.predict(str(tmp_path / "p.png"))).score
    grey = cv2.imread(str(out / "p_res_score.png"), cv2.IMREAD_UNCHANGED)
    assert want is not None and grey.dtype == np.uint8 and grey.shape == (20, 28)
    np.testing.assert_array_equal(grey, np.rint(want[0].astype(np.float32) * 255).astype(np.uint8))
    assert sorted(p.name for p in (out / "v_res_score").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    odd = tail_model_dir(tmp_path / "odd", classes=8, between="Softmax")  # a tail the banded head refuses
    graph = CliRunner(env=env).invoke(main, ["predict", "--input", str(tmp_path / "p.png"), "--model", str(odd),
                                             "--save_path", str(out), "--save_scores"])
    assert graph.exit_code != 0 and "no logits to score" in graph.output and "--slide gives scores" in graph.output
    meta = json.loads((odd / "fastseg.json").read_text())
    (odd / "fastseg.json").write_text(json.dumps({**meta, "dynamic_hw": False, "fixed_hw": [20, 28]}))  # as MaskFormer's
    frozen = CliRunner(env=env).invoke(main, ["predict", "--input", str(tmp_path / "p.png"), "--model", str(odd),
                                              "--save_path", str(out), "--save_scores"])
    assert frozen.exit_code != 0 and "--slide" not in frozen.output and "--head logits" in frozen.output, frozen.output
