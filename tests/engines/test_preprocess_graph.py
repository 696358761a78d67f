"""Pre-processing inside the engine equals the numpy path: same logits (ORT exactly, OpenVINO to float32 rounding),
same labels, at odd sizes, with and without Resize, BGR->RGB or not, batched."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastseg.errors import InputError
from fastseg.model_dir import PreprocessSpec, ResizeSpec, read_meta, write_meta
from fastseg.segmenter import Segmenter
from tiny_models import random_conv_model_dir

ENGINES = ["ort", pytest.param("openvino", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="openvino not installed"))]


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((37, 53), (64, 48), (37, 53))]


def logits_dir(root: Path, *, to_rgb: bool = True, resize: ResizeSpec | None = None) -> Path:
    model = random_conv_model_dir(root, kind="logits", resize=resize)
    meta = read_meta(model)
    spec = PreprocessSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), to_rgb=to_rgb, resize=resize)
    write_meta(model, replace(meta, preprocess=spec))
    return model


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("to_rgb", [True, False])
def test_engine_preprocessing_gives_the_numpy_paths_logits(tmp_path: Path, engine: str, to_rgb: bool) -> None:
    model = logits_dir(tmp_path / "m", to_rgb=to_rgb)
    imgs = images()
    with Segmenter(model, engine=engine, preprocess="engine") as fused, Segmenter(model, engine=engine, preprocess="numpy") as plain:
        assert fused.session.fused_preprocess and not plain.session.fused_preprocess
        assert fused.session.inputs[0].name == "image_bgr_u8" and fused.session.inputs[0].type == "tensor(uint8)"
        for img in imgs:  # odd sizes, one at a time
            a = fused.infer(fused.prepare([img], None)).copy()
            b = plain.infer(plain.prepare([img], None)).copy()
            if engine == "ort":
                np.testing.assert_array_equal(a, b)  # the same float32 ops in the same order
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)  # float32 rounding (~3e-7 relative)
        got = list(fused.predict(imgs, batch_size=3))  # a batch of mixed sizes
        want = list(plain.predict(imgs, batch_size=3))
    for g, w in zip(got, want, strict=True):
        assert g.pred.shape == w.pred.shape
        np.testing.assert_array_equal(g.pred, w.pred)


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_preprocessing_with_the_models_resize(tmp_path: Path, engine: str) -> None:
    model = logits_dir(tmp_path / "m", resize=ResizeSpec(target_size=(40, 24), keep_ratio=True, size_divisor=8))
    with Segmenter(model, engine=engine) as auto, Segmenter(model, engine=engine, preprocess="numpy") as plain:
        assert auto.session.fused_preprocess  # auto: in the engine on the CPU
        for img in images(1):
            g, w = next(auto.predict(img)), next(plain.predict(img))
            assert g.pred.shape == (1, *img.shape[:2])
            np.testing.assert_array_equal(g.pred, w.pred)


def test_where_preprocessing_runs_and_what_infer_accepts(tmp_path: Path) -> None:
    model = logits_dir(tmp_path / "m")
    with Segmenter(model, slide=(16, 16)) as windows:
        assert not windows.session.fused_preprocess  # windows are cut from the normalised image
    with pytest.raises(InputError, match="preprocess='engine' cannot be combined with slide"):
        Segmenter(model, slide=(16, 16), preprocess="engine")
    with pytest.raises(InputError, match="preprocess must be one of auto, engine, numpy"):
        Segmenter(model, preprocess="gpu")  # type: ignore[arg-type]
    with Segmenter(model) as seg:
        with pytest.raises(InputError, match=r"takes uint8 BGR \[N,H,W,3\] images, got float32.*Segmenter.prepare\(\)"):
            seg.infer(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.slow
@pytest.mark.paddle
@pytest.mark.shared_data
@pytest.mark.parametrize("engine", ENGINES)
def test_real_weights_label_the_same_with_engine_preprocessing(
    humanseg_dir: Path, shared_data: Path, engine: str
) -> None:
    """The real PP-HumanSegV2-Lite, its own Resize, portraits and photos at their odd sizes: >= 99.99%."""
    import cv2

    paths = sorted((shared_data / "images" / "portraits").iterdir()) + sorted((shared_data / "images" / "street").iterdir())
    same = total = 0
    with Segmenter(humanseg_dir, engine=engine, preprocess="engine") as fused, \
            Segmenter(humanseg_dir, engine=engine, preprocess="numpy") as plain:
        for path in paths:
            img = cv2.imread(str(path))
            img = img[: img.shape[0] - 1, : img.shape[1] - 3]  # odd sizes
            a, b = next(fused.predict(img)).pred, next(plain.predict(img)).pred
            same += int((a == b).sum())
            total += a.size
    assert same / total >= 0.9999


@pytest.mark.parametrize("to_rgb", [True, False])
def test_the_nhwc_prefix_normalises_before_its_transpose_and_computes_the_same_values(tmp_path: Path, to_rgb: bool) -> None:
    """OpenVINO's prefix (``layout_last``) runs the channel reorder, cast and ``x * a + b`` in
    NHWC and transposes last, next to the network, where the CPU plugin folds the transpose
    into its first reorder; elementwise ops commute with the transpose, so ONNX Runtime gives
    the uint8-first prefix's logits bit for bit."""
    import onnx
    import onnxruntime as ort

    from fastseg.engines.preprocess_graph import FUSED_INPUT, fused_model_bytes, fused_preprocess

    model = logits_dir(tmp_path / "m", to_rgb=to_rgb)
    pre = fused_preprocess(read_meta(model).preprocess)
    last = onnx.load_from_string(fused_model_bytes(model / "model.onnx", pre, layout_last=True))
    ops = [(n.op_type, [a.i for a in n.attribute if a.name == "axis"]) for n in last.graph.node[: 5 if to_rgb else 4]]
    want = ([("Gather", [3])] if to_rgb else []) + [("Cast", []), ("Mul", []), ("Add", []), ("Transpose", [])]
    assert ops == want
    assert last.graph.input[0].name == FUSED_INPUT
    first = fused_model_bytes(model / "model.onnx", pre)
    outs = []
    for graph in (first, last.SerializeToString()):
        sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        outs.append([sess.run(None, {FUSED_INPUT: img[None]})[0] for img in images(3)])
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)
