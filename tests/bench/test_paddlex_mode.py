"""bench's PaddleX peer runs each model in PaddleX's own default CPU run mode (checked without PaddleX)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from fastseg import bench
from fastseg.bench import workers
from fastseg.bench.paddlex_mode import PaddlexPolicy, choose_run_mode, mirrored_policy, paddlex_policy
from fastseg.bench.render import table_rows
from fastseg.bench.report import BackendResult, BenchReport, ModelResult, Stats


def test_paddlex_default_is_mkldnn_except_for_its_blocklisted_maskformers() -> None:
    policy = mirrored_policy()
    assert choose_run_mode("PP-LiteSeg-T", None, policy).runs == "mkldnn"
    for name in ("MaskFormer_tiny", "MaskFormer_small"):
        mode = choose_run_mode(name, None, policy)
        assert (mode.requested, mode.runs, mode.label()) == ("paddle", "paddle", "paddle")


def test_bf16_asked_for_a_blocklisted_model_runs_paddle_and_says_so() -> None:
    policy = mirrored_policy()
    assert choose_run_mode("SegFormer-B0", "mkldnn_bf16", policy).label() == "mkldnn_bf16"
    refused = choose_run_mode("MaskFormer_tiny", "mkldnn_bf16", policy)
    assert refused.runs == "paddle"
    assert refused.label() == "paddle (mkldnn_bf16 refused: PaddleX's MKLDNN_BLOCKLIST)"
    unblocked = PaddlexPolicy(policy.default_mode, policy.blocklist, True, "test")  # PADDLE_PDX_DISABLE_MKLDNN_MODEL_BL
    assert choose_run_mode("MaskFormer_tiny", "mkldnn_bf16", unblocked).runs == "mkldnn_bf16"


def test_without_onednn_every_default_is_paddle() -> None:
    assert choose_run_mode("PP-LiteSeg-T", None, mirrored_policy(mkldnn_available=False)).runs == "paddle"


@pytest.fixture()
def fake_paddlex(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """A paddlex package whose create_model records the option's run mode; no config module."""
    seen: dict[str, object] = {}

    class Option:
        def __init__(self, **kwargs: object) -> None:
            seen.update(kwargs)

    class Model:
        def predict(self, paths: list[str], batch_size: int) -> list[str]:
            return paths

    fake = types.ModuleType("paddlex")
    fake.create_model = lambda **kwargs: Model()  # type: ignore[attr-defined]
    inference = types.ModuleType("paddlex.inference")
    inference.PaddlePredictorOption = Option  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "paddlex", fake)
    monkeypatch.setitem(sys.modules, "paddlex.inference", inference)
    yield seen


def _spec(name: str) -> dict[str, object]:
    return {"threads": 2, "model_name": name, "paddle_dir": ".", "batch": 1, "image": "x.png", "runs": 2, "warmup": 0}


def test_paddlex_peer_runs_each_models_default_and_records_it(fake_paddlex: dict[str, object]) -> None:
    result = workers._WORKERS["paddlex"](_spec("MaskFormer_tiny"))
    assert fake_paddlex["run_mode"] == "paddle" and result["run_mode"] == "paddle"
    assert "run_mode=paddle (PaddleX's default" in result["detail"] and len(result["samples_ms"]["e2e"]) == 2
    result = workers._WORKERS["paddlex"](_spec("PP-LiteSeg-T"))
    assert fake_paddlex["run_mode"] == "mkldnn" and result["run_mode"] == "mkldnn"


def test_the_paddlex_bf16_peer_asks_for_mkldnn_bf16(fake_paddlex: dict[str, object]) -> None:
    result = workers._WORKERS["paddlex-bf16"](_spec("PP-LiteSeg-T"))
    assert fake_paddlex["run_mode"] == "mkldnn_bf16" and result["run_mode"] == "mkldnn_bf16"
    assert "run_mode=mkldnn_bf16 (asked" in result["detail"] and "paddlex-bf16" in bench.AGAINST
    result = workers._WORKERS["paddlex-bf16"](_spec("MaskFormer_small"))
    assert fake_paddlex["run_mode"] == "paddle" and result["run_mode"].startswith("paddle (mkldnn_bf16 refused")


def test_the_installed_paddlex_rules_win_over_the_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    config = types.ModuleType("paddlex.inference.models.runners.paddle_static.config")
    config.MKLDNN_BLOCKLIST = ["PP-LiteSeg-T"]  # type: ignore[attr-defined]
    config.get_default_run_mode = lambda name, device: "paddle" if name == "PP-LiteSeg-T" else "mkldnn"  # type: ignore[attr-defined]
    flags = types.ModuleType("paddlex.utils.flags")
    flags.DISABLE_MKLDNN_MODEL_BL = False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "paddlex.inference.models.runners.paddle_static.config", config)
    monkeypatch.setitem(sys.modules, "paddlex.utils.flags", flags)
    policy = paddlex_policy()
    assert policy.source == "read from the installed PaddleX"
    assert choose_run_mode("PP-LiteSeg-T", None, policy).runs == "paddle"
    assert choose_run_mode("MaskFormer_tiny", None, policy).runs == "mkldnn"


def test_the_table_names_the_run_mode_beside_paddlex_time() -> None:
    stats = {"e2e": Stats(4315.0, 4400.0, 4300.0, 4330.0, 5)}
    fastseg = BackendResult("fastseg", "ok", stats={"e2e": Stats(2000.0, 2100.0, 1990.0, 2010.0, 5)}, engine="ort")
    px = BackendResult("paddlex", "ok", stats=stats, run_mode="paddle")
    model = ModelResult("MaskFormer_tiny", "reference weights", 100.0, {"fastseg": fastseg, "paddlex": px}, {})
    report = BenchReport({}, {}, {"peak_gflops": 157.0}, [model], {})
    row = table_rows(report)[0]
    assert row["PaddleX e2e ms"] == "4315.0 (paddle)" and row["fastseg/PaddleX"] == "0.46x"


ZEN1 = frozenset({"avx", "avx2", "fma", "f16c"})
SKYLAKE_SP = ZEN1 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
ZEN4 = SKYLAKE_SP | {"avx512_bf16", "avx512_vnni"}


def test_mkldnn_bf16_is_labelled_by_what_paddle_computes_on_the_cpu() -> None:
    policy = mirrored_policy()
    assert choose_run_mode("PP-LiteSeg-T", "mkldnn_bf16", policy, ZEN1).label() == (
        "mkldnn_bf16 (ran fp32: Paddle's bf16 needs avx512_core)")
    assert choose_run_mode("PP-LiteSeg-T", "mkldnn_bf16", policy, SKYLAKE_SP).label() == (
        "mkldnn_bf16 (bf16 emulated: no avx512_bf16)")
    assert choose_run_mode("PP-LiteSeg-T", "mkldnn_bf16", policy, ZEN4).label() == "mkldnn_bf16"
    assert choose_run_mode("PP-LiteSeg-T", None, policy, ZEN1).label() == "mkldnn"  # fp32 is fp32 anywhere
    assert choose_run_mode("MaskFormer_tiny", "mkldnn_bf16", policy, ZEN1).runs == "paddle"


def test_the_bf16_peer_records_an_fp32_run_on_a_cpu_without_avx512_core(fake_paddlex: dict[str, object]) -> None:
    result = workers._WORKERS["paddlex-bf16"]({**_spec("PP-LiteSeg-T"), "cpu_flags": sorted(ZEN1)})
    assert fake_paddlex["run_mode"] == "mkldnn_bf16"  # asked as a user would; Paddle decides
    assert result["run_mode"] == "mkldnn_bf16 (ran fp32: Paddle's bf16 needs avx512_core)"
    assert "ran fp32" in result["detail"]
