"""fastseg tune (every engine x precision timed, the winner recorded) and bench's variant rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.engines import cpu, tuning
from fastseg.errors import DeviceError, InputError
from fastseg.model_dir import read_meta
from fastseg.segmenter import Segmenter
from tiny_models import colour_image, colour_model_dir, random_net_dir

needs_quant = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ml_dtypes") is None, reason="int8 needs the [quantize] extra"
)
needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="bf16 runs on OpenVINO (the [openvino] extra)"
)


@needs_quant
def test_tune_records_a_winner_that_auto_then_runs(tmp_path: Path) -> None:
    model = colour_model_dir(tmp_path / "colour")
    result = CliRunner().invoke(main, ["tune", str(model), "--size", "32x48", "--runs", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    record = json.loads((model / tuning.TUNING_FILE).read_text())
    engines = {row["engine"] for row in record["table"]}
    assert "ort" in engines and all(row["median_ms"] > 0 for row in record["table"])
    # each engine's recorded label agreement with ORT fp32 (the colour model is exact on every engine)
    assert all(row["agreement_with_ort_fp32_pct"] == 100.0 for row in record["table"])
    assert record["fingerprint"] == tuning.machine_fingerprint()
    assert record["fingerprint"]["isa"] == list(cpu.precision_flags())
    winner = record["winner"]["engine"]
    assert f"Winner: {winner} fp32" in result.output
    with Segmenter(model) as seg:  # engine="auto" is the default
        assert seg.engine_name == winner
        np.testing.assert_array_equal(np.unique(next(seg.predict(colour_image()))["pred"]), [0, 1, 2])


@needs_openvino
def test_tune_skips_a_bf16_variant_on_a_cpu_without_bf16_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastseg.precision.quantize import quantize_model
    from fastseg.precision.tune import candidates

    model = colour_model_dir(tmp_path / "fp32")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    quantize_model(model, None, tmp_path / "bf16", precision="bf16", val_dir=_stripes(tmp_path / "val"))
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    cands, skipped = candidates(model, engines=["ort", "openvino"])
    assert [c.precision for c in cands] == ["fp32", "fp32"]
    assert len(skipped) == 1 and skipped[0].endswith("this CPU has no bf16 instructions (amx_bf16 / avx512_bf16)")


@needs_openvino
def test_tune_on_a_bf16_directory_keeps_bf16_and_only_chooses_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quantized directory tuned by itself: its own precision on the engines that compute it,
    labels compared with the fp32 directory it came from, and a record engine="auto" then runs."""
    from fastseg.precision.quantize import quantize_model
    from fastseg.precision.tune import candidates, fp32_reference

    model = colour_model_dir(tmp_path / "fp32")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    bf16 = tmp_path / "bf16"
    quantize_model(model, None, bf16, precision="bf16", val_dir=_stripes(tmp_path / "val"))
    cands, skipped = candidates(bf16, engines=["ort", "openvino"])
    assert [(c.engine, c.precision, c.model_dir) for c in cands] == [("openvino", "bf16", bf16)] and skipped == []
    assert fp32_reference(bf16) == model.resolve() and fp32_reference(model) == model
    with pytest.raises(InputError, match="is itself a bf16 variant: tune the fp32 model directory"):
        candidates(bf16, engines=["ort", "openvino"], variants=[bf16])
    with pytest.raises(InputError, match="runs on OpenVINO only, and OpenVINO is not installed"):
        candidates(bf16, engines=["ort"])
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(DeviceError, match="bf16 needs a CPU with AMX or AVX512-BF16"):
        candidates(bf16, engines=["ort", "openvino"])


@needs_quant
def test_tune_on_an_int8_directory_times_int8_on_each_engine_and_auto_runs_the_winner(tmp_path: Path) -> None:
    from fastseg.precision.quantize import quantize_model

    model = colour_model_dir(tmp_path / "fp32")
    int8 = tmp_path / "int8"
    val = _stripes(tmp_path / "val")
    import cv2

    cv2.imwrite(str(val / "a.png"), cv2.flip(colour_image(), 1))  # held out: not a calibration image
    quantize_model(model, _stripes(tmp_path / "calib"), int8, val_dir=val)
    result = CliRunner().invoke(main, ["tune", str(int8), "--size", "32x48", "--runs", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "32x48, a synthetic image" in result.output
    record = json.loads((int8 / tuning.TUNING_FILE).read_text())
    assert {row["precision"] for row in record["table"]} == {"int8"}
    assert {row["engine"] for row in record["table"]} == set(__import__("fastseg.engines", fromlist=["x"]).available_engines())
    assert all(row["agreement_with_ort_fp32_pct"] is not None for row in record["table"])  # against fp32/
    assert record["winner"]["precision"] == "int8"
    with Segmenter(int8) as seg:  # the record is this directory's own: no "says fp32" fallback
        assert (seg.engine_name, seg.precision) == (record["winner"]["engine"], "int8")
        assert seg.engine_choice.reason.startswith("tuned")


def _stripes(root: Path) -> Path:
    import cv2

    root.mkdir(parents=True)
    cv2.imwrite(str(root / "a.png"), colour_image())
    return root


@pytest.mark.slow
@pytest.mark.paddle
@pytest.mark.shared_data
@needs_quant
@pytest.mark.parametrize("precision", ["int8", "int8-bf16"])
def test_the_gate_accepts_the_real_pp_humanseg(humanseg_dir: Path, shared_data: Path, tmp_path: Path, precision: str) -> None:
    """Real weights: int8 (and int8-bf16, its OpenVINO mix with bf16) keep >= 99% of fp32's labels
    on portraits they were not calibrated on."""
    from fastseg.precision.quantize import quantize_model

    if precision == "int8-bf16" and (not cpu.has_bf16() or __import__("importlib").util.find_spec("openvino") is None):
        pytest.skip("int8-bf16 needs OpenVINO and a CPU with bf16 instructions (amx_bf16 / avx512_bf16)")
    out = tmp_path / f"humanseg-{precision}"
    record = quantize_model(humanseg_dir, shared_data / "images" / "portraits", out, register=False,
                            min_image_agreement=95.0, precision=precision)  # type: ignore[arg-type]
    assert record.gated and record.agreement_pct >= 99.0 and record.val_images == 3
    with Segmenter(out) as seg:
        assert seg.precision == precision and seg.precision_label.startswith(f"{precision} (keeps 99.")


@needs_quant
@pytest.mark.parametrize("engine", ["int8", "openvino-bf16", "openvino-int8-bf16"])
def test_bench_variants_of_reference_weights_are_ungated_made_once_and_labelled(
    tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastseg.bench.engines import prepare_sources, row_precision, worker_engine
    from fastseg.bench.models import ModelSource, make_image
    from fastseg.bench.report import REFERENCE_WEIGHTS_LABEL as REFERENCE_WEIGHTS

    if engine.startswith("openvino"):
        pytest.importorskip("openvino", reason="bf16 and int8-bf16 run on OpenVINO")
        monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    model = random_net_dir(tmp_path / "models" / "random-net")
    image = make_image(tmp_path / "bench.png", size=(48, 64))
    src = ModelSource("random-net", onnx_dir=model, paddle_dir=None, weights=REFERENCE_WEIGHTS)
    (out,) = prepare_sources([src], engine, image, threads=1, size=(48, 64))
    precision = row_precision(engine)
    assert out.error == "" and out.onnx_dir != model and out.weights.startswith(f"reference weights, {precision} UNGATED")
    made = (out.onnx_dir / "model.onnx").stat().st_mtime_ns
    (again,) = prepare_sources([src], engine, image, threads=1, size=(48, 64))
    assert again.onnx_dir == out.onnx_dir and (out.onnx_dir / "model.onnx").stat().st_mtime_ns == made  # reused
    assert not (model / tuning.VARIANTS_FILE).exists()  # ungated: never a tune candidate
    assert worker_engine(engine) == {"int8": "ort", "openvino-bf16": "openvino", "openvino-int8-bf16": "openvino"}[engine]
    assert out.onnx_dir.name == f"{model.name}-{precision}-bench" and read_meta(out.onnx_dir).precision == precision
    assert (row_precision("auto"), row_precision("ort")) == (None, "fp32")


@needs_quant
def test_bench_auto_tunes_an_untuned_model_first(tmp_path: Path) -> None:
    from fastseg.bench.engines import prepare_sources
    from fastseg.bench.models import ModelSource, make_image
    from fastseg.bench.report import REFERENCE_WEIGHTS_LABEL as REFERENCE_WEIGHTS

    model = random_net_dir(tmp_path / "models" / "random-net")
    image = make_image(tmp_path / "bench.png", size=(48, 64))
    src = ModelSource("random-net", onnx_dir=model, paddle_dir=None, weights=REFERENCE_WEIGHTS)
    (tuned,) = prepare_sources([src], "auto", image, threads=1, size=(48, 64))
    assert tuned == src and (model / tuning.TUNING_FILE).is_file()
