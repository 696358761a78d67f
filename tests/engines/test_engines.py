"""Engines: OpenVINO behind the session interface, engine choice from the tuning record
(fingerprint, corrupt and foreign records), and the accuracy-gated int8 quantizer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.engines import check_engine, open_session
from fastseg.engines import tuning
from fastseg.engines.tuning import EngineChoice, choose_engine, recorded_choice, write_record
from fastseg.errors import DeviceError, InputError, MissingDependencyError, ModelDirError
from fastseg.model_dir import GateRecord, read_meta, write_meta
from fastseg.engines.device import parse_device
from fastseg.segmenter import Segmenter
from tiny_models import colour_image, colour_model_dir

CPU = parse_device("cpu")
needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="openvino not installed (the [openvino] extra)"
)


@pytest.fixture()
def colour_dir(tmp_path: Path) -> Path:
    return colour_model_dir(tmp_path / "colour")


# ------------------------------------------------------------------ engine names and choice
def test_engine_names_are_checked() -> None:
    assert check_engine("auto") == "auto"
    with pytest.raises(DeviceError, match="Unknown engine 'tensorflow'.*auto, ort, openvino"):
        check_engine("tensorflow")


def test_untuned_model_runs_ort_fp32(colour_dir: Path) -> None:
    choice = choose_engine(colour_dir, "auto", CPU)
    assert (choice.engine, choice.precision, choice.model_dir) == ("ort", "fp32", colour_dir)
    assert "no tuning.json" in choice.reason


def own_variant(model_dir: Path, target: Path, precision: str = "int8") -> Path:
    """A registered variant of ``model_dir`` (its metadata says it was quantized from it)."""
    from dataclasses import replace

    variant = colour_model_dir(target)
    gate = GateRecord(precision, "ort", True, 99.9, 99.5, 99.0, 98.5, 3)  # type: ignore[arg-type]
    meta = read_meta(variant)
    write_meta(variant, replace(meta, precision=precision, gate=gate,
                                provenance={**meta.provenance, "quantized_from": str(model_dir.resolve())}))
    tuning.register_variant(model_dir, variant, {"precision": precision, "gated": True})
    return variant


def test_a_matching_record_picks_its_winner_and_explicit_engines_win(colour_dir: Path, tmp_path: Path) -> None:
    other = own_variant(colour_dir, tmp_path / "variant")
    write_record(colour_dir, EngineChoice("openvino", other, "int8", "tuned"), [], {"threads": 2})
    choice = choose_engine(colour_dir, "auto", CPU)
    assert (choice.engine, choice.model_dir.resolve(), choice.precision) == ("openvino", other.resolve(), "int8")
    assert choose_engine(colour_dir, "ort", CPU).engine == "ort"
    assert choose_engine(colour_dir, "auto", parse_device("gpu:0")).engine == "ort"  # accelerators ignore CPU tuning
    assert choose_engine(colour_dir, "auto", parse_device("openvino:GPU")).engine == "openvino"


def test_a_record_cannot_redirect_to_another_model(colour_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A tuning.json naming any other model directory (not a variant quantized from this one) is ignored."""
    stranger = colour_model_dir(tmp_path / "stranger")
    write_record(colour_dir, EngineChoice("ort", stranger, "fp32", "tuned"), [], {})
    with caplog.at_level(logging.WARNING, logger="fastseg.engines.tuning"):
        choice = recorded_choice(colour_dir)
    assert (choice.engine, choice.model_dir) == ("ort", colour_dir) and "not this model's variant" in choice.reason
    assert "not this model directory nor a variant quantized from it" in caplog.text
    assert f"Re-run 'fastseg tune {colour_dir}'" in caplog.text
    # registered in variants.json but made from another model: still refused (both must agree)
    imposter = own_variant(stranger, tmp_path / "imposter")
    tuning.register_variant(colour_dir, imposter, {"precision": "int8", "gated": True})
    write_record(colour_dir, EngineChoice("ort", imposter, "int8", "tuned"), [], {})
    assert recorded_choice(colour_dir).model_dir == colour_dir


def test_a_record_from_another_instruction_set_is_not_applied(colour_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same CPU name, other precision flags (e.g. AMX vs AVX512-BF16): the record is foreign."""
    from fastseg.engines import cpu

    write_record(colour_dir, EngineChoice("openvino", colour_dir, "fp32", "tuned"), [], {})
    assert json.loads((colour_dir / tuning.TUNING_FILE).read_text())["fingerprint"]["isa"] == list(cpu.precision_flags())
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.setattr(tuning, "precision_flags", cpu.precision_flags)
    choice = recorded_choice(colour_dir)
    assert choice.engine == "ort" and choice.reason == "tuned elsewhere (isa differ)"


def test_a_record_from_another_cpu_generation_with_the_same_name_and_flags_is_not_applied(
    colour_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM's "AMD EPYC" is Zen 1 or Zen 3 with the same avx2-only flags: family and model differ."""
    path = write_record(colour_dir, EngineChoice("openvino", colour_dir, "fp32", "tuned"), [], {})
    raw = json.loads(path.read_text())
    assert raw["fingerprint"]["cpu_generation"] == tuning.cpu_generation()
    raw["fingerprint"]["cpu_generation"] = "AuthenticAMD family 23 model 1"
    path.write_text(json.dumps(raw))
    monkeypatch.setattr(tuning, "cpu_generation", lambda: "AuthenticAMD family 25 model 1")
    choice = recorded_choice(colour_dir)
    assert choice.engine == "ort" and choice.reason == "tuned elsewhere (cpu_generation differ)"


@pytest.mark.parametrize(
    ("text", "generation"),
    [("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n"
      "processor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n", "AuthenticAMD family 25 model 17"),
     ("vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n",
      "GenuineIntel family 6 model 207"),
     ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU part\t: 0xd0c\n", "")],
)
def test_the_cpu_generation_is_the_first_cpus_vendor_family_and_model(tmp_path: Path, text: str, generation: str) -> None:
    from fastseg.engines.cpu import cpu_generation

    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_generation(tmp_path / "cpuinfo") == generation
    assert cpu_generation(tmp_path / "missing") == ""


def test_the_gate_names_the_cpu_and_its_precision_flags(tmp_path: Path) -> None:
    from fastseg.engines.cpu import cpu_description

    zen5 = tmp_path / "zen5"
    zen5.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni avx_vnni\n")
    assert cpu_description(zen5) == "AMD EPYC: avx512_bf16 avx512_vnni avx_vnni avx2"
    bare = tmp_path / "bare"
    bare.write_text("processor\t: 0\nflags\t\t: fpu sse2\n")
    assert cpu_description(bare).startswith("unknown CPU: none of amx_bf16, amx_int8")
    assert cpu_description(tmp_path / "absent").startswith("unknown CPU: none of")


@pytest.mark.parametrize("precision", ["bf16", "int8-bf16"])
def test_a_bf16_directory_runs_on_openvino_only(colour_dir: Path, tmp_path: Path, precision: str) -> None:
    variant = own_variant(colour_dir, tmp_path / precision, precision)
    for requested in ("auto", "openvino"):
        choice = choose_engine(variant, requested, CPU)
        assert (choice.engine, choice.precision, choice.reason) == ("openvino", precision, f"{precision} model directory")
    with pytest.raises(DeviceError, match="bf16 or int8-bf16 model directory runs on OpenVINO only.*--engine openvino"):
        choose_engine(variant, "ort", CPU)
    with pytest.raises(DeviceError, match="OpenVINO only"):
        choose_engine(variant, "auto", parse_device("gpu:0"))


@needs_openvino
@pytest.mark.parametrize("precision", ["bf16", "int8-bf16"])
def test_a_bf16_directory_on_a_cpu_without_bf16_is_one_clear_error(
    colour_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    from fastseg.engines import cpu

    variant = own_variant(colour_dir, tmp_path / precision, precision)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(DeviceError, match=rf"^{precision} needs a CPU with AMX or AVX512-BF16 .*this CPU has neither \(its precision flags: avx2\)"):
        Segmenter(variant)


@needs_openvino
@pytest.mark.parametrize(("precision", "hint"), [("fp32", "f32"), ("int8", "f32"), ("bf16", "bf16"), ("int8-bf16", "bf16")])
def test_openvino_compiles_each_precision_with_its_inference_precision(
    colour_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str, hint: str
) -> None:
    """f32 unless the directory asks for bf16: int8-bf16 is the int8 graph with bf16 wherever it
    is not quantized, so its hint is bf16 as bf16's is; int8 alone keeps f32 there."""
    import openvino as ov

    from fastseg.engines import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16", "amx_bf16"}))
    hints: list[str] = []
    real = ov.Core.compile_model

    def spy(self: object, model: object, device: str = "CPU", config: dict[str, object] | None = None) -> object:
        hints.append(str((config or {}).get("INFERENCE_PRECISION_HINT")))
        return real(self, model, device, config)  # type: ignore[arg-type]

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    model = colour_dir if precision == "fp32" else own_variant(colour_dir, tmp_path / precision, precision)
    with Segmenter(model, engine="openvino") as seg:
        labels = next(iter(seg.predict(colour_image())))["pred"]
        assert (seg.precision, seg.session.precision) == (precision, precision if "bf16" in precision else "fp32")
    assert hints and set(hints) == {hint}
    assert labels.shape[-2:] == colour_image().shape[:2]


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
def test_openvino_on_the_cpu_returns_its_reused_output_and_elsewhere_a_copy(colour_dir: Path) -> None:
    """On the CPU ``run`` returns OpenVINO's own output tensor, which the next run overwrites
    (callers hold the runner's lock while they consume it, as under IO binding); a runner told
    not to reuse it returns copies that survive the next run."""
    from fastseg.engines.openvino import OpenVINORunner
    from fastseg.processing import preprocess_batch
    from fastseg.model_dir import read_meta

    meta = read_meta(colour_dir)
    image, flipped = colour_image(), colour_image()[:, ::-1].copy()
    with open_session(colour_dir / "model.onnx", "cpu", engine="openvino") as s:
        assert s.runner.reuses_output
        first = s.run(preprocess_batch([image], meta.preprocess, resize=None))
        kept = first.copy()
        second = s.run(preprocess_batch([flipped], meta.preprocess, resize=None))
        assert np.shares_memory(first, second) and not np.array_equal(second, kept)
        np.testing.assert_array_equal(second, kept[..., ::-1])  # the flipped image's output, in the same buffer
        copying = OpenVINORunner(s.runner._compiled)
        assert not copying.reuses_output
        own = copying.run(preprocess_batch([image], meta.preprocess, resize=None))
        copying.run(preprocess_batch([flipped], meta.preprocess, resize=None))
        np.testing.assert_array_equal(own, kept)
    with pytest.raises(DeviceError, match="closed"):
        s.run(preprocess_batch([colour_image()], meta.preprocess, resize=None))


@needs_openvino
def test_openvino_results_survive_later_runs_and_concurrent_callers(colour_dir: Path) -> None:
    """Segmenter consumes the reused output under the runner's lock: a result is not changed
    by the runs after it, and 48 predictions from 4 threads each get their own image's labels."""
    from concurrent.futures import ThreadPoolExecutor

    images = [colour_image(), colour_image()[:, ::-1].copy(), colour_image()[::-1].copy()]
    with Segmenter(colour_dir, engine="ort") as ort:
        want = [next(ort.predict(img))["pred"] for img in images]
    with Segmenter(colour_dir, engine="openvino") as ov:
        assert ov.session.runner.reuses_output
        first = ov.predict_images([images[0]])[0]
        kept = first.pred.copy()
        for img, labels in zip(images[1:], want[1:]):
            np.testing.assert_array_equal(ov.predict_images([img])[0].pred, labels)
        np.testing.assert_array_equal(first.pred, kept)

        def work(k: int) -> bool:
            (res,) = ov.predict_images([images[k % 3]])
            return bool(np.array_equal(res.pred, want[k % 3]))

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(pool.map(work, range(48)))


@needs_openvino
def test_openvino_compiles_the_first_shapes_for_themselves_and_runs_others_dynamic(
    colour_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first STATIC_SHAPES input shapes each get a model compiled for that shape, once;
    a shape whose compile fails and every later shape run the dynamic model, and the source
    model is then let go; every output equals ONNX Runtime's."""
    import fastseg.engines.openvino as ov_engine
    from fastseg.processing import preprocess_batch

    meta = read_meta(colour_dir)
    rng = np.random.default_rng(0)
    shapes = [(20, 28), (20, 28), (33, 17), (12, 12), (33, 17), (9, 40), (12, 12)]
    batches = [preprocess_batch([rng.integers(0, 256, (*hw, 3), dtype=np.uint8)], meta.preprocess, resize=None)
               for hw in shapes]
    monkeypatch.setattr(ov_engine, "STATIC_SHAPES", 3)
    with open_session(colour_dir / "model.onnx", "cpu", engine="openvino") as ov, \
            open_session(colour_dir / "model.onnx", "cpu", engine="ort") as ort:
        runner = ov.runner
        compiled: list[tuple[int, ...]] = []
        real = runner._specialise
        assert real is not None

        def counted(shape: tuple[int, ...]) -> object:
            compiled.append(shape)
            if shape[2:] == (12, 12):  # OpenVINO's layout: where it passed, then why
                raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/core/src/pass/"
                                   "graph_rewrite.cpp:298:\n[AddTransformation] no kernel for this shape\n\n")
            return real(shape)

        runner._specialise = counted
        with caplog.at_level(logging.WARNING, logger="fastseg.engines.openvino"):
            outputs = [ov.run(b).copy() for b in batches]  # run returns the reused output: keep copies
        assert compiled == [(1, 3, 20, 28), (1, 3, 33, 17), (1, 3, 12, 12)]  # once each; (9, 40) came after the third
        assert ("input [1, 3, 12, 12] ([AddTransformation] no kernel for this shape); it runs the dynamic-shape model"
                in caplog.text)
        assert runner._specialise is None
        for batch, got in zip(batches, outputs):
            np.testing.assert_allclose(got, ort.run(batch), atol=1e-5)


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
