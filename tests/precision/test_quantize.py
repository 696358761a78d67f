"""fastseg quantize: int8 and bf16 variants behind a gate with a pooled figure and a per-image floor."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.engines import cpu, tuning
from fastseg.errors import InputError, ModelDirError, QuantizationGateError
from fastseg.model_dir import read_meta
from fastseg.segmenter import Segmenter
from tiny_models import colour_model_dir, photo_dir, random_net_dir

needs_quant = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ml_dtypes") is None, reason="int8 needs the [quantize] extra"
)
needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="bf16 runs on OpenVINO (the [openvino] extra)"
)


@pytest.fixture()
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the CPU has AMX bf16 (OpenVINO then computes f32 where it has none: labels equal)."""
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16", "amx_bf16"}))


def colour_photos(root: Path, n: int) -> Path:
    """``n`` photos of pure red/green/blue stripes: the colour model's labels are far from ties."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((24 + 4 * i, 40, 3), np.uint8)
        img[:, :13, 2], img[:, 13:26, 1], img[:, 26:, 0] = 200, 200, 200
        cv2.imwrite(str(root / f"c{i}.png"), img)
    return root


# ------------------------------------------------------------------ int8
@needs_quant
def test_the_gate_refuses_a_random_weight_network_and_writes_nothing(tmp_path: Path) -> None:
    model = random_net_dir(tmp_path / "fp32")
    calib = photo_dir(tmp_path / "calib", 6)
    out = tmp_path / "int8"
    result = CliRunner().invoke(main, ["quantize", str(model), "--calib", str(calib), "-o", str(out)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("Error: int8 keeps ") and "pooled >= 99.00%, every image >= 98.50%" in line
    assert "nothing written" in line and len(line.splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["calib", "fp32"]
    assert not (model / tuning.VARIANTS_FILE).exists()


@needs_quant
def test_quantize_prints_no_onnxruntime_warnings(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """ORT's optimiser inside quant_pre_process warns once per unused initializer at the
    process-wide level (dozens on a converted PP-HumanSegV2-Lite): the user sees fastseg's line only."""
    import onnx
    import onnxruntime
    from onnx import numpy_helper

    model = random_net_dir(tmp_path / "fp32")
    graph = onnx.load(str(model / "model.onnx"))
    graph.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float32), "unused_const"))
    onnx.save(graph, str(model / "model.onnx"))
    onnxruntime.set_default_logger_severity(2)  # warnings, as a fresh process starts
    result = CliRunner().invoke(
        main, ["quantize", str(model), "--calib", str(photo_dir(tmp_path / "calib", 4)), "--min-agreement", "0",
               "-o", str(tmp_path / "int8")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "int8" / "model.onnx").is_file()
    err = capfd.readouterr().err
    assert "Removing initializer" not in err and "[W:onnxruntime" not in err, err[:500]


@needs_quant
def test_quantize_drops_onnxruntimes_root_logger_warnings_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """quantize_static warns through the root logger once per LayerNorm weight (hundreds of lines
    on SegFormer and MaskFormer); those go, fastseg's own warnings and the root logger's set-up stay."""
    from onnxruntime import quantization

    real = quantization.quantize_static

    def chatty(*args: object, **kwargs: object) -> None:
        logging.warning("Axis 1 is out-of-range for weight 'layer_norm_0.w_0' with rank 1")
        logging.getLogger("fastseg.precision.probe").warning("a fastseg warning")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(quantization, "quantize_static", chatty)
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(root.filters)
    caplog.set_level(logging.WARNING)
    result = CliRunner().invoke(
        main, ["quantize", str(random_net_dir(tmp_path / "fp32")), "--calib", str(photo_dir(tmp_path / "calib", 4)),
               "--min-agreement", "0", "-o", str(tmp_path / "int8")])
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if r.name == "root"]
    assert [r.getMessage() for r in caplog.records if r.name == "fastseg.precision.probe"] == ["a fastseg warning"]
    assert root.handlers == handlers and root.filters == filters


@pytest.mark.parametrize(
    ("flags", "saturates"),
    [({"avx2"}, True), ({"sse4_1"}, True), ({"avx2", "avx_vnni"}, False), ({"avx2", "avx512f", "avx512_vnni"}, False),
     ({"avx2", "amx_int8"}, False), ({"fp", "asimd", "asimddp"}, False)],
)
def test_int8_weights_saturate_only_on_x86_without_vnni(flags: set[str], saturates: bool) -> None:
    assert cpu.int8_weights_saturate(flags) is saturates


@needs_quant
@pytest.mark.parametrize(("flags", "weights", "dtype"), [({"avx2"}, "u8u8", 2), ({"avx2", "avx512_vnni"}, "u8s8", 3)])
def test_int8_weights_follow_the_cpus_int8_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: set[str], weights: str, dtype: int
) -> None:
    """u8u8 where u8s8's 16-bit pair sums saturate (x86 without VNNI), u8s8 elsewhere; the gate
    record says which."""
    import onnx

    from fastseg.precision.quantize import quantize_model

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    model, out = random_net_dir(tmp_path / "fp32"), tmp_path / "int8"
    record = quantize_model(model, photo_dir(tmp_path / "calib", 2), out, min_agreement=0, augment=False, register=False)
    assert record.format == f"onnx-qdq {weights} per-channel"
    graph = onnx.load(str(out / "model.onnx")).graph
    weight_types = {t.data_type for t in graph.initializer if t.name.endswith("_quantized")}
    assert weight_types == {dtype}  # onnx.TensorProto: UINT8 = 2, INT8 = 3


@needs_quant
def test_the_per_image_floor_refuses_what_the_pooled_figure_passes(tmp_path: Path) -> None:
    from fastseg.precision.quantize import quantize_model

    model = random_net_dir(tmp_path / "fp32")
    calib, val = photo_dir(tmp_path / "calib", 4), photo_dir(tmp_path / "val", 3, seed=1)
    with pytest.raises(QuantizationGateError) as info:
        quantize_model(model, calib, tmp_path / "int8", val_dir=val, min_agreement=1.0, min_image_agreement=99.99)
    message = str(info.value)
    assert "gate: pooled >= 1.00%, every image >= 99.99%" in message  # both thresholds named
    assert re.search(r"\(worst image [\d.]+% < floor 99\.99%\): nothing written", message)  # only the floor failed
    assert re.search(r"\(worst image [\d.]+%, img_[012]\.png\); gate:", message)  # which photo to look at
    assert not (tmp_path / "int8").exists()


@needs_quant
def test_an_ungated_model_is_marked_everywhere_and_its_agreement_reproduces(tmp_path: Path) -> None:
    from fastseg.precision.gate import label_agreement
    from fastseg.precision.quantize import quantize_model
    from fastseg.precision.tune import candidates

    model = random_net_dir(tmp_path / "fp32")
    calib = photo_dir(tmp_path / "calib", 4)
    val = photo_dir(tmp_path / "val", 2, seed=1)
    out = tmp_path / "int8"
    record = quantize_model(model, calib, out, min_agreement=0, val_dir=val)
    assert not record.gated and record.val_images == 2 and record.calib_images == 4
    raw = json.loads((out / "fastseg.json").read_text())
    assert raw["precision"] == "int8" and raw["gate"]["gated"] is False and raw["gate"]["agreement_pct"] < 99.0
    with Segmenter(model, engine="ort") as fp32, Segmenter(out, engine="ort") as int8:
        assert int8.precision == "int8" and int8.precision_label == "int8 UNGATED"
        pooled, worst, worst_image = label_agreement(fp32, int8, sorted(val.glob("*.png")), 1024)
    assert pooled == pytest.approx(raw["gate"]["agreement_pct"], abs=1e-3)  # the recorded figure is what it does
    assert worst == pytest.approx(raw["gate"]["worst_image_pct"], abs=1e-3)
    assert worst_image == raw["gate"]["worst_image"] and worst_image in {"img_0.png", "img_1.png"}
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), cv2.imread(str(val / "img_0.png")))
    run = CliRunner().invoke(main, ["predict", "--input", str(tmp_path / "in"), "--model", str(out),
                                    "--save_path", str(tmp_path / "pred"), "--no-json"])
    assert run.exit_code == 0, run.output
    assert "(int8 UNGATED)" in run.output
    cands, skipped = candidates(model, engines=["ort"])  # ungated variants are never tune candidates
    assert [c.model_dir for c in cands] == [model]
    assert skipped == [f"{out.resolve()} (int8 UNGATED): UNGATED: only gated variants are candidates (run it by name)"]
    with pytest.raises(InputError, match="not a gated variant"):
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
    with pytest.raises(InputError, match="int8 needs calibration images: pass --calib"):
        quantize_model(model, None, tmp_path / "out")


@needs_quant
def test_untrained_reference_weights_are_told_more_images_will_not_help(tmp_path: Path) -> None:
    from dataclasses import replace

    from fastseg.model_dir import write_meta
    from fastseg.precision.quantize import quantize_model
    from fastseg.reference import REFERENCE_WEIGHTS

    model = random_net_dir(tmp_path / "fp32")
    meta = read_meta(model)
    write_meta(model, replace(meta, provenance={**meta.provenance, "weights": REFERENCE_WEIGHTS}))
    with pytest.raises(QuantizationGateError, match="UNTRAINED reference weights.*no number of calibration images"):
        quantize_model(model, photo_dir(tmp_path / "calib", 4), tmp_path / "int8")


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
    with caplog.at_level(logging.WARNING, logger="fastseg.precision.int8"):
        record = quantize_model(model, photo_dir(tmp_path / "calib", 4), tmp_path / "int8", min_agreement=0, augment=False)
    assert methods == [quantization.CalibrationMethod.Percentile, quantization.CalibrationMethod.MinMax]
    assert record.calibration == "minmax" and "calibrating with MinMax instead" in caplog.text
    assert json.loads((tmp_path / "int8" / "fastseg.json").read_text())["gate"]["calibration"] == "minmax"


# ------------------------------------------------------------------ bf16
@needs_openvino
def test_bf16_is_written_gated_and_runs_as_bf16_on_openvino(tmp_path: Path, bf16_cpu: None) -> None:
    model = colour_model_dir(tmp_path / "fp32")
    val = colour_photos(tmp_path / "val", 3)
    out = tmp_path / "bf16"
    result = CliRunner().invoke(main, ["quantize", str(model), "--precision", "bf16", "--val", str(val), "-o", str(out)])
    assert result.exit_code == 0, result.output
    gated_on = cpu.cpu_description()  # the model name and the (mocked) precision flags: amx_bf16 avx512_bf16 avx2
    assert gated_on.endswith(": amx_bf16 avx512_bf16 avx2")
    assert result.output.startswith(f"bf16 keeps 100.00% of fp32's labels on 3 held-out image(s) with openvino on {gated_on}")
    assert "gate passed (pooled >= 99.00%, every image >= 98.50%)" in result.output
    raw = json.loads((out / "fastseg.json").read_text())
    assert raw["precision"] == "bf16" and raw["gate"]["cpu"] == gated_on
    assert {k: raw["gate"][k] for k in ("precision", "engine", "gated", "agreement_pct", "worst_image_pct",
                                         "min_agreement_pct", "min_image_agreement_pct", "val_images")} == {
        "precision": "bf16", "engine": "openvino", "gated": True, "agreement_pct": 100.0, "worst_image_pct": 100.0,
        "min_agreement_pct": 99.0, "min_image_agreement_pct": 98.5, "val_images": 3}
    assert (out / "model.onnx").read_bytes() == (model / "model.onnx").read_bytes()
    with Segmenter(out) as seg:
        assert (seg.engine_name, seg.precision) == ("openvino", "bf16")
        assert seg.session.precision == "bf16" and seg.precision_label.startswith("bf16 (keeps 100.00%")
    variants = tuning.read_variants(model)
    assert [(Path(v["path"]), v["precision"]) for v in variants] == [(out.resolve(), "bf16")]
    from fastseg.precision.tune import candidates

    cands, _ = candidates(model, engines=["ort", "openvino"])
    assert [(c.engine, c.precision) for c in cands] == [("ort", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]


@needs_openvino
@pytest.mark.parametrize("precision", ["bf16", "int8-bf16"])
def test_bf16_on_a_cpu_without_it_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    model = colour_model_dir(tmp_path / "fp32")
    out = tmp_path / precision
    result = CliRunner().invoke(main, ["quantize", str(model), "--precision", precision, "--calib",
                                       str(colour_photos(tmp_path / "val", 2)), "-o", str(out)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {precision} needs a CPU with AMX or AVX512-BF16 (amx_bf16 or avx512_bf16 in /proc/cpuinfo); this CPU "
        "has neither (its precision flags: avx512_vnni, avx2). Use the fp32 model, or int8 ('fastseg quantize "
        "--precision int8')."
    )
    assert not out.exists() and not list(tmp_path.glob(f".{precision}.partial-*"))
    assert not (model / tuning.VARIANTS_FILE).exists()


@needs_openvino
def test_bf16_needs_images_to_gate_unless_ungated(tmp_path: Path, bf16_cpu: None) -> None:
    from fastseg.precision.quantize import quantize_model

    model = colour_model_dir(tmp_path / "fp32")
    with pytest.raises(InputError, match="bf16 gate needs images to compare on: pass --val DIR"):
        quantize_model(model, None, tmp_path / "bf16", precision="bf16")
    with pytest.raises(InputError, match="bf16 runs on OpenVINO only"):
        quantize_model(model, None, tmp_path / "bf16", precision="bf16", engine="ort")
    record = quantize_model(model, None, tmp_path / "bf16", precision="bf16", min_agreement=0)
    assert not record.gated and record.val_images == 0
    assert read_meta(tmp_path / "bf16").precision_label == "bf16 UNGATED (agreement not measured)"
    assert [v["gated"] for v in tuning.read_variants(model)] == [False]


# ------------------------------------------------------------------ int8-bf16
@needs_quant
@needs_openvino
def test_int8_bf16_is_calibrated_gated_on_openvino_and_a_tune_candidate(tmp_path: Path, bf16_cpu: None) -> None:
    """int8-bf16: the int8 graph, with bf16 wherever it is not quantized; OpenVINO gates it and runs it."""
    from fastseg.precision.tune import candidates

    model = colour_model_dir(tmp_path / "fp32")
    out = tmp_path / "int8-bf16"
    result = CliRunner().invoke(main, ["quantize", str(model), "--precision", "int8-bf16", "--calib",
                                       str(colour_photos(tmp_path / "calib", 4)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("int8-bf16 keeps 100.00% of fp32's labels on 1 held-out image(s) with openvino on ")
    assert "calibrated on 3); gate passed (pooled >= 99.00%, every image >= 98.50%)" in result.output
    raw = json.loads((out / "fastseg.json").read_text())
    assert raw["precision"] == raw["gate"]["precision"] == "int8-bf16" and raw["gate"]["engine"] == "openvino"
    assert raw["gate"]["format"].endswith(", unquantized layers bf16 (OpenVINO INFERENCE_PRECISION_HINT=bf16)")
    with Segmenter(out) as seg:
        assert (seg.engine_name, seg.precision, seg.session.precision) == ("openvino", "int8-bf16", "int8-bf16")
    assert [(Path(v["path"]), v["precision"]) for v in tuning.read_variants(model)] == [(out.resolve(), "int8-bf16")]
    cands, _ = candidates(model, engines=["ort", "openvino"])  # OpenVINO only: no ONNX Runtime candidate for it
    assert [(c.engine, c.precision) for c in cands] == [("ort", "fp32"), ("openvino", "fp32"), ("openvino", "int8-bf16")]


@needs_quant
@needs_openvino
def test_an_int8_bf16_directory_holds_the_qdq_graph_and_its_gate_reproduces(tmp_path: Path, bf16_cpu: None) -> None:
    import onnx

    from fastseg.precision.gate import label_agreement
    from fastseg.precision.quantize import quantize_model

    model = random_net_dir(tmp_path / "fp32")
    val = photo_dir(tmp_path / "val", 2, seed=1)
    out = tmp_path / "int8-bf16"
    record = quantize_model(model, photo_dir(tmp_path / "calib", 4), out, precision="int8-bf16", val_dir=val,
                            min_agreement=0)
    assert (record.precision, record.engine, record.gated, record.calib_images) == ("int8-bf16", "openvino", False, 4)
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with Segmenter(model, engine="openvino") as fp32, Segmenter(out) as mixed:
        assert mixed.precision_label == "int8-bf16 UNGATED"
        pooled, worst, _ = label_agreement(fp32, mixed, sorted(val.glob("*.png")), 1024)
    assert pooled == pytest.approx(record.agreement_pct, abs=1e-3) and worst == pytest.approx(record.worst_image_pct, abs=1e-3)


@needs_openvino
def test_int8_bf16_needs_calibration_images_and_openvino(tmp_path: Path, bf16_cpu: None) -> None:
    from fastseg.precision.quantize import quantize_model

    model = colour_model_dir(tmp_path / "fp32")
    with pytest.raises(InputError, match=r"^int8-bf16 needs calibration images: pass --calib DIR"):
        quantize_model(model, None, tmp_path / "out", precision="int8-bf16")
    with pytest.raises(InputError, match=r"^int8-bf16 runs on OpenVINO only"):
        quantize_model(model, colour_photos(tmp_path / "calib", 2), tmp_path / "out", precision="int8-bf16", engine="ort")
    assert not (tmp_path / "out").exists()
