"""Sliding-window inference: PaddleSeg's layout and averaging, banded memory, graph surgery."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tiny_models import random_conv_model, random_conv_model_dir

from fastseg.errors import InputError, ModelDirError
from fastseg.graph_edit import logits_model
from fastseg.model_dir import ResizeSpec, read_meta
from fastseg.processing import preprocess_batch, restore_size
from fastseg.engines.ort import RuntimeOptions
from fastseg.segmenter import Segmenter
from fastseg.slide import BandAccumulator, SlideConfig, axis_spans, parse_hw, window_layout

OPTS = RuntimeOptions(intra_op_threads=1)


def paddleseg_slide_inference(run: Any, im: np.ndarray, crop_size: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """A line-by-line numpy transcription of PaddleSeg 2.8 ``core/infer.py::slide_inference``
    (crop_size and stride are (w, h) as there); returns the averaged float64 logits [1,C,H,W]."""
    h_im, w_im = im.shape[-2:]
    w_crop, h_crop = crop_size
    w_stride, h_stride = stride
    rows = int(np.ceil(1.0 * (h_im - h_crop) / h_stride)) + 1
    cols = int(np.ceil(1.0 * (w_im - w_crop) / w_stride)) + 1
    rows = 1 if h_im <= h_crop else rows
    cols = 1 if w_im <= w_crop else cols
    final_logit = None
    count = np.zeros([1, 1, h_im, w_im])
    for r in range(rows):
        for c in range(cols):
            h1 = r * h_stride
            w1 = c * w_stride
            h2 = min(h1 + h_crop, h_im)
            w2 = min(w1 + w_crop, w_im)
            h1 = max(h2 - h_crop, 0)
            w1 = max(w2 - w_crop, 0)
            im_crop = im[:, :, h1:h2, w1:w2]
            logit = run(np.ascontiguousarray(im_crop))
            if final_logit is None:
                final_logit = np.zeros([1, logit.shape[1], h_im, w_im])
            final_logit[:, :, h1:h2, w1:w2] += logit[:, :, : h2 - h1, : w2 - w1]
            count[:, :, h1:h2, w1:w2] += 1
    if np.sum(count == 0) != 0:
        raise RuntimeError("There are pixel not predicted. It is possible that stride is greater than crop_size")
    return final_logit / count  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slide-models")
    return {kind: random_conv_model_dir(root / kind, kind=kind) for kind in ("labels", "logits", "probs")}


@pytest.fixture(scope="module")
def logits_run(dirs: dict[str, Path]) -> Any:
    sess = ort.InferenceSession(str(dirs["logits"] / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda batch: sess.run(None, {"x": batch})[0]


def image(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference_labels(model_dir: Path, run: Any, img: np.ndarray, crop_hw: tuple[int, int], stride_hw: tuple[int, int]) -> np.ndarray:
    meta = read_meta(model_dir)
    batch = preprocess_batch([img], meta.preprocess, resize=meta.preprocess.resize)
    logit = paddleseg_slide_inference(run, batch, crop_hw[::-1], stride_hw[::-1])
    return restore_size(logit[0].argmax(axis=0).astype(np.int32), img.shape[:2])


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("length", [1, 7, 16, 17, 50, 97])
@pytest.mark.parametrize(("crop", "stride"), [(16, 16), (16, 8), (16, 5), (20, 1), (64, 48)])
def test_axis_spans_match_paddleseg_and_cover_the_axis(length: int, crop: int, stride: int) -> None:
    spans = axis_spans(length, crop, stride)
    grids = max(length - crop + stride - 1, 0) // stride + 1  # mmseg's formula, the same count
    assert len(spans) == grids
    assert spans[-1][1] == length  # last window flush with the border
    assert all(e - s == min(crop, length) for s, e in spans)
    covered = np.zeros(length, bool)
    for s, e in spans:
        covered[s:e] = True
    assert covered.all()
    assert [s for s, _ in spans] == sorted({s for s, _ in spans})  # strictly increasing starts


def test_stride_larger_than_crop_is_refused(dirs: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="larger than the window"):
        Segmenter(dirs["labels"], options=OPTS, slide=(8, 8), slide_stride=(9, 8))
    with pytest.raises(InputError, match="must be positive"):
        SlideConfig.create((0, 8))
    assert parse_hw("1024x768") == (1024, 768)
    with pytest.raises(InputError, match="HxW"):
        parse_hw("1024")


# ----------------------------------------------------------------------------- equivalence
def test_one_window_covering_the_image_equals_whole_image_inference(dirs: dict[str, Path], tmp_path: Path) -> None:
    img = image(37, 53)
    with Segmenter(dirs["labels"], options=OPTS) as whole, Segmenter(
        dirs["labels"], options=OPTS, slide=(37, 53), home=tmp_path
    ) as slid, Segmenter(dirs["labels"], options=OPTS, slide=(512, 512), home=tmp_path) as big:
        expected = next(whole.predict(img)).pred
        assert np.array_equal(next(slid.predict(img)).pred, expected)
        assert np.array_equal(next(big.predict(img)).pred, expected)  # crop larger than the image


@pytest.mark.parametrize(
    ("crop", "stride"),
    [((16, 16), (8, 8)), ((16, 24), (16, 12)), ((20, 20), (7, 13)), ((10, 40), (10, 40)), ((64, 30), (32, 20)), ((37, 9), (1, 9))],
)
def test_overlapping_windows_equal_paddleseg_slide_inference(
    dirs: dict[str, Path], logits_run: Any, tmp_path: Path, crop: tuple[int, int], stride: tuple[int, int]
) -> None:
    img = image(37, 53)
    expected = reference_labels(dirs["labels"], logits_run, img, crop, stride)
    with Segmenter(dirs["labels"], options=OPTS, slide=crop, slide_stride=stride, batch_size=3, home=tmp_path) as seg:
        got = next(seg.predict(img)).pred[0]
    assert np.array_equal(got, expected)
    with Segmenter(dirs["labels"], options=OPTS, home=tmp_path) as whole:  # the windows matter here
        if math.prod(crop) < 37 * 53 and stride != crop:
            assert not np.array_equal(next(whole.predict(img)).pred[0], expected)


def test_slide_runs_on_the_resized_image(tmp_path: Path, logits_run: Any) -> None:
    resize = ResizeSpec(target_size=(40, 24), keep_ratio=False)  # (w, h)
    model_dir = random_conv_model_dir(tmp_path / "resized", resize=resize)
    img = image(61, 90, seed=3)
    expected = reference_labels(model_dir, logits_run, img, (16, 16), (8, 12))
    with Segmenter(model_dir, options=OPTS, slide=(16, 16), slide_stride=(8, 12), home=tmp_path) as seg:
        res = next(seg.predict(img))
    assert res.pred.shape == (1, 61, 90)
    assert np.array_equal(res.pred[0], expected)


def test_mixed_sizes_in_one_batch(dirs: dict[str, Path], logits_run: Any, tmp_path: Path) -> None:
    images = [image(30, 41, seed=1), image(12, 70, seed=2), image(30, 41, seed=3), image(50, 18, seed=4)]
    with Segmenter(dirs["labels"], options=OPTS, slide=(16, 16), slide_stride=(12, 10), batch_size=4, home=tmp_path) as seg:
        results = list(seg.predict(images))
    assert [r.pred.shape[1:] for r in results] == [im.shape[:2] for im in images]
    for img, res in zip(images, results, strict=True):
        assert np.array_equal(res.pred[0], reference_labels(dirs["labels"], logits_run, img, (16, 16), (12, 10)))


def test_probs_model_slides_on_logits_and_scores_are_softmax(dirs: dict[str, Path], logits_run: Any, tmp_path: Path) -> None:
    img = image(33, 47, seed=5)
    meta = read_meta(dirs["probs"])
    batch = preprocess_batch([img], meta.preprocess, resize=None)
    mean = paddleseg_slide_inference(logits_run, batch, (16, 16), (8, 8))[0]
    probs = np.exp(mean - mean.max(axis=0)) / np.exp(mean - mean.max(axis=0)).sum(axis=0)
    with Segmenter(dirs["probs"], options=OPTS, slide=(16, 16), slide_stride=(8, 8), scores=True, home=tmp_path) as seg:
        res = next(seg.predict(img))
    assert np.array_equal(res.pred[0], mean.argmax(axis=0))
    assert res.score is not None
    np.testing.assert_allclose(res.score[0].astype(np.float64), probs.max(axis=0), atol=5e-4)  # float16 scores


# ----------------------------------------------------------------------------- bounded memory
@pytest.mark.parametrize(("hw", "crop", "stride"), [((200, 150), (64, 48), (40, 30)), ((131, 77), (32, 32), (32, 32)), ((50, 300), (64, 64), (16, 50))])
def test_band_finalisation_equals_the_full_canvas(hw: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]) -> None:
    config = SlideConfig(crop_hw=crop, stride_hw=stride)
    rng = np.random.default_rng(7)
    classes = 6
    canvas = np.zeros((classes, *hw), np.float32)
    count = np.zeros(hw, np.float32)
    acc = BandAccumulator(hw, config, with_score=True)
    for y0, y1, x0, x1 in window_layout(hw, config):
        logits = rng.standard_normal((classes, y1 - y0, x1 - x0)).astype(np.float32)
        canvas[:, y0:y1, x0:x1] += logits
        count[y0:y1, x0:x1] += 1
        acc.add((y0, y1, x0, x1), logits)
    labels, scores = acc.finish()
    mean = canvas / count
    assert np.array_equal(labels, mean.argmax(axis=0))
    assert scores is not None
    np.testing.assert_allclose(scores, 1.0 / np.exp(mean - mean.max(axis=0)).sum(axis=0), rtol=1e-6)
    assert acc.peak_band_bytes == classes * min(crop[0], hw[0]) * hw[1] * 4  # a band, not the canvas


# ----------------------------------------------------------------------------- graph surgery
def test_argmax_stripping_gives_the_logits_head(dirs: dict[str, Path], tmp_path: Path) -> None:
    before = sorted(p.name for p in dirs["labels"].iterdir())
    batch = np.random.default_rng(0).standard_normal((2, 3, 19, 23)).astype(np.float32)
    ref = ort.InferenceSession(str(dirs["logits"] / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = ref.run(None, {"x": batch})[0]
    for kind in ("labels", "probs"):
        path = logits_model(dirs[kind] / "model.onnx", tmp_path)
        assert path.parent == tmp_path / "logits"
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert np.array_equal(sess.run(None, {"x": batch})[0], expected)
        assert logits_model(dirs[kind] / "model.onnx", tmp_path) == path  # cached
    assert logits_model(dirs["logits"] / "model.onnx", tmp_path) == (dirs["logits"] / "model.onnx").resolve()
    assert sorted(p.name for p in dirs["labels"].iterdir()) == before  # the user's dir is untouched


def test_a_graph_without_a_recognisable_head_is_refused(tmp_path: Path) -> None:
    path = random_conv_model(tmp_path / "m.onnx", kind="labels")
    model = onnx.load(str(path))
    argmax = next(n for n in model.graph.node if n.op_type == "ArgMax")
    for a in argmax.attribute:
        if a.name == "axis":
            a.i = 2
    onnx.save(model, str(path))
    with pytest.raises(ModelDirError, match="--head logits"):
        logits_model(path, tmp_path / "cache")


def test_fixed_shape_models_cannot_slide(tmp_path: Path) -> None:
    from fastseg.model_dir import write_meta

    model_dir = random_conv_model_dir(tmp_path / "fixed")
    meta = read_meta(model_dir)
    frozen = {**meta.__dict__, "dynamic_hw": False, "fixed_hw": (32, 32)}
    write_meta(model_dir, type(meta)(**frozen))  # the export itself is fixed, as PaddleX's MaskFormer
    with pytest.raises(InputError, match=r"dynamic H and W \(its export fixes the input size .* run it without --slide\)"):
        Segmenter(model_dir, options=OPTS, slide=(16, 16), home=tmp_path)
    asked = {**frozen["provenance"], "options": {**frozen["provenance"].get("options", {}), "fixed_hw": [32, 32]}}
    write_meta(model_dir, type(meta)(**{**frozen, "provenance": asked}))  # frozen by convert --fixed-shape
    with pytest.raises(InputError, match=r"dynamic H and W \(re-convert without --fixed-shape\)"):
        Segmenter(model_dir, options=OPTS, slide=(16, 16), home=tmp_path)
