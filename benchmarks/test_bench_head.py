"""pytest-benchmark: a 150-class Resize->ArgMax head (SeaFormer's, ADE20K) at --bench-size,
ONNX Runtime's graph ops vs fastseg.head's banded computation on the same logits (its
compiled row pass where numba is installed; benchmarks/head_tail.py compares all three).

Run: pytest benchmarks/test_bench_head.py --benchmark-enable --bench-size 1024x2048
The logits are [1,150,H/8,W/8]: "noise" (like the random-weight references: every cell
contested, the dense path) and "regions" (like a trained model: confident regions, contested
borders, the cell path). Both heads use the machine's physical cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tail_graph import ort_tail_session

from fastseg.head import TailResize, resize_argmax
from fastseg.engines.device import physical_cores

CLASSES = 150
STRIDE = 8


def _logits(kind: str, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((1, CLASSES, h, w)).astype(np.float32) * 4
    if kind == "noise":
        return noise
    coarse = rng.standard_normal((1, CLASSES, h // 8 + 1, w // 8 + 1)).astype(np.float32)
    regions = coarse.argmax(axis=1)[:, np.arange(h) // 8][:, :, np.arange(w) // 8]
    confident = 12 * (np.arange(CLASSES)[None, :, None, None] == regions[:, None])
    return np.ascontiguousarray(noise * 0.1 + confident, dtype=np.float32)


def _ort_head() -> Any:
    return ort_tail_session(physical_cores())


@pytest.mark.parametrize("kind", ["noise", "regions"])
@pytest.mark.parametrize("head", ["ort", "banded"])
def test_head_150_classes(benchmark, bench_size: tuple[int, int], kind: str, head: str) -> None:  # type: ignore[no-untyped-def]
    h, w = bench_size
    logits = _logits(kind, max(1, h // STRIDE), max(1, w // STRIDE))
    if head == "ort":
        sess = _ort_head()
        feed = {"L": logits, "sizes": np.array([1, CLASSES, h, w], np.int64)}
        labels = benchmark(lambda: sess.run(None, feed)[0])
    else:
        spec = TailResize("linear", "half_pixel")
        labels = benchmark(resize_argmax, logits, (h, w), spec, threads=physical_cores())
    assert labels.shape == (1, h, w)
    np.testing.assert_array_equal(labels, _ort_head().run(None, {"L": logits, "sizes": np.array([1, CLASSES, h, w], np.int64)})[0])
