"""What runs inside a worker process: one backend timed per stage, its result written as JSON.

Entry: ``python -m fastseg.bench --worker SPEC.json`` (fastseg/bench/__main__.py). The PaddleX
worker runs under another interpreter that has no onnx/onnxruntime/rich: keep the top-level
imports to the standard library and numpy.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.bench.machine import _version
from fastseg.bench.report import NOT_INSTALLED, STAGES
from fastseg.errors import FastSegError


def _peak_rss_mb() -> float:
    """This worker's resident-set high-water mark in MiB.

    Linux: ``VmHWM`` of /proc/self/status, because ``getrusage``'s ``ru_maxrss`` survives
    ``execve`` and would report the parent's peak when that was higher. Elsewhere ru_maxrss.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def _time_loop(
    spec: Mapping[str, Any],
    pre: Callable[[], Any] | None,
    infer: Callable[[Any], Any],
    post: Callable[[Any, Any], Any] | None,
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    total = int(spec["warmup"]) + int(spec["runs"])
    for i in range(total):
        t0 = time.perf_counter()
        x = pre() if pre is not None else None
        t1 = time.perf_counter()
        y = infer(x)
        t2 = time.perf_counter()
        if post is not None:
            post(x, y)
        t3 = time.perf_counter()
        if i >= int(spec["warmup"]):
            samples["pre"].append((t1 - t0) * 1e3)
            samples["infer"].append((t2 - t1) * 1e3)
            samples["post"].append((t3 - t2) * 1e3)
            samples["e2e"].append((t3 - t0) * 1e3)
    return samples


def _ort_session_options(ort: Any, threads: int, options: Mapping[str, Any]) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(options.get("intra_op_num_threads", threads))
    so.inter_op_num_threads = int(options.get("inter_op_num_threads", 1))
    level = str(options.get("graph_optimization_level", "all")).lower()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if str(options.get("execution_mode", "sequential")) == "parallel":
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if "allow_spinning" in options:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options["allow_spinning"] else "0")
    if options.get("affinity"):
        so.add_session_config_entry("session.intra_op_thread_affinities", str(options["affinity"]))
    return so


# RuntimeOptions fields a spec may set; other keys (ORT experiments: spinning, affinity, parallel
# execution, a pre-optimised model file) make the worker build the ORT session itself.
_EXPERIMENT_KEYS = ("allow_spinning", "affinity", "execution_mode", "use_optimized_model", "graph_optimization_level",
                    "intra_op_num_threads", "inter_op_num_threads")


def _fastseg_stages(spec: Mapping[str, Any]) -> tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any, Any], Any], dict[str, str]]:
    """pre/infer/post callables doing exactly what ``Segmenter._run`` does, timed apart.

    pre: read the file + ``decode_image`` + ``Segmenter.prepare`` (resize, and normalise unless the
    engine does it in its graph); infer: ``Segmenter.infer`` (the engine's run, plain or IO binding,
    with the banded head where it runs); post: ``labels_from_output``
    + ``restore_size`` to the source size. The dict: versions, run mode and ``engine``, the engine
    that ran (``Segmenter.engine_name`` where it has one, else "ort").
    """
    import onnxruntime as ort

    from fastseg.model_dir import ONNX_FILE
    from fastseg.processing import decode_image, labels_from_output, preprocess_batch, restore_size
    from fastseg.engines.ort import RuntimeOptions
    from fastseg.segmenter import Segmenter

    options = dict(spec.get("ort_options") or {})
    threads = int(spec["threads"])
    experiment = {k: options.pop(k) for k in list(options) if k in _EXPERIMENT_KEYS}
    rt_options = RuntimeOptions(**{"intra_op_threads": threads, **options})
    engine = str(spec.get("engine", "ort"))
    extra: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in dict(spec.get("segmenter_options") or {}).items()
    }
    if experiment:  # a raw ORT session on the plain graph takes the numpy path's float32 batch
        extra["preprocess"] = "numpy"
    seg = Segmenter(Path(spec["onnx_dir"]), device=str(spec["device"]), options=rt_options, engine=engine, **extra)
    ran = "ort" if experiment else seg.engine_name
    owned = bool(experiment) or seg.owns_output  # a raw experiment session's output is its own too
    meta = seg.meta
    run: Callable[[Any], Any] = seg.infer  # the session, plus the banded head when Segmenter uses it
    if experiment:
        so = _ort_session_options(ort, threads, {"graph_optimization_level": rt_options.graph_optimization, **experiment})
        model_path = Path(experiment.get("use_optimized_model") or Path(spec["onnx_dir"]) / ONNX_FILE)
        raw = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        in_name, out_name = raw.get_inputs()[0].name, raw.get_outputs()[0].name
        seg.close()

        def run(x: Any) -> Any:
            return raw.run([out_name], {in_name: x})[0]

    path = Path(spec["image"])
    batch = int(spec["batch"])
    resize = seg.resize
    if seg.slide is not None:  # windows: preprocessing, network and labels are one call, timed as "infer"
        def decode() -> Any:
            return [decode_image(path.read_bytes(), source=str(path)) for _ in range(batch)]

        (ch, cw), (sh, sw) = seg.slide.crop_hw, seg.slide.stride_hw
        mode = f"Segmenter, sliding windows {ch}x{cw} step {sh}x{sw} (pre+network+labels timed as infer)"
        return decode, seg.predict_images, (lambda x, y: y), {"onnxruntime": ort.__version__, "mode": mode, "engine": ran}

    def pre() -> Any:
        images = [decode_image(path.read_bytes(), source=str(path)) for _ in range(batch)]
        src_hw = (int(images[0].shape[0]), int(images[0].shape[1]))
        if experiment:  # the Segmenter is closed: the numpy path, as the raw session needs
            return preprocess_batch(images, meta.preprocess, resize=resize), src_hw
        return seg.prepare(images, resize), src_hw

    def post(x: Any, y: Any) -> Any:
        labels, _ = labels_from_output(y, meta.output_kind, owned=owned)
        return [restore_size(lab, x[1]) for lab in labels]

    fused = not experiment and seg.session.fused_preprocess
    used = {"onnxruntime": ort.__version__,
            "mode": "raw ORT session (experiment)" if experiment else
            f"Segmenter, {seg.session.runner.mode}, pre-processing in {'the engine' if fused else 'numpy'}, "
            f"{seg.head} head",
            "engine": ran}
    return pre, (lambda x: run(x[0])), post, used


def _wait_for_background_loads() -> None:
    """Let the numba kernels a Segmenter loads in the background (~1 s once per process:
    the banded head's pass, PNG unfiltering) finish before the timed runs, which measure the
    steady state as the warm-up runs are meant to ensure; counted in ``load_ms``."""
    from fastseg.head.fused import warm_up
    from fastseg.png_decode import preload

    for started in (warm_up, preload):
        if started.cache_info().currsize:
            started().join(timeout=120)


def _worker_fastseg(spec: Mapping[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    pre, infer, post, used = _fastseg_stages(spec)
    _wait_for_background_loads()
    load_ms = (time.perf_counter() - t0) * 1e3
    engine = used.pop("engine")  # the engine that ran, reported beside the versions, not among them
    samples = _time_loop(spec, pre, infer, post)
    return {"status": "ok", "samples_ms": samples, "versions": used, "load_ms": load_ms, "engine": engine}


PEER_PYTHON_HINT = (
    "PaddleX lives in its own venv: give its interpreter with --paddlex-python PATH or FASTSEG_PADDLEX_PYTHON "
    "(bash scripts/setup-paddlex.sh DIR makes one)"
)


def _worker_paddle(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        import paddle.inference as pi
    except ImportError as exc:
        return {"status": NOT_INSTALLED, "detail": f"paddle: {exc}; pip install 'fastseg-ort[convert]'"}
    from fastseg.model_dir import read_meta

    paddle_dir = Path(spec["paddle_dir"])
    model_file = paddle_dir / "inference.json"
    if not model_file.is_file():
        model_file = paddle_dir / "inference.pdmodel"
    config = pi.Config(str(model_file), str(paddle_dir / "inference.pdiparams"))
    config.disable_gpu()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(int(spec["threads"]))
    if model_file.suffix == ".json":
        config.enable_new_ir(True)
        config.enable_new_executor(True)
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    in_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    out_handle = predictor.get_output_handle(predictor.get_output_names()[0])
    import cv2

    from fastseg.processing import preprocess_batch

    meta = read_meta(Path(spec["onnx_dir"]))
    image: Any = cv2.imread(str(spec["image"]), cv2.IMREAD_COLOR)
    if image is None:
        raise FastSegError(f"cannot read the benchmark image {spec['image']}")
    x = preprocess_batch([image] * int(spec["batch"]), meta.preprocess, resize=meta.preprocess.resize)

    def infer(_: Any) -> Any:
        in_handle.reshape(list(x.shape))
        in_handle.copy_from_cpu(x)
        predictor.run()
        return out_handle.copy_to_cpu()

    samples = _time_loop(spec, None, infer, None)
    return {
        "status": "ok",
        "samples_ms": {"infer": samples["infer"]},
        "versions": {"paddle": _version("paddle")},
        "detail": "Paddle Inference, MKLDNN on; inference only",
    }


def _worker_paddlex(spec: Mapping[str, Any], run_mode: str | None = None) -> dict[str, Any]:
    """PaddleX's predictor end to end; ``run_mode`` None: PaddleX's own default CPU mode for the model."""
    try:
        from paddlex import create_model
        from paddlex.inference import PaddlePredictorOption
    except ImportError as exc:
        return {"status": NOT_INSTALLED, "detail": f"paddlex: {exc}; {PEER_PYTHON_HINT}"}
    from fastseg.bench.paddlex_mode import choose_run_mode, paddlex_policy

    policy = paddlex_policy()
    flags = spec.get("cpu_flags")
    mode = choose_run_mode(str(spec["model_name"]), run_mode, policy, None if flags is None else frozenset(flags))
    threads = int(spec["threads"])
    option = PaddlePredictorOption(run_mode=mode.runs, device_type="cpu", cpu_threads=threads)
    model = create_model(
        model_name=str(spec["model_name"]),
        model_dir=str(spec["paddle_dir"]),
        device="cpu",
        pp_option=option,
        batch_size=int(spec["batch"]),
    )
    paths = [str(spec["image"])] * int(spec["batch"])

    def infer(_: Any) -> Any:
        return list(model.predict(paths, batch_size=int(spec["batch"])))

    samples = _time_loop(spec, None, infer, None)
    how = "PaddleX's default" if run_mode is None else "asked"
    return {
        "status": "ok",
        "samples_ms": {"e2e": samples["infer"]},
        "versions": {"paddlex": _version("paddlex"), "paddle": _version("paddle")},
        "run_mode": mode.label(),
        "detail": f"PaddleX create_model(...).predict(file), run_mode={mode.runs} ({how}"
                  f"{'; ' + mode.note if mode.note else ''}; rules {policy.source}); end to end only",
    }


_WORKERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "fastseg": _worker_fastseg,
    "paddle": _worker_paddle,
    "paddlex": _worker_paddlex,  # PaddleX's default CPU mode per model (mkldnn, or paddle when blocklisted)
    "paddlex-bf16": lambda spec: _worker_paddlex(spec, run_mode="mkldnn_bf16"),
}


def worker_main(spec_path: Path) -> int:
    """Child-process entry: run the spec's backend, write its result JSON, return the exit code."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = _WORKERS[str(spec["backend"])](spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a failed row
        result = {"status": "failed", "detail": f"{type(exc).__name__}: {exc}"}
    result["peak_rss_mb"] = _peak_rss_mb()
    out = Path(spec["result_path"])
    out.write_text(json.dumps(result))
    return 0
