"""pytest-benchmark: the cost of scoring, next to inference (target: < 10% of it).

Run quietly:  pytest benchmarks/test_bench_eval.py --benchmark-enable
Smoke (CI):   pytest benchmarks/test_bench_eval.py --benchmark-disable   (2 maps of 64x128)

Enabled, each test scores 500 Cityscapes-sized (1024x2048, 19 classes) maps, cycling over 8
distinct blocky label/prediction pairs (500 distinct maps would need ~5 GB). PP-LiteSeg-T infers
a 1024x2048 frame in ~1 s on this machine, so the target is < 100 ms per map; the tests record
``ms_per_map`` in extra_info and fail above it. ``..._with_png_labels`` adds decoding each
label PNG (what ``fastseg eval`` does per image on top of inference).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from fastseg.evaluation.datasets import read_label
from fastseg.evaluation.metrics import ConfusionAccumulator, evaluate_labels

CLASSES = 19
DISTINCT = 8
TARGET_MS_PER_MAP = 100.0  # 10% of ~1 s PP-LiteSeg-T inference per 1024x2048 frame


@pytest.fixture(scope="module")
def setting(request: pytest.FixtureRequest) -> tuple[int, int, int]:
    """(maps, height, width): 500 x 1024x2048 when benchmarking, 2 x 64x128 for the smoke run."""
    config = request.config  # pyproject's addopts disables benchmarks; --benchmark-enable wins, as in pytest-benchmark
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        return 2, 64, 128
    return 500, 1024, 2048


def _pair(seed: int, h: int, w: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
    """A blocky label (16x16-pixel regions, 5% ignore) and a prediction that agrees on ~80%."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, CLASSES, (max(1, h // 16), max(1, w // 16)), dtype=np.uint8)
    label = np.asarray(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST), dtype=np.uint8)
    pred = label.astype(np.int32)
    wrong = rng.random((h, w)) < 0.2
    pred[wrong] = rng.integers(0, CLASSES, int(wrong.sum()))
    label[rng.random((h, w)) < 0.05] = 255
    return pred, label


@pytest.fixture(scope="module")
def pairs(setting: tuple[int, int, int]) -> list[tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]]:
    _, h, w = setting
    return [_pair(seed, h, w) for seed in range(DISTINCT)]


def _check(benchmark, maps: int) -> None:  # type: ignore[no-untyped-def]
    if benchmark.enabled:
        ms = 1000 * benchmark.stats.stats.mean / maps
        benchmark.extra_info["ms_per_map"] = round(ms, 2)
        assert ms < TARGET_MS_PER_MAP, f"{ms:.1f} ms per map, target < {TARGET_MS_PER_MAP} ms"


def test_score_label_maps(benchmark, setting, pairs) -> None:  # type: ignore[no-untyped-def]
    maps = setting[0]

    def run() -> float:
        return evaluate_labels((pairs[i % DISTINCT] for i in range(maps)), CLASSES).miou

    miou = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0) if benchmark.enabled else benchmark(run)
    assert 0.5 < miou < 0.9
    _check(benchmark, maps)


def test_score_label_maps_with_png_labels(benchmark, setting, pairs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    maps = setting[0]
    files = []
    for i, (_, label) in enumerate(pairs):
        files.append(tmp_path / f"label_{i}.png")
        cv2.imwrite(str(files[-1]), label)

    def run() -> int:
        acc = ConfusionAccumulator(CLASSES)
        for i in range(maps):
            acc.add(pairs[i % DISTINCT][0], read_label(files[i % DISTINCT]))
        return acc.num_images

    done = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0) if benchmark.enabled else benchmark(run)
    assert done == maps
    _check(benchmark, maps)
