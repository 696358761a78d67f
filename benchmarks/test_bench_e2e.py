"""End to end per family (decode excluded: an in-memory BGR image in, a label map out) on
reference builds (random weights, PaddleX-identical export and cost).

Skipped unless --families names models (e.g. --families PP-LiteSeg-T,SegFormer-B0,Deeplabv3-R50,
OCRNet_HRNet-W18,SeaFormer_tiny): the first run builds and converts them (minutes each) into
$FASTSEG_HOME/bench, later runs reuse them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO_ROOT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "family_model" in metafunc.fixturenames:
        raw = str(metafunc.config.getoption("--families"))
        if raw == "all":
            from fastseg.zoo import load_zoo

            names = load_zoo().names()
        else:
            names = [n for n in raw.split(",") if n]
        metafunc.parametrize("family_model", names or [None], ids=names or ["no-families"])


@pytest.fixture()
def family_dir(family_model: str | None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if family_model is None:
        pytest.skip("end-to-end family benchmarks need --families NAME,... (builds reference models)")
    pytest.importorskip("paddle")
    sys.path.insert(0, str(REPO_ROOT))
    from converters.reference_models import ensure_reference

    from fastseg import bench
    from fastseg.convert import convert_model
    from fastseg.zoo import cache_home

    def convert(paddle_dir: Path, onnx_dir: Path, name: str) -> None:
        convert_model(paddle_dir, onnx_dir, model_name=name, verify=False)

    return bench.resolve_model(family_model, home=cache_home(), build_reference=ensure_reference, convert=convert).onnx_dir


def test_end_to_end(benchmark: Any, family_dir: Path, bench_size: tuple[int, int]) -> None:
    from fastseg.engines.ort import RuntimeOptions
    from fastseg.segmenter import Segmenter

    h, w = bench_size
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    with Segmenter(family_dir, options=RuntimeOptions(intra_op_threads=2)) as seg:
        (result,) = benchmark(lambda: seg.predict_images([image]))
    assert result.pred.shape == (1, h, w)
