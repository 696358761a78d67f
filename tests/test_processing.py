"""Pre/post-processing: PaddleX Resize rules, fused normalise into NCHW, BGR order, label maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastseg.errors import InputError
from fastseg.model_dir import PreprocessSpec, ResizeSpec
from fastseg.processing import (
    as_bgr,
    decode_image,
    group_by_shape,
    labels_from_output,
    preprocess_batch,
    preprocess_into,
    resize_spec_for,
    resized_hw,
    restore_size,
    uint8_batch,
)

SPEC = PreprocessSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.mark.parametrize(
    ("src_hw", "resize", "expected"),
    [
        ((1024, 2048), None, (1024, 2048)),
        ((1024, 2048), ResizeSpec((512, 512)), (512, 512)),
        ((1024, 2048), ResizeSpec((512, 512), keep_ratio=True), (256, 512)),
        # scale = min(512/500, 512/375) = 1.024 -> 512 x round(384.0); divisor keeps 384
        ((375, 500), ResizeSpec((512, 512), keep_ratio=True, size_divisor=32), (384, 512)),
        ((100, 150), ResizeSpec((100, 100), size_divisor=32), (128, 128)),  # rounds UP
        ((144, 256), ResizeSpec((256, 144)), (144, 256)),  # (width, height) as in PaddleSeg YAML
        ((333, 777), ResizeSpec((300, 200), keep_ratio=True), (129, 300)),  # min(300/777, 200/333)
        ((1, 4000), ResizeSpec((512, 512), keep_ratio=True), (1, 512)),  # a thin strip keeps one row
    ],
)
def test_resized_hw_matches_paddlex(src_hw: tuple[int, int], resize: ResizeSpec | None, expected: tuple[int, int]) -> None:
    assert resized_hw(src_hw, resize) == expected


def test_user_target_size_overrides_like_paddlex() -> None:
    base = ResizeSpec((2048, 1024), keep_ratio=False, size_divisor=None, interp="NEAREST")
    assert resize_spec_for(base, None) is base
    assert resize_spec_for(base, 512) == ResizeSpec((512, 512), keep_ratio=False, size_divisor=None, interp="NEAREST")
    assert resize_spec_for(base, (640, 320)).target_size == (640, 320)
    assert resize_spec_for(None, 512) == ResizeSpec((512, 512), keep_ratio=True, size_divisor=32, interp="LINEAR")
    assert resize_spec_for(base, -1) is None
    for bad in (0, (1, 2, 3), "512", (-5, 10)):
        with pytest.raises(InputError, match="target_size"):
            resize_spec_for(base, bad)  # type: ignore[arg-type]


def _reference(img_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    img = img_bgr[:, :, ::-1] if spec.to_rgb else img_bgr
    x = (img.astype(np.float64) * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    return x.transpose(2, 0, 1).astype(np.float32)


def test_preprocess_equals_reference_formula() -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    batch = preprocess_batch(imgs, SPEC, resize=None)
    assert batch.dtype == np.float32 and batch.shape == (3, 3, 20, 30) and batch.flags.c_contiguous
    for i, img in enumerate(imgs):
        np.testing.assert_allclose(batch[i], _reference(img, SPEC), atol=1e-5)


def test_preprocess_resizes_like_cv2() -> None:
    img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    resize = ResizeSpec((30, 20), interp="LINEAR")
    batch = preprocess_batch([img], SPEC, resize=resize)
    expected = _reference(cv2.resize(img, (30, 20), interpolation=cv2.INTER_LINEAR), SPEC)
    np.testing.assert_allclose(batch[0], expected, atol=1e-5)


def test_preprocess_into_fills_the_callers_buffer() -> None:
    buf = np.full((2, 3, 8, 8), np.nan, dtype=np.float32)
    imgs = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
    out = preprocess_into(imgs, buf, PreprocessSpec(), resize=None)
    assert out is buf
    assert np.all(buf[0] == -1.0) and np.all(buf[1] == 1.0)


def test_pure_red_bgr_is_seen_as_red() -> None:
    red_bgr = np.zeros((4, 4, 3), np.uint8)
    red_bgr[..., 2] = 255  # OpenCV order: B, G, R
    rgb = preprocess_batch([red_bgr], PreprocessSpec(to_rgb=True), resize=None)[0]
    assert np.all(rgb[0] == 1.0) and np.all(rgb[1] == -1.0) and np.all(rgb[2] == -1.0)
    bgr = preprocess_batch([red_bgr], PreprocessSpec(to_rgb=False), resize=None)[0]
    assert np.all(bgr[2] == 1.0) and np.all(bgr[0] == -1.0)


def test_preprocess_batch_refuses_mixed_sizes() -> None:
    with pytest.raises(InputError, match="group_by_shape"):
        preprocess_batch([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], SPEC, resize=None)


def test_group_by_shape_keeps_first_appearance_order() -> None:
    assert group_by_shape([(2, 3), (4, 5), (2, 3), (1, 1), (4, 5)]) == [[0, 2], [1, 4], [3]]


def test_labels_outputs() -> None:
    lab = np.random.default_rng(2).integers(0, 5, (2, 6, 7)).astype(np.int64)
    out, score = labels_from_output(lab, "labels")
    assert out.dtype == np.int32 and score is None
    np.testing.assert_array_equal(out, lab)
    assert not np.shares_memory(out, lab)
    out4, _ = labels_from_output(lab[:, None].astype(np.int32), "labels")
    np.testing.assert_array_equal(out4, lab)
    assert not np.shares_memory(out4, lab)
    with pytest.raises(InputError):
        labels_from_output(lab[0], "labels")


def test_logits_and_probs_argmax_and_score() -> None:
    logits = np.random.default_rng(3).standard_normal((2, 4, 5, 6)).astype(np.float32)
    labels, score = labels_from_output(logits, "logits", with_score=True)
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert score is not None
    np.testing.assert_allclose(score, probs.max(axis=1), rtol=1e-5)
    labels_p, score_p = labels_from_output(probs, "probs", with_score=True)
    np.testing.assert_array_equal(labels_p, labels)
    np.testing.assert_allclose(score_p, probs.max(axis=1))  # type: ignore[arg-type]
    assert labels_from_output(probs, "probs")[1] is None


def test_restore_size_is_nearest() -> None:
    labels = np.random.default_rng(4).choice(np.array([0, 7, 19], dtype=np.int32), size=(32, 64))
    big = restore_size(labels, (101, 203))
    assert big.shape == (101, 203) and big.dtype == np.int32
    assert set(np.unique(big)) <= {0, 7, 19}, "nearest: only existing labels"
    np.testing.assert_array_equal(big, cv2.resize(labels, (203, 101), interpolation=cv2.INTER_NEAREST))
    assert restore_size(labels, (32, 64)) is labels


def test_decode_and_validate_images() -> None:
    ok, png = cv2.imencode(".png", np.full((3, 5, 3), 7, np.uint8))
    assert ok
    img = decode_image(png.tobytes())
    assert img.shape == (3, 5, 3) and img.dtype == np.uint8
    with pytest.raises(InputError, match="Cannot decode"):
        decode_image(b"\x89PNG not really", source="x.png")
    with pytest.raises(InputError, match="Cannot decode"):
        decode_image(b"")
    gray = as_bgr(np.full((4, 6), 9, np.uint8))
    assert gray.shape == (4, 6, 3) and np.all(gray == 9)
    assert as_bgr(np.zeros((4, 6, 4), np.uint8)).shape == (4, 6, 3)
    with pytest.raises(InputError, match="uint8"):
        as_bgr(np.zeros((4, 6, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        as_bgr(np.zeros((4, 6, 5), np.uint8))
    with pytest.raises(InputError, match="numpy array"):
        as_bgr([1, 2, 3])  # type: ignore[arg-type]


def test_uint8_batch_is_the_image_itself_when_nothing_needs_copying() -> None:
    """One contiguous image at the network's size is its own batch (no 6 MB copy per image);
    anything else is resized or copied into the buffer, as before."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    made: list[np.ndarray] = []

    def buffer(n: int = 1, h: int = 6, w: int = 8) -> np.ndarray:
        made.append(np.zeros((n, h, w, 3), np.uint8))
        return made[-1]

    view = uint8_batch([img], (6, 8), None, buffer)
    assert view.shape == (1, 6, 8, 3) and np.shares_memory(view, img) and not made
    strided = np.ascontiguousarray(rng.integers(0, 256, (6, 16, 3), dtype=np.uint8))[:, ::2]
    copied = uint8_batch([strided], (6, 8), None, buffer)
    assert copied is made[-1] and np.array_equal(copied[0], strided)
    two = uint8_batch([img, img[::-1].copy()], (6, 8), None, lambda: buffer(2))
    assert two is made[-1] and np.array_equal(two[1], img[::-1])
    smaller = uint8_batch([img], (3, 4), ResizeSpec((3, 4)), lambda: buffer(1, 3, 4))
    assert smaller is made[-1] and smaller.shape == (1, 3, 4, 3)


def test_label_output_is_copied_unless_the_caller_owns_it() -> None:
    """An engine's reused output buffer must be copied (its next run overwrites it); the banded
    head's fresh int32 labels need not be."""
    out = np.arange(12, dtype=np.int32).reshape(1, 3, 4)
    copied, _ = labels_from_output(out, "labels")
    kept, _ = labels_from_output(out, "labels", owned=True)
    assert not np.shares_memory(copied, out) and np.array_equal(copied, out)
    assert np.shares_memory(kept, out) and kept.dtype == np.int32
    widened, _ = labels_from_output(out.astype(np.int64), "labels", owned=True)  # int64 graphs: converted either way
    assert widened.dtype == np.int32 and np.array_equal(widened, out)
