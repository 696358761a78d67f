"""Engines: OpenVINO behind the session interface, engine choice from the tuning record
(fingerprint, corrupt and foreign records), and the accuracy-gated int8 quantizer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.engines import check_engine, open_session
from fastseg.engines import tuning
from fastseg.engines.tuning import EngineChoice, choose_engine, recorded_choice, write_record
from fastseg.errors import DeviceError, InputError, MissingDependencyError, ModelDirError
from fastseg.model_dir import ModelMeta, PreprocessSpec, write_meta
from fastseg.engines.device import parse_device
from fastseg.segmenter import Segmenter
from tiny_models import colour_model_dir, conv_stack_model

CPU = parse_device("cpu")
needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="openvino not installed (the [openvino] extra)"
)
needs_quant = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ml_dtypes") is None, reason="int8 needs the [quantize] extra"
)


@pytest.fixture()
def colour_dir(tmp_path: Path) -> Path:
    return colour_model_dir(tmp_path / "colour")


def colour_image(h: int = 24, w: int = 40) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3, 2] = 200  # red (BGR)
    img[:, w // 3 : 2 * w // 3, 1] = 200  # green
    img[:, 2 * w // 3 :, 0] = 200  # blue
    return img


def random_net_dir(root: Path) -> Path:
    """A random-weight 19-class network: near-tied logits everywhere, as a reference build's."""
    root.mkdir(parents=True, exist_ok=True)
    conv_stack_model(root / "model.onnx", width=16, depth=3, classes=19)
    names = tuple(f"c{i}" for i in range(19))
    write_meta(root, ModelMeta(
        model_name="random-net", input_name="x", output_kind="labels", num_classes=19, class_names=names,
        palette=tuple((i * 10, i * 5, i) for i in range(19)), preprocess=PreprocessSpec(), opset=13,
    ))
    return root


def photo_dir(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` smooth synthetic photos (gradients + blobs + noise), 48x64."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    for i in range(n):
        base = np.stack([xx * rng.uniform(1, 4), yy * rng.uniform(1, 4), (xx + yy) * rng.uniform(0.5, 2)], -1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"img_{i}.png"), img)
    return root


# ------------------------------------------------------------------ engine names and choice
def test_engine_names_are_checked() -> None:
    assert check_engine("auto") == "auto"
    with pytest.raises(DeviceError, match="Unknown engine 'tensorflow'.*auto, ort, openvino"):
        check_engine("tensorflow")


def test_untuned_model_runs_ort_fp32(colour_dir: Path) -> None:
    choice = choose_engine(colour_dir, "auto", CPU)
    assert (choice.engine, choice.precision, choice.model_dir) == ("ort", "fp32", colour_dir)
    assert "no tuning.json" in choice.reason


def test_a_matching_record_picks_its_winner_and_explicit_engines_win(colour_dir: Path, tmp_path: Path) -> None:
    other = colour_model_dir(tmp_path / "variant")
    write_record(colour_dir, EngineChoice("openvino", other, "fp32", "tuned"), [], {"threads": 2})
    choice = choose_engine(colour_dir, "auto", CPU)
    assert (choice.engine, choice.model_dir.resolve()) == ("openvino", other.resolve())
    assert choose_engine(colour_dir, "ort", CPU).engine == "ort"
    assert choose_engine(colour_dir, "auto", parse_device("gpu:0")).engine == "ort"  # accelerators ignore CPU tuning
    assert choose_engine(colour_dir, "auto", parse_device("openvino:GPU")).engine == "openvino"


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '{"tuning_version": 99}', '{"tuning_version": 1, "fingerprint": {}}',
     '{"tuning_version": 1, "fingerprint": {}, "winner": {"engine": "tensorflow", "model_dir": ".", "precision": "fp32"}}'],
)
def test_a_corrupt_record_falls_back_to_ort_with_a_warning(
    colour_dir: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (colour_dir / tuning.TUNING_FILE).write_text(content)
    with caplog.at_level(logging.WARNING, logger="fastseg.engines.tuning"):
        choice = recorded_choice(colour_dir)
    assert (choice.engine, choice.model_dir) == ("ort", colour_dir)
    assert "Ignoring" in caplog.text and "fastseg tune" in caplog.text
    with Segmenter(colour_dir) as seg:  # and a Segmenter still runs
        assert seg.engine_name == "ort"


def test_a_foreign_record_falls_back_to_ort_naming_what_differs(
    colour_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_record(colour_dir, EngineChoice("openvino", colour_dir, "fp32", "tuned"), [], {})
    raw = json.loads(path.read_text())
    raw["fingerprint"]["cpu"] = "Some Other CPU"
    raw["fingerprint"]["onnxruntime"] = "0.1"
    path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="fastseg.engines.tuning"):
        choice = recorded_choice(colour_dir)
    assert choice.engine == "ort" and "cpu, onnxruntime differ" in choice.reason
    assert "another machine" in caplog.text


def test_a_record_whose_variant_is_gone_or_whose_engine_is_missing_falls_back(
    colour_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_record(colour_dir, EngineChoice("ort", tmp_path / "deleted", "int8", "tuned"), [], {})
    assert recorded_choice(colour_dir).reason == "tuned variant is missing"
    write_record(colour_dir, EngineChoice("openvino", colour_dir, "fp32", "tuned"), [], {})
    fingerprint = tuning.machine_fingerprint()
    monkeypatch.setattr(tuning, "machine_fingerprint", lambda: {**fingerprint, "openvino": None})
    path = colour_dir / tuning.TUNING_FILE
    raw = json.loads(path.read_text())
    raw["fingerprint"]["openvino"] = None
    path.write_text(json.dumps(raw))
    assert recorded_choice(colour_dir).reason == "tuned winner is OpenVINO, which is not installed"


# ------------------------------------------------------------------ OpenVINO
@needs_openvino
def test_openvino_engine_gives_ort_labels_and_says_so(colour_dir: Path) -> None:
    img = colour_image()
    with Segmenter(colour_dir, engine="openvino") as ov, Segmenter(colour_dir, engine="ort") as ort:
        a, b = next(ov.predict(img))["pred"], next(ort.predict(img))["pred"]
        assert ov.engine_name == "openvino" and ov.providers == ["OpenVINO:CPU"]
        assert ort.engine_name == "ort"
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0, 1, 2}
    with Segmenter(colour_dir, device="openvino") as dev:  # the device string means the same engine
        assert dev.engine_name == "openvino"
        np.testing.assert_array_equal(next(dev.predict(img))["pred"], b)


@needs_openvino
def test_openvino_output_is_a_copy_that_survives_the_next_run(colour_dir: Path) -> None:
    from fastseg.processing import preprocess_batch
    from fastseg.model_dir import read_meta

    meta = read_meta(colour_dir)
    with open_session(colour_dir / "model.onnx", "cpu", engine="openvino") as s:
        first = s.run(preprocess_batch([colour_image()], meta.preprocess, resize=None))
        kept = first.copy()
        s.run(preprocess_batch([colour_image()[:, ::-1].copy()], meta.preprocess, resize=None))
        np.testing.assert_array_equal(first, kept)
    with pytest.raises(DeviceError, match="closed"):
        s.run(preprocess_batch([colour_image()], meta.preprocess, resize=None))


@needs_openvino
def test_an_absent_openvino_device_is_a_clear_error(colour_dir: Path) -> None:
    import openvino

    if "NPU" in openvino.Core().available_devices:
        pytest.skip("this machine has an NPU")
    with pytest.raises(DeviceError, match="no NPU device.*Use openvino:CPU"):
        Segmenter(colour_dir, device="openvino:NPU")


def test_openvino_missing_names_the_extra(colour_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_openvino(name: str, *args: object, **kwargs: object) -> object:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(MissingDependencyError, match=r"fastseg-ort\[openvino\]"):
        Segmenter(colour_dir, engine="openvino")


# ------------------------------------------------------------------ int8
@needs_quant
def test_the_gate_refuses_a_random_weight_network_and_writes_nothing(tmp_path: Path) -> None:
    model = random_net_dir(tmp_path / "fp32")
    calib = photo_dir(tmp_path / "calib", 6)
    out = tmp_path / "int8"
    result = CliRunner().invoke(main, ["quantize", str(model), "--calib", str(calib), "-o", str(out)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("Error: int8 keeps ") and "gate 99.00%" in line and "nothing written" in line
    assert len(line.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".int8.partial-*"))
    assert not (model / tuning.VARIANTS_FILE).exists()


@needs_quant
def test_an_ungated_model_is_marked_everywhere_and_its_agreement_reproduces(tmp_path: Path) -> None:
    from fastseg.precision.quantize import label_agreement, quantize_model

    model = random_net_dir(tmp_path / "fp32")
    calib = photo_dir(tmp_path / "calib", 4)
    val = photo_dir(tmp_path / "val", 2, seed=1)
    out = tmp_path / "int8"
    result = quantize_model(model, calib, out, min_agreement=0, val_dir=val)
    assert not result.gated and result.passed and result.val_images == 2 and result.calib_images == 4
    gate = json.loads((out / "fastseg.json").read_text())["verification"]["int8_gate"]
    assert gate["gated"] is False and gate["precision"] == "int8" and gate["agreement_pct"] < 99.0
    with Segmenter(model, engine="ort") as fp32, Segmenter(out, engine="ort") as int8:
        assert int8.precision == "int8" and int8.precision_label == "int8 UNGATED"
        pooled, _ = label_agreement(fp32, int8, sorted(val.glob("*.png")), 1024)
    assert pooled == pytest.approx(gate["agreement_pct"], abs=1e-3)  # the recorded figure is what it does
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), cv2.imread(str(val / "img_0.png")))
    run = CliRunner().invoke(main, ["predict", "--input", str(tmp_path / "in"), "--model", str(out),
                                    "--save_path", str(tmp_path / "pred"), "--no-json"])
    assert run.exit_code == 0, run.output
    assert "(int8 UNGATED)" in run.output
    # ungated variants are never tune candidates
    from fastseg.precision.tune import candidates

    assert [c.model_dir for c in candidates(model, engines=["ort"])] == [model]
    with pytest.raises(InputError, match="UNGATED"):
        candidates(model, engines=["ort"], variants=[out])


@needs_quant
def test_quantize_refuses_overlapping_validation_and_existing_output(tmp_path: Path) -> None:
    from fastseg.precision.quantize import quantize_model

    model = random_net_dir(tmp_path / "fp32")
    calib = photo_dir(tmp_path / "calib", 3)
    with pytest.raises(InputError, match="also calibration images"):
        quantize_model(model, calib, tmp_path / "out", val_dir=calib)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelDirError, match="--force"):
        quantize_model(model, calib, tmp_path / "taken")
    with pytest.raises(InputError, match=">= 2 images"):
        quantize_model(model, photo_dir(tmp_path / "one", 1), tmp_path / "out")


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
    winner = record["winner"]["engine"]
    assert f"Winner: {winner} fp32" in result.output
    with Segmenter(model) as seg:  # engine="auto" is the default
        assert seg.engine_name == winner
        np.testing.assert_array_equal(np.unique(next(seg.predict(colour_image()))["pred"]), [0, 1, 2])


@pytest.mark.slow
@pytest.mark.paddle
@pytest.mark.shared_data
@needs_quant
def test_the_gate_accepts_the_real_pp_humanseg(humanseg_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """Real weights: int8 keeps >= 99% of fp32's labels on portraits it was not calibrated on."""
    from fastseg.precision.quantize import quantize_model

    out = tmp_path / "humanseg-int8"
    result = quantize_model(humanseg_dir, shared_data / "images" / "portraits", out, register=False)
    assert result.gated and result.passed and result.agreement_pct >= 99.0 and result.val_images == 3
    with Segmenter(out) as seg:
        assert seg.precision == "int8" and seg.precision_label.startswith("int8 (keeps 99.")


@needs_quant
def test_bench_int8_quantizes_reference_weights_ungated_once_and_labels_the_row(tmp_path: Path) -> None:
    from fastseg.bench.engines import prepare_sources, worker_engine
    from fastseg.bench.models import ModelSource, make_image
    from fastseg.bench.report import REFERENCE_WEIGHTS_LABEL

    model = random_net_dir(tmp_path / "models" / "random-net")
    image = make_image(tmp_path / "bench.png", size=(48, 64))
    src = ModelSource("random-net", onnx_dir=model, paddle_dir=None, weights=REFERENCE_WEIGHTS_LABEL)
    (out,) = prepare_sources([src], "int8", image, threads=1, size=(48, 64))
    assert out.error == "" and out.onnx_dir != model and out.weights == "reference weights, int8 UNGATED"
    made = (out.onnx_dir / "model.onnx").stat().st_mtime_ns
    (again,) = prepare_sources([src], "openvino-int8", image, threads=1, size=(48, 64))
    assert again.onnx_dir == out.onnx_dir and (out.onnx_dir / "model.onnx").stat().st_mtime_ns == made  # reused
    assert not (model / tuning.VARIANTS_FILE).exists()  # ungated: never a tune candidate
    assert (worker_engine("int8"), worker_engine("openvino-int8"), worker_engine("auto")) == ("ort", "openvino", "auto")
    (tuned,) = prepare_sources([src], "auto", image, threads=1, size=(48, 64))
    assert tuned == src and (model / tuning.TUNING_FILE).is_file()


@needs_quant
def test_percentile_calibration_that_cannot_bin_falls_back_to_minmax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ORT's histogram fails on too narrow a tensor range (seen on PP-LiteSeg-B): MinMax, said and recorded."""
    from onnxruntime import quantization

    from fastseg.precision.quantize import quantize_model

    real = quantization.quantize_static
    methods: list[object] = []

    def narrow_range_once(*args: object, **kwargs: object) -> object:
        methods.append(kwargs["calibrate_method"])
        if kwargs["calibrate_method"] == quantization.CalibrationMethod.Percentile:
            args[0].graph.ClearField("initializer")  # type: ignore[attr-defined]  # as ORT's own in-place edits do
            raise ValueError("Too many bins for data range. Cannot create 2048 finite-sized bins.")
        return real(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_static", narrow_range_once)
    model = random_net_dir(tmp_path / "fp32")
    with caplog.at_level(logging.WARNING, logger="fastseg.precision.quantize"):
        result = quantize_model(model, photo_dir(tmp_path / "calib", 4), tmp_path / "int8", min_agreement=0, augment=False)
    assert methods == [quantization.CalibrationMethod.Percentile, quantization.CalibrationMethod.MinMax]
    assert result.calibration == "minmax" and "calibrating with MinMax instead" in caplog.text
    gate = json.loads((tmp_path / "int8" / "fastseg.json").read_text())["verification"]["int8_gate"]
    assert gate["calibration"] == "minmax"
