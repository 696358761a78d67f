"""Device strings -> providers (against given availability lists), sessions and the run loop."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_models import colour_model

from fastseg.errors import DeviceError, ModelDirError
from fastseg.engines.device import DeviceSpec, parse_device, physical_cores
from fastseg.engines.gpu_libs import CUDA_EP, TRT_EP
from fastseg.engines.ort import CANN_EP, CPU_EP, OPENVINO_EP, RuntimeOptions, choose_run_mode, create_session, resolve_providers, session_options

CPU_ONLY = [CPU_EP]
CUDA = [CUDA_EP, CPU_EP]
TRT = [TRT_EP, CUDA_EP, CPU_EP]
CANN = [CANN_EP, CPU_EP]
OPENVINO = [OPENVINO_EP, CPU_EP]
OPTS = RuntimeOptions()


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("cpu", DeviceSpec("cpu")),
        (" CPU ", DeviceSpec("cpu")),
        ("gpu", DeviceSpec("gpu", 0)),
        ("gpu:0", DeviceSpec("gpu", 0)),
        ("gpu:3", DeviceSpec("gpu", 3)),
        ("GPU:1", DeviceSpec("gpu", 1)),
        ("cuda:2", DeviceSpec("gpu", 2)),
        ("npu", DeviceSpec("npu", 0)),
        ("npu:1", DeviceSpec("npu", 1)),
        ("trt", DeviceSpec("tensorrt", 0)),
        ("trt:1", DeviceSpec("tensorrt", 1)),
        ("tensorrt:2", DeviceSpec("tensorrt", 2)),
        ("openvino", DeviceSpec("openvino", openvino_target="CPU")),
        ("openvino:GPU", DeviceSpec("openvino", openvino_target="GPU")),
        ("openvino:cpu", DeviceSpec("openvino", openvino_target="CPU")),
    ],
)
def test_parse_device_accepted_forms(text: str, spec: DeviceSpec) -> None:
    assert parse_device(text) == spec


@pytest.mark.parametrize("text", ["gpu:x", "tpu", "gpu:-1", "", "cpu:1", "gpu:1:2", "openvino:TPU", "gpu:", ":0"])
def test_parse_device_rejects_with_accepted_forms(text: str) -> None:
    with pytest.raises(DeviceError) as err:
        parse_device(text)
    assert "'gpu:N'" in str(err.value) and repr(text) in str(err.value)


def test_parse_device_rejects_non_string() -> None:
    with pytest.raises(DeviceError, match="must be a string"):
        parse_device(0)  # type: ignore[arg-type]


def _names(providers: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [p for p, _ in providers]


@pytest.mark.parametrize("available", [CPU_ONLY, CUDA, TRT, CANN, OPENVINO])
def test_cpu_is_cpu_everywhere(available: list[str]) -> None:
    assert resolve_providers(parse_device("cpu"), available, options=OPTS, allow_fallback=False) == [(CPU_EP, {})]


@pytest.mark.parametrize("available", [CUDA, TRT])
def test_gpu_maps_to_cuda_with_device_id_then_cpu(available: list[str]) -> None:
    got = resolve_providers(parse_device("gpu:1"), available, options=OPTS, allow_fallback=False)
    assert got == [(CUDA_EP, {"device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE"}), (CPU_EP, {})]


def test_gpu_conv_algo_search_option() -> None:
    opts = RuntimeOptions(cudnn_conv_algo_search="HEURISTIC")
    got = resolve_providers(parse_device("gpu"), CUDA, options=opts, allow_fallback=False)
    assert got[0] == (CUDA_EP, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"})


@pytest.mark.parametrize(
    ("device", "opts"),
    [("trt:1", RuntimeOptions()), ("gpu:1", RuntimeOptions(enable_tensorrt=True))],
)
def test_tensorrt_before_cuda(device: str, opts: RuntimeOptions) -> None:
    got = resolve_providers(parse_device(device), TRT, options=opts, allow_fallback=False)
    assert _names(got) == [TRT_EP, CUDA_EP, CPU_EP]
    assert got[0][1] == {"device_id": 1, "trt_fp16_enable": False}
    assert got[1][1]["device_id"] == 1


def test_tensorrt_fp16_and_engine_cache(tmp_path: Path) -> None:
    opts = RuntimeOptions(trt_fp16=True, trt_engine_cache_dir=tmp_path / "engines")
    got = resolve_providers(parse_device("trt:0"), TRT, options=opts, allow_fallback=False)
    assert got[0] == (
        TRT_EP,
        {
            "device_id": 0,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(tmp_path / "engines"),
        },
    )


def test_npu_maps_to_cann() -> None:
    got = resolve_providers(parse_device("npu:2"), CANN, options=OPTS, allow_fallback=False)
    assert got == [(CANN_EP, {"device_id": 2}), (CPU_EP, {})]


@pytest.mark.parametrize(("device", "target"), [("openvino", "CPU"), ("openvino:GPU", "GPU")])
def test_openvino(device: str, target: str) -> None:
    got = resolve_providers(parse_device(device), OPENVINO, options=OPTS, allow_fallback=False)
    assert got == [(OPENVINO_EP, {"device_type": target}), (CPU_EP, {})]


@pytest.mark.parametrize(
    ("device", "available", "missing"),
    [
        ("gpu", CPU_ONLY, CUDA_EP),
        ("gpu:1", CANN, CUDA_EP),
        ("trt:0", CUDA, TRT_EP),
        ("npu:0", CUDA, CANN_EP),
        ("openvino", TRT, OPENVINO_EP),
    ],
)
def test_missing_accelerator_is_an_error_naming_available(device: str, available: list[str], missing: str) -> None:
    with pytest.raises(DeviceError) as err:
        resolve_providers(parse_device(device), available, options=OPTS, allow_fallback=False)
    msg = str(err.value)
    assert missing in msg and str(available) in msg and "allow_fallback" in msg


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("gpu", CPU_ONLY, [CPU_EP]),
        ("npu:0", CPU_ONLY, [CPU_EP]),
        ("openvino", CPU_ONLY, [CPU_EP]),
        ("trt:0", CUDA, [CUDA_EP, CPU_EP]),  # TensorRT missing: CUDA still used
    ],
)
def test_fallback_warns(device: str, available: list[str], expected: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fastseg.engines.ort"):
        got = resolve_providers(parse_device(device), available, options=OPTS, allow_fallback=True)
    assert _names(got) == expected
    assert any("Falling back" in r.message and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(
    "bad",
    [
        {"intra_op_threads": 0},
        {"inter_op_threads": -1},
        {"graph_optimization": "max"},
        {"cudnn_conv_algo_search": "FAST"},
        {"io_binding": "zero-copy"},
        {"ort_log_level": 5},
    ],
)
def test_runtime_options_validated(bad: dict[str, object]) -> None:
    with pytest.raises(DeviceError):
        RuntimeOptions(**bad)  # type: ignore[arg-type]


def test_physical_cores_within_affinity() -> None:
    n = physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_session_options_defaults_and_overrides(tmp_path: Path) -> None:
    import onnxruntime as ort

    so = session_options(RuntimeOptions())
    assert so.intra_op_num_threads == physical_cores()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.log_severity_level == 3
    so = session_options(
        RuntimeOptions(intra_op_threads=1, inter_op_threads=2, graph_optimization="basic", enable_profiling=True)
    )
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 2)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.enable_profiling


@pytest.fixture(scope="module")
def labels_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model(tmp_path_factory.mktemp("onnx") / "labels.onnx", "labels")


def _batch(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def test_real_cpu_session(labels_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fastseg.engines.ort"):
        session = create_session(labels_onnx, "cpu", RuntimeOptions(intra_op_threads=1))
    with session:
        assert session.providers == [CPU_EP]
        assert session.input_name == "x" and session.output_name == "labels"
        assert session.inputs[0].shape[1] == 3 and session.outputs[0].type == "tensor(int64)"
        assert session.runner.mode == "plain"  # auto on CPU
        x = _batch(2, 8, 12)
        out = session.run(x)
        np.testing.assert_array_equal(out, x.argmax(axis=1))
    assert any("CPUExecutionProvider" in r.getMessage() for r in caplog.records)
    with pytest.raises(DeviceError, match="closed"):
        session.run(x)


def test_gpu_session_without_gpu_is_an_error_or_falls_back(labels_onnx: Path) -> None:
    import onnxruntime as ort

    if CUDA_EP in ort.get_available_providers():
        pytest.skip("this machine has CUDA; the error path needs a CPU-only onnxruntime")
    with pytest.raises(DeviceError, match="CPUExecutionProvider"):
        create_session(labels_onnx, "gpu:0")
    with create_session(labels_onnx, "gpu:0", allow_fallback=True) as session:
        assert session.providers == [CPU_EP]


def test_iobinding_matches_plain_and_reuses_buffer(labels_onnx: Path) -> None:
    plain = create_session(labels_onnx, "cpu", RuntimeOptions(io_binding="plain", intra_op_threads=1))
    bound = create_session(labels_onnx, "cpu", RuntimeOptions(io_binding="iobinding", intra_op_threads=1))
    with plain, bound:
        assert bound.runner.mode == "iobinding"
        first = bound.run(_batch(2, 16, 24, seed=1))
        np.testing.assert_array_equal(first, plain.run(_batch(2, 16, 24, seed=1)))
        x2 = _batch(2, 16, 24, seed=2)
        second = bound.run(x2)
        assert second is first, "a repeated shape must reuse its output buffer"
        np.testing.assert_array_equal(second, plain.run(x2))
        x3 = _batch(2, 16, 24, seed=3)
        np.testing.assert_array_equal(bound.run(x3), plain.run(x3))
        other = bound.run(_batch(1, 10, 10, seed=4))  # new shape: new buffer, correct values
        assert other.shape == (1, 10, 10) and other is not first
        np.testing.assert_array_equal(other, plain.run(_batch(1, 10, 10, seed=4)))
        assert bound.runner.cached_output((2, 3, 16, 24)) is first
        back = bound.run(x2)  # switching back re-binds the cached buffer
        assert back is first
        np.testing.assert_array_equal(back, plain.run(x2))


def test_iobinding_accepts_non_contiguous_input(labels_onnx: Path) -> None:
    with create_session(labels_onnx, "cpu", RuntimeOptions(io_binding="iobinding", intra_op_threads=1)) as s:
        x = _batch(1, 8, 16)[:, :, :, ::2]
        s.run(x)
        np.testing.assert_array_equal(s.run(x), x.argmax(axis=1))


def test_optimized_model_cache_written(labels_onnx: Path, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "opt.onnx"
    with create_session(labels_onnx, "cpu", RuntimeOptions(optimized_model_path=target, intra_op_threads=1)):
        pass
    assert target.is_file() and target.stat().st_size > 0


def test_optimized_model_cache_is_reused_when_newer(labels_onnx: Path, tmp_path: Path) -> None:
    from fastseg.engines.ort import _use_optimized_cache

    target = tmp_path / "opt.onnx"
    opts = RuntimeOptions(optimized_model_path=target, intra_op_threads=1)
    assert _use_optimized_cache(labels_onnx, opts) == (None, opts)  # no cache yet: optimise and write
    with create_session(labels_onnx, "cpu", opts):
        pass
    path, used = _use_optimized_cache(labels_onnx, opts)
    assert path == target and used.graph_optimization == "disable" and used.optimized_model_path is None
    with create_session(labels_onnx, "cpu", opts) as s:  # loads the cached, already optimised graph
        x = _batch(1, 4, 6)
        np.testing.assert_array_equal(s.run(x), x.argmax(axis=1))
    target.with_name("opt.onnx.fused").unlink()  # as if killed while ORT wrote the cache: never loaded
    assert _use_optimized_cache(labels_onnx, opts) == (None, opts)


def test_optimized_model_cache_of_a_fused_graph_is_written_reused_and_never_mixed_up(tmp_path: Path) -> None:
    """With pre-processing in the graph (the CPU default) the cache holds the fused graph, stamped
    with its prefix: reused for the same prefix, rebuilt for another one or for the plain graph."""
    from fastseg.engines.ort import _use_optimized_cache
    from fastseg.engines.preprocess_graph import FusedPreprocess, fused_preprocess
    from fastseg.model_dir import read_meta
    from tiny_models import colour_image, colour_model_dir

    model = colour_model_dir(tmp_path / "colour") / "model.onnx"
    fused = fused_preprocess(read_meta(model.parent).preprocess)
    target = tmp_path / "opt.onnx"
    opts = RuntimeOptions(optimized_model_path=target, intra_op_threads=1)
    image = colour_image()[None]
    with create_session(model, "cpu", opts, fused=fused) as s:
        expected = s.run(image)
    assert target.is_file() and _use_optimized_cache(model, opts, fused)[0] == target
    with create_session(model, "cpu", opts, fused=fused) as s:  # the cached fused graph, loaded as is
        assert s.fused_preprocess
        np.testing.assert_array_equal(s.run(image), expected)
    other = FusedPreprocess(scale=(1.0, 1.0, 1.0), shift=(0.0, 0.0, 0.0), to_rgb=False)
    assert _use_optimized_cache(model, opts, other) == (None, opts)  # another prefix: rebuilt
    assert _use_optimized_cache(model, opts, None) == (None, opts)  # the plain graph: rebuilt


def test_profiling_writes_a_profile(labels_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with create_session(labels_onnx, "cpu", RuntimeOptions(enable_profiling=True, intra_op_threads=1)) as s:
        s.run(_batch(1, 4, 4))
    assert list(tmp_path.glob("onnxruntime_profile_*.json"))


def test_missing_onnx_file(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        create_session(tmp_path / "nope.onnx")


def test_corrupt_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelDirError, match="cannot load"):
        create_session(bad)


@pytest.mark.parametrize(
    ("mode", "device", "in_use", "expected"),
    [
        ("auto", "cpu", [CPU_EP], "plain"),
        ("auto", "gpu:0", [CUDA_EP, CPU_EP], "iobinding"),
        ("auto", "trt:0", [TRT_EP, CUDA_EP, CPU_EP], "iobinding"),
        ("auto", "npu:0", [CANN_EP, CPU_EP], "iobinding"),
        ("auto", "gpu:0", [CPU_EP], "plain"),  # fell back to the CPU
        ("auto", "openvino", [OPENVINO_EP, CPU_EP], "plain"),
        ("iobinding", "cpu", [CPU_EP], "iobinding"),
        ("plain", "gpu:0", [CUDA_EP, CPU_EP], "plain"),
    ],
)
def test_choose_run_mode(mode: str, device: str, in_use: list[str], expected: str) -> None:
    opts = RuntimeOptions(io_binding=mode)  # type: ignore[arg-type]
    assert choose_run_mode(opts, parse_device(device), in_use) == expected


def test_cuda_sessions_check_their_libraries_first(labels_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu:N calls gpu_libs.prepare_cuda before ONNX Runtime: a missing CUDA library is one
    DeviceError line (or, with allow_fallback, a CPU session)."""
    import onnxruntime as ort

    from fastseg.engines import gpu_libs

    asked: list[str] = []

    def missing(provider: str, **_: object) -> None:
        asked.append(provider)
        raise DeviceError("CUDA provider cannot start: libcublasLt.so.13 is missing. Fix: pip install ...")

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", CPU_EP])
    monkeypatch.setattr(gpu_libs, "prepare_cuda", missing)
    with pytest.raises(DeviceError, match="libcublasLt.so.13 is missing"):
        create_session(labels_onnx, "gpu:0")
    with create_session(labels_onnx, "gpu:0", allow_fallback=True) as session:
        assert session.providers == [CPU_EP]
    assert asked == ["CUDAExecutionProvider", "CUDAExecutionProvider"]


@pytest.mark.parametrize("level", [3, 0])
def test_ort_process_logger_follows_ort_log_level(level: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT's own warnings (provider set-up, device discovery) stay quiet unless asked for: the
    process-wide logger gets the session's level before the session is created."""
    import onnxruntime as ort

    seen: list[int] = []
    monkeypatch.setattr(ort, "set_default_logger_severity", seen.append)
    model = colour_model(tmp_path / "m.onnx")
    create_session(model, parse_device("cpu"), RuntimeOptions(ort_log_level=level))
    assert seen == [level]
