"""pytest-benchmark: pre/post-processing of one Cityscapes-sized (1024x2048) image.

Run: pytest benchmarks/test_bench_processing.py --benchmark-enable
Preprocessing is PP-LiteSeg-T's (Normalize mean/std 0.5, no Resize: the network sees the full
frame) written into a reused float32 batch buffer, as Segmenter does.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastseg.model_dir import PreprocessSpec, ResizeSpec
from fastseg.processing import labels_from_output, preprocess_into, restore_size
from fastseg.results import colorize

H, W = 1024, 2048
SPEC = PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def label_output() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 19, (1, H, W)).astype(np.int64)


def test_preprocess_1024x2048(benchmark, image: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    buf = np.empty((1, 3, H, W), np.float32)
    out = benchmark(preprocess_into, [image], buf, SPEC, resize=None)
    assert out.shape == (1, 3, H, W)


def test_preprocess_1024x2048_resized_to_512x1024(benchmark, image: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    buf = np.empty((1, 3, H // 2, W // 2), np.float32)
    out = benchmark(preprocess_into, [image], buf, SPEC, resize=ResizeSpec((W // 2, H // 2)))
    assert out.shape == (1, 3, H // 2, W // 2)


def _post(output: np.ndarray, src_hw: tuple[int, int]) -> np.ndarray:
    labels, _ = labels_from_output(output, "labels")
    return restore_size(labels[0], src_hw)[None]


def test_postprocess_label_map_1024x2048(benchmark, label_output: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    pred = benchmark(_post, label_output, (H, W))
    assert pred.shape == (1, H, W) and pred.dtype == np.int32


def test_postprocess_512x1024_back_to_1024x2048(benchmark, label_output: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    small = np.ascontiguousarray(label_output[:, ::2, ::2])
    pred = benchmark(_post, small, (H, W))
    assert pred.shape == (1, H, W)


def test_colorize_1024x2048(benchmark, label_output: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    labels = label_output[0].astype(np.int32)
    rgb = benchmark(colorize, labels)
    assert rgb.shape == (H, W, 3)
