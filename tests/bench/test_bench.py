"""fastseg bench: stats, FLOP counting, worker processes, outputs and errors (tiny ONNX model)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastseg import bench  # noqa: E402
from fastseg.errors import DeviceError  # noqa: E402
from fastseg.model_dir import ModelMeta, PreprocessSpec, write_meta  # noqa: E402


def _conv_argmax_model(classes: int = 4) -> onnx.ModelProto:
    """x [N,3,H,W] -> Conv 3x3 (3->8) -> Conv 1x1 (8->classes) -> ArgMax: a labels-head segmenter."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(classes, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Conv", ["h", "w2"], ["logits"], name="conv2"),
        helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0, name="argmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])],
        initializer=[w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny") / "model"
    d.mkdir()
    onnx.save(_conv_argmax_model(), str(d / "model.onnx"))
    write_meta(
        d,
        ModelMeta(
            model_name="Tiny",
            input_name="x",
            output_kind="labels",
            num_classes=4,
            class_names=("a", "b", "c", "d"),
            palette=((0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)),
            preprocess=PreprocessSpec(),
            opset=17,
        ),
    )
    return d


def test_summarize_known_samples() -> None:
    s = bench.summarize([float(v) for v in range(10, 0, -1)])
    assert (s.median, s.min, s.n) == (5.5, 1.0, 10)
    assert s.p90 == pytest.approx(9.1)  # numpy linear interpolation: 9 + 0.1 * (10 - 9)
    assert s.mean == pytest.approx(5.5)
    with pytest.raises(ValueError):
        bench.summarize([])


def test_count_macs_conv_graph_matches_hand_count() -> None:
    count = bench.count_macs(_conv_argmax_model(), input_shape=(1, 3, 16, 32))
    # conv1: 8*16*32 outputs x 3*3*3; conv2: 4*16*32 outputs x 8*1*1
    assert count.macs == 8 * 16 * 32 * 27 + 4 * 16 * 32 * 8
    assert count.unresolved == ()
    assert count.gflops == pytest.approx(2 * count.macs / 1e9)  # 1 MAC = 2 FLOPs
    assert bench.count_macs(_conv_argmax_model(), input_shape=(2, 3, 16, 32)).macs == 2 * count.macs


def test_count_macs_matmul_gemm_convtranspose() -> None:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(5, 7)).astype(np.float32), "g"),
        numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "wt"),
    ]
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["mm"]),
        helper.make_node("Gemm", ["c", "g"], ["gm"]),
        helper.make_node("ConvTranspose", ["x", "wt"], ["ct"], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "ops",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 8]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [3, 5]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5]),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mm", "gm", "ct")
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    count = bench.count_macs(model, input_shape=(2, 4, 8))
    assert count.by_op == {
        "MatMul": 2 * 4 * 16 * 8,  # outputs x K
        "Gemm": 3 * 7 * 5,
        "ConvTranspose": 1 * 4 * 5 * 5 * 2 * 3 * 3,  # inputs x Cout/g x kh x kw
    }


@pytest.fixture()
def fake_missing_paddle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make 'import paddle' and 'import paddlex' fail in the worker processes."""
    shadow = tmp_path / "shadow"
    for mod in ("paddle", "paddlex"):
        (shadow / mod).mkdir(parents=True)
        (shadow / mod / "__init__.py").write_text(f"raise ImportError('simulated: no {mod}')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    paddle_dir = tmp_path / "paddle_model"
    paddle_dir.mkdir()
    return paddle_dir


def _run_tiny(tiny_model_dir: Path, tmp_path: Path, paddle_dir: Path | None, **config: object) -> bench.BenchReport:
    image = bench.make_image(tmp_path / "img.png", size=(32, 48))
    source = bench.ModelSource("PP-LiteSeg-T", tiny_model_dir, paddle_dir, bench.REFERENCE_WEIGHTS_LABEL)
    cfg = bench.BenchConfig(size=(32, 48), runs=3, warmup=1, threads=1, **config)  # type: ignore[arg-type]
    return bench.run_bench(
        [source], image, cfg, published=lambda name: {"miou": 73.1, "gpu_ms": 7.68, "cpu_ms": 138.68}
    )


def test_missing_paddle_and_paddlex_say_not_installed(
    tiny_model_dir: Path, tmp_path: Path, fake_missing_paddle: Path
) -> None:
    report = _run_tiny(tiny_model_dir, tmp_path, fake_missing_paddle, against=("paddle", "paddlex", "paddlex-bf16"))
    (model,) = report.models
    assert model.backends["fastseg"].status == "ok"
    assert model.backends["paddle"].status == bench.NOT_INSTALLED
    assert model.backends["paddlex"].status == model.backends["paddlex-bf16"].status == bench.NOT_INSTALLED
    assert "--paddlex-python PATH or FASTSEG_PADDLEX_PYTHON" in model.backends["paddlex"].detail  # the way to fix it
    assert "fastseg-ort[convert]" in model.backends["paddle"].detail
    assert model.ratio("paddle") == bench.NOT_INSTALLED and model.ratio("paddlex") == bench.NOT_INSTALLED
    row = bench.table_rows(report)[0]
    assert row["fastseg/Paddle"] == row["fastseg/PaddleX"] == row["fastseg/PaddleX bf16"] == bench.NOT_INSTALLED
    assert row["Paddle infer ms"] == row["PaddleX e2e ms"] == row["PaddleX bf16 e2e ms"] == bench.NOT_INSTALLED
    assert "PaddleX bf16 e2e ms" not in bench.table_rows(_run_tiny(tiny_model_dir, tmp_path, None))[0]  # only when asked
    missing_interpreter = _run_tiny(
        tiny_model_dir, tmp_path, fake_missing_paddle, against=("paddlex",), paddlex_python=str(tmp_path / "nope")
    )
    assert missing_interpreter.models[0].backends["paddlex"].status == bench.NOT_INSTALLED


def test_outputs_json_markdown_png(tiny_model_dir: Path, tmp_path: Path) -> None:
    ballast = np.ones(400 * 2**20 // 8)  # the parent's peak RSS must not leak into the worker's (execve keeps ru_maxrss)
    report = _run_tiny(tiny_model_dir, tmp_path, None)
    del ballast
    paths = bench.write_outputs(report, tmp_path / "out")
    raw = json.loads(paths["json"].read_text())
    assert {"machine", "versions", "config", "models", "published_conditions"} <= set(raw)
    assert {"cpu", "logical_cores"} <= set(raw["machine"]) and raw["versions"]["onnxruntime"]
    model = raw["models"][0]
    assert model["name"] == "PP-LiteSeg-T" and model["weights"] == "reference weights"
    fs = model["backends"]["fastseg"]
    assert fs["status"] == "ok" and 10 < fs["peak_rss_mb"] < 350 and fs["load_ms"] > 0
    assert {k: len(v) for k, v in fs["samples_ms"].items()} == {s: 3 for s in bench.STAGES}
    assert fs["stats"]["e2e"]["median"] == pytest.approx(float(np.median(fs["samples_ms"]["e2e"])))
    assert model["gflops"] == pytest.approx(2 * (8 * 32 * 48 * 27 + 4 * 32 * 48 * 8) / 1e9)
    assert model["achieved_gflops_per_s"] > 0 and 0 < model["peak_fraction"]
    md = paths["markdown"].read_text()
    assert "| PP-LiteSeg-T | reference weights |" in md and "published T4 ms" in md and "1 MAC = 2 FLOPs" in md
    assert "| 7.68 | 138.68 | 73.10 |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.stat().st_mode & 0o777 for p in paths.values()} == {0o644}  # ordinary shared files, not mkstemp's 0600
    assert bench.render_markdown(bench.report_from_json(raw)) == md  # bench.json alone re-renders the report


def test_a_model_that_could_not_be_prepared_is_a_failed_row(tmp_path: Path) -> None:
    image = bench.make_image(tmp_path / "img.png", size=(32, 48))
    broken = bench.ModelSource("OCRNet_HRNet-W18", Path(), None, "-", error="ConversionError: boom")
    report = bench.run_bench([broken], image, bench.BenchConfig(size=(32, 48), runs=1, warmup=0, against=("paddle",)))
    (model,) = report.models
    assert {b.status for b in model.backends.values()} == {"failed"} and model.gflops is None
    assert "preparing: ConversionError: boom" in bench.render_markdown(report)
    assert bench.table_rows(report)[0]["e2e ms"] == "failed"


def test_a_partial_report_is_written_after_each_model(tmp_path: Path) -> None:
    image = bench.make_image(tmp_path / "img.png", size=(32, 48))
    sources = [bench.ModelSource(n, Path(), None, "-", error="ConversionError: boom") for n in ("PP-LiteSeg-T", "SegFormer-B0")]
    seen: list[list[str]] = []

    def on_model(partial: bench.BenchReport) -> None:
        seen.append([m.name for m in partial.models])
        bench.write_outputs(partial, tmp_path / "out", chart=False)

    report = bench.run_bench(sources, image, bench.BenchConfig(size=(32, 48), runs=1, warmup=0), on_model=on_model)
    assert seen == [["PP-LiteSeg-T"], ["PP-LiteSeg-T", "SegFormer-B0"]]
    written = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [m["name"] for m in written["models"]] == ["PP-LiteSeg-T", "SegFormer-B0"]
    assert written["machine"] == report.machine  # measured once, before the first worker
    assert not (tmp_path / "out" / "bench.png").exists()


def test_gflops_are_counted_at_the_size_the_network_sees(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from fastseg.model_dir import ResizeSpec, read_meta

    resized = tmp_path / "resized"
    shutil.copytree(tiny_model_dir, resized)
    meta = read_meta(resized)
    write_meta(resized, dataclasses.replace(meta, preprocess=PreprocessSpec(resize=ResizeSpec(target_size=(16, 8)))))
    from fastseg.processing import network_hw

    assert network_hw(read_meta(resized), (1024, 2048)) == (8, 16)
    assert network_hw(read_meta(tiny_model_dir), (1024, 2048)) == (1024, 2048)


def test_batch_throughput_counts_images(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = _run_tiny(tiny_model_dir, tmp_path, None, batch=2)
    fs = report.models[0].backends["fastseg"]
    assert fs.status == "ok"
    assert fs.images_per_s == pytest.approx(2 * 1000.0 / fs.stats["e2e"].median)


def test_resolve_model_converts_once_and_caches(tmp_path: Path) -> None:
    import tarfile

    src = tmp_path / "PP-LiteSeg-T_infer"
    src.mkdir()
    (src / "inference.yml").write_text("Global:\n  model_name: PP-LiteSeg-T\n")
    tar = tmp_path / "PP-LiteSeg-T_infer.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(src, arcname=src.name)
    calls: list[str] = []

    def convert(paddle_dir: Path, onnx_dir: Path, name: str) -> None:
        calls.append(name)
        onnx_dir.mkdir(parents=True)
        (onnx_dir / "model.onnx").write_bytes(b"x")
        (onnx_dir / "fastseg.json").write_text("{}")

    for _ in range(2):
        source = bench.resolve_model(
            "PP-LiteSeg-T", home=tmp_path / "home", build_reference=lambda n, d: tar, convert=convert
        )
    assert calls == ["PP-LiteSeg-T"]
    assert source.weights == bench.REFERENCE_WEIGHTS_LABEL
    assert (source.paddle_dir / "inference.yml").is_file()  # type: ignore[operator]
    with pytest.raises(bench.MissingDependencyError, match="python -m converters.reference_models --models all"):
        bench.resolve_model("PP-LiteSeg-B", home=tmp_path / "home")


def test_gpu_without_cuda_is_a_clear_error() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="'gpu:0' needs CUDAExecutionProvider.*fastseg-ort\\[gpu\\]"):
        bench.check_device("gpu:0")
    device, warning = bench.check_device("gpu:0", allow_fallback=True)
    assert device == "cpu" and warning is not None and warning.endswith("Falling back to the CPU (--allow-fallback).")
    assert "fastseg-ort[gpu]" in warning and "allow_fallback=True" not in warning  # already falling back
    from rich.console import Console

    from fastseg.cli.bench import _RichUI

    console = Console(record=True, width=400)
    _RichUI(console).warn(warning)
    assert "pip install 'fastseg-ort[gpu]'" in console.export_text()  # the extra is text, not Rich markup
    with pytest.raises(DeviceError, match="Unknown device kind 'tpu'"):
        bench.check_device("tpu")
    from fastseg.cli import main

    result = CliRunner().invoke(main, ["bench", "--device", "gpu:0"])
    assert result.exit_code == 2 and "Error: Device 'gpu:0' needs CUDAExecutionProvider" in result.output


def test_cli_rejects_bad_size_and_backend() -> None:
    from fastseg.cli import main

    result = CliRunner().invoke(main, ["bench", "--size", "1024"])
    assert result.exit_code == 2 and "HxW" in result.output
    result = CliRunner().invoke(main, ["bench", "--against", "tensorrt"])
    assert result.exit_code == 2 and "paddle, paddlex" in result.output


def test_package_exports_every_public_name_sorted() -> None:
    import types

    assert bench.__all__ == sorted(bench.__all__)
    public = {n for n, v in vars(bench).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public - {"annotations"} == set(bench.__all__)  # annotations: the __future__ import


def test_engine_is_a_column_a_json_key_and_names_the_gflops_column(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rich.console import Console

    report = _run_tiny(tiny_model_dir, tmp_path, None)
    assert report.config["engine"] == "ort" and report.models[0].engine() == "ort"
    raw = json.loads(bench.write_outputs(report, tmp_path / "out", chart=False)["json"].read_text())
    assert raw["config"]["engine"] == "ort" and raw["models"][0]["backends"]["fastseg"]["engine"] == "ort"
    assert bench.report_from_json(raw).models[0].engine() == "ort"
    row = bench.table_rows(report)[0]
    assert list(row)[:4] == ["Model", "Weights", "Engine", "GFLOPs"] and row["Engine"] == "ort"
    assert row["ort GFLOP/s (% peak)"].endswith("%)")
    md = bench.render_markdown(report)
    assert "| Model | Weights | Engine | GFLOPs |" in md and "| PP-LiteSeg-T | reference weights | ort |" in md
    assert "engine ort, fp32" in md
    console = Console(width=300, record=True)
    console.print(bench.render_table(report))
    text = console.export_text()
    assert "reference weights" in text and "ort GFLOP/s (%pk)" in text  # weights never shortened in the terminal


def test_gflops_column_with_several_engines_says_each_rows_own() -> None:
    def model(name: str, engine: str | None) -> bench.ModelResult:
        fs = bench.BackendResult("fastseg", "ok", stats={"infer": bench.Stats(10.0, 11.0, 9.0, 10.0, 3)}, engine=engine)
        return bench.ModelResult(name, bench.REFERENCE_WEIGHTS_LABEL, 1.0, {"fastseg": fs}, {})

    cfg = dataclasses.asdict(bench.BenchConfig(engine="auto"))
    report = bench.BenchReport({}, {}, cfg, [model("A", "openvino"), model("B", "ort")], {})
    rows = bench.table_rows(report)
    assert [r["Engine"] for r in rows] == ["openvino", "ort"]
    assert [r["engine GFLOP/s (% peak)"] for r in rows] == ["100.0 (64%)", "100.0 (64%)"]  # 1 GFLOP / 10 ms of 157
    assert "engine auto, " in bench.conditions_text(report) and "fp32" not in bench.conditions_text(report)  # per row


def test_a_row_above_the_theoretical_peak_raises_the_peak_to_it() -> None:
    """A VM's nominal clock understates turbo: the fastest row sets a floor, never 107% of peak."""
    def model(name: str, infer_ms: float) -> bench.ModelResult:
        fs = bench.BackendResult("fastseg", "ok", stats={"infer": bench.Stats(infer_ms, infer_ms, infer_ms, infer_ms, 3)})
        return bench.ModelResult(name, bench.REFERENCE_WEIGHTS_LABEL, 1.0, {"fastseg": fs}, {})

    cfg = {**dataclasses.asdict(bench.BenchConfig()), "peak_gflops": 80.0, "peak_source": "theoretical bf16 peak"}
    report = bench.BenchReport({}, {}, cfg, [model("Slow", 20.0), model("Fast", 10.0)], {})  # 50 and 100 GFLOP/s
    raised = report.with_peak_at_least_rows()
    assert raised.config["peak_gflops"] == pytest.approx(100.0)
    assert "raised to 100 GFLOP/s, what Fast's row proves" in raised.config["peak_source"]
    assert [m["peak_fraction"] for m in raised.to_json()["models"]] == pytest.approx([0.5, 1.0])
    below = bench.BenchReport({}, {}, {**cfg, "peak_gflops": 200.0}, report.models, {})
    assert below.with_peak_at_least_rows() is below  # a peak no row beats stands


def test_fastseg_worker_runs_the_engine_asked_for_and_reports_the_one_that_ran(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino", reason="the OpenVINO engine needs the [openvino] extra")
    from fastseg.bench import workers

    image = bench.make_image(tmp_path / "img.png", size=(32, 48))
    spec = {"onnx_dir": str(tiny_model_dir), "device": "cpu", "threads": 1, "image": str(image), "batch": 1,
            "warmup": 0, "runs": 1}
    for engine in ("openvino", "ort"):
        result = workers._worker_fastseg({**spec, "engine": engine})
        assert result["status"] == "ok" and result["engine"] == engine and "engine" not in result["versions"]


def test_cli_engine_choices() -> None:
    from fastseg.cli import main

    result = CliRunner().invoke(main, ["bench", "--engine", "tensorrt"])
    assert result.exit_code == 2 and "'auto', 'ort', 'openvino', 'int8', 'openvino-int8', 'openvino-bf16', 'openvino-int8-bf16'" in result.output


def test_peak_is_the_precisions_theoretical_peak_and_never_below_a_measured_sgemm() -> None:
    from fastseg.bench.peak import theoretical_peak

    amx = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
    fp32 = theoretical_peak("fp32", 2, flags=amx, ghz=2.0, pipe_bits=512)
    assert fp32.gflops == 2 * 2.0 * 32 * 2 and "AVX-512, 2 FMA ports" in fp32.formula
    assert theoretical_peak("bf16", 2, flags=amx, ghz=2.0, pipe_bits=512).gflops == 2 * 2.0 * 1024 * 2  # AMX tiles
    assert theoretical_peak("int8", 2, flags=amx, ghz=2.0, pipe_bits=512).gflops == 2 * 2.0 * 2048 * 2
    # int8-bf16 (the int8 graph, bf16 where it is not quantized) counts against the int8 peak
    assert theoretical_peak("int8-bf16", 2, flags=amx, ghz=2.0, pipe_bits=512).gflops == 2 * 2.0 * 2048 * 2
    zen4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
    assert theoretical_peak("bf16", 2, flags=zen4, ghz=3.0, pipe_bits=256).gflops == 2 * 3.0 * 32 * 2
    mixed = theoretical_peak("int8-bf16", 2, flags=zen4, ghz=3.0, pipe_bits=256)
    assert mixed.gflops == 2 * 3.0 * 64 * 2 and "VNNI" in mixed.formula
    assert theoretical_peak("fp32", 2, flags={"avx2"}, ghz=3.0, pipe_bits=256).gflops == 2 * 3.0 * 16 * 2
    zen5 = theoretical_peak("bf16", 2, flags=zen4, ghz=3.0, pipe_bits=512)  # full 512-bit pipes
    assert zen5.gflops == 2 * 3.0 * 64 * 2 and "AVX512-BF16" in zen5.formula
    raised = theoretical_peak("fp32", 2, flags=amx, ghz=2.0, pipe_bits=512, sgemm_gflops=307.0)
    assert raised.gflops == pytest.approx(307.0) and "clock raised to what the fp32 sgemm proves" in raised.formula


@pytest.mark.parametrize(
    ("vendor", "family", "model", "bits"),
    [("AuthenticAMD", 23, 1, 128), ("AuthenticAMD", 23, 0x31, 256), ("AuthenticAMD", 25, 17, 256),
     ("AuthenticAMD", 26, 2, None), ("GenuineIntel", 6, 207, None)],
)
def test_fma_pipes_are_narrower_than_the_instructions_only_on_amd_zen1_to_zen4(
    tmp_path: Path, vendor: str, family: int, model: int, bits: int | None
) -> None:
    from fastseg.bench.peak import fma_pipe_bits

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                       f"model name\t: AMD EPYC\nflags\t\t: avx2\n")
    assert fma_pipe_bits(cpuinfo) == bits


def test_zen1_avx2_peak_counts_its_128_bit_pipes() -> None:
    from fastseg.bench.peak import theoretical_peak

    fp32 = theoretical_peak("fp32", 2, flags={"avx2"}, ghz=2.0, pipe_bits=128)
    assert fp32.gflops == 2 * 2.0 * 8 * 2 and "AVX2 on 2x128-bit pipes" in fp32.formula
    int8 = theoretical_peak("int8", 2, flags={"avx2"}, ghz=2.0, pipe_bits=128)
    assert int8.gflops == 2 * 2.0 * 16 * 2 and "AVX2 (no VNNI) on 2x128-bit pipes" in int8.formula


def test_sliding_window_rows_time_the_whole_call_and_say_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = _run_tiny(tiny_model_dir, tmp_path, None, slide="16x16", slide_stride="8x8")
    fs = report.models[0].backends["fastseg"]
    assert fs.status == "ok", fs.detail
    assert "sliding windows 16x16 step 8x8" in fs.versions["mode"]
    assert "slide 16x16 step 8x8" in bench.conditions_text(report)
    assert "e2e" in fs.stats and fs.stats["infer"].median > 0


def test_bench_refuses_a_malformed_slide_before_any_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fastseg.cli import main

    result = CliRunner().invoke(main, ["bench", "--slide", "big", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--slide 'big': use HxW" in result.output
    assert not (tmp_path / "o").exists()


def test_measured_sgemm_peak_is_a_positive_gflops_figure() -> None:
    from fastseg.bench.machine import measure_sgemm_gflops

    gflops = measure_sgemm_gflops(1, n=128, repeats=2)
    assert 0.1 < gflops < 100_000


def test_peak_measurement_failure_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from fastseg.bench.machine import measure_sgemm_gflops
    from fastseg.errors import FastSegError

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "boom"))
    with pytest.raises(FastSegError, match="--peak-gflops"):
        measure_sgemm_gflops(2)


def test_int8_rows_are_not_captioned_fp32() -> None:
    cfg = dataclasses.asdict(bench.BenchConfig(engine="ort", precision="int8"))
    text = bench.conditions_text(bench.BenchReport({}, {}, cfg, [], {}))
    assert "engine ort, int8, " in text and "fp32" not in text


def test_an_image_of_the_bench_size_is_used_as_is_and_others_are_resized(tmp_path: Path) -> None:
    """``--image`` at ``--size`` keeps its own bytes and format (what ``pre`` decodes is the
    user's file, not OpenCV's fastest-level re-encode); another size is resized to a PNG; the
    report's conditions say which."""
    import cv2

    from fastseg.bench.models import write_bench_image

    rng = np.random.default_rng(3)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), (5, 5), 0)
    jpeg = tmp_path / "frame.JPG"
    jpeg.write_bytes(cv2.imencode(".jpg", photo)[1].tobytes())
    same, note = write_bench_image(tmp_path / "out" / "bench_48x32.png", size=(32, 48), source=jpeg)
    assert same == tmp_path / "out" / "bench_48x32.jpg" and same.read_bytes() == jpeg.read_bytes()
    assert note == "frame.JPG as is"
    resized, resized_note = write_bench_image(tmp_path / "out" / "bench_24x16.png", size=(16, 24), source=jpeg)
    assert resized.suffix == ".png" and cv2.imread(str(resized)).shape == (16, 24, 3)
    assert resized_note == "frame.JPG resized (OpenCV PNG)"
    assert bench.make_image(tmp_path / "out" / "again.png", size=(32, 48), source=jpeg).read_bytes() == jpeg.read_bytes()
    synthetic, synthetic_note = write_bench_image(tmp_path / "out" / "synthetic.png", size=(16, 24))
    assert synthetic.is_file() and synthetic_note == "synthetic (OpenCV PNG)"
    cfg = dataclasses.asdict(bench.BenchConfig(size=(32, 48), image=note))
    assert "image 48x32 (WxH, frame.JPG as is)" in bench.conditions_text(bench.BenchReport({}, {}, cfg, [], {}))


def test_the_timed_runs_start_after_the_background_kernel_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Segmenter loads numba kernels on background threads (~1 s once per process); the
    worker waits for every load it started before timing (the steady state), and starts none."""
    import functools
    import threading

    import fastseg.head.fused as fused
    import fastseg.png_decode as png_decode
    from fastseg.bench.workers import _wait_for_background_loads

    done = threading.Event()

    def slow_load() -> threading.Thread:
        thread = threading.Thread(target=lambda: (done.wait(0.3), done.set()), daemon=True)
        thread.start()
        return thread

    never = functools.cache(lambda: pytest.fail("a load the Segmenter did not start was started"))
    monkeypatch.setattr(png_decode, "preload", functools.cache(slow_load))
    monkeypatch.setattr(fused, "warm_up", never)
    png_decode.preload()  # started, as a Segmenter does
    _wait_for_background_loads()
    assert done.is_set()
