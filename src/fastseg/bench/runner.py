"""Run every backend on every model, each in a fresh worker process, and gather a BenchReport."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastseg.bench.flops import model_gflops
from fastseg.bench.machine import machine_info, versions
from fastseg.bench.models import ModelSource
from fastseg.bench.report import NOT_INSTALLED, BackendResult, BenchConfig, BenchReport, ModelResult, summarize
from fastseg.engines.cpu import cpu_flags
from fastseg.tempdirs import scratch_dir


def run_worker(spec: Mapping[str, Any], *, python: str, timeout_s: float) -> BackendResult:
    """Run one backend in a fresh ``python -m fastseg.bench --worker`` process and read its result.

    The worker's own environment pins OMP/MKL threads to ``spec['threads']``; its stdout/stderr
    (Paddle's logs) are captured and kept only for a failure's detail.
    """
    backend = str(spec["backend"])
    if not Path(python).exists():
        return BackendResult(backend=backend, status=NOT_INSTALLED, detail=f"interpreter {python} not found")
    src_root = str(Path(__file__).resolve().parents[2])  # src/, above the fastseg package
    env = dict(os.environ)
    env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    threads = str(spec["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, GLOG_minloglevel="2", FLAGS_logtostderr="0")
    env.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
    with scratch_dir("bench") as tmp:  # swept by the next run if this one is killed
        spec_path, result_path = tmp / "spec.json", tmp / "result.json"
        spec_path.write_text(json.dumps({**spec, "result_path": str(result_path)}))
        try:
            proc = subprocess.run(
                [python, "-m", "fastseg.bench", "--worker", str(spec_path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return BackendResult(backend=backend, status="failed", detail=f"timed out after {timeout_s:.0f} s")
        if not result_path.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            return BackendResult(backend=backend, status="failed", detail=" | ".join(tail) or f"exit {proc.returncode}")
        raw = json.loads(result_path.read_text())
    samples = {k: [float(v) for v in vals] for k, vals in raw.get("samples_ms", {}).items()}
    stats = {k: summarize(v) for k, v in samples.items() if v}
    e2e = stats.get("e2e")
    batch = int(spec.get("batch", 1))
    return BackendResult(
        backend=backend,
        status=str(raw["status"]),
        stats=stats,
        samples_ms=samples,
        images_per_s=None if e2e is None else batch * 1000.0 / e2e.median,
        peak_rss_mb=raw.get("peak_rss_mb"),
        load_ms=raw.get("load_ms"),
        versions=raw.get("versions", {}),
        detail=str(raw.get("detail", "")),
        engine=raw.get("engine"),
        run_mode=raw.get("run_mode"),
    )


def _segmenter_options(src: ModelSource, config: BenchConfig) -> dict[str, Any]:
    """``--slide``/``--protocol`` as JSON-able Segmenter arguments for ``src`` (fastseg rows only)."""
    if config.slide is None and config.slide_stride is None and config.protocol == "paddlex":
        return {}
    from fastseg.slide import parse_hw, protocol_kwargs

    opts = protocol_kwargs(src.name, config.protocol)
    for key, text, flag in (("slide", config.slide, "--slide"), ("slide_stride", config.slide_stride, "--slide-stride")):
        if text:
            opts[key] = parse_hw(text, name=flag)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


def run_bench(
    sources: Sequence[ModelSource],
    image: Path,
    config: BenchConfig,
    *,
    progress: Callable[[str], None] | None = None,
    gflops: Callable[[ModelSource], float | None] | None = None,
    published: Callable[[str], Mapping[str, Any]] | None = None,
    published_conditions: Mapping[str, str] | None = None,
    on_model: Callable[[BenchReport], object] | None = None,
) -> BenchReport:
    """Benchmark every model on every backend, one worker process after another.

    ``progress(label)`` is called after each (model, backend) step (the CLI drives a progress
    bar with it). ``gflops`` defaults to counting the ONNX graph at ``config.size``.
    ``on_model(partial_report)`` is called after each model, so a long run (the full table at
    1024x2048 takes over an hour here) keeps what it measured if it is stopped.
    """
    gflops = gflops or (lambda s: model_gflops(s.onnx_dir / "model.onnx", size=_network_hw(s.onnx_dir, config.size)))
    machine = machine_info()  # before the first worker: the load average is the machine's, not ours
    results: list[ModelResult] = []
    for src in sources:
        backends: dict[str, BackendResult] = {}
        for backend in ("fastseg", *config.against):
            if src.error:
                backends[backend] = BackendResult(backend=backend, status="failed", detail=f"preparing: {src.error}")
            elif backend != "fastseg" and src.paddle_dir is None:
                backends[backend] = BackendResult(backend=backend, status="not applicable", detail="no Paddle model dir")
            else:
                python = {
                    "fastseg": sys.executable,
                    "paddle": config.paddle_python or sys.executable,
                    "paddlex": config.paddlex_python or sys.executable,
                    "paddlex-bf16": config.paddlex_python or sys.executable,
                }[backend]
                spec = {
                    "backend": backend,
                    "model_name": src.name,
                    "onnx_dir": str(src.onnx_dir),
                    "paddle_dir": None if src.paddle_dir is None else str(src.paddle_dir),
                    "image": str(image),
                    "batch": config.batch,
                    "runs": config.runs,
                    "warmup": config.warmup,
                    "threads": config.threads,
                    "device": config.device,
                    "engine": config.engine,
                    "ort_options": dict(config.ort_options),
                    "segmenter_options": _segmenter_options(src, config) if backend == "fastseg" else {},
                    # what Paddle's mkldnn_bf16 computes here; None where /proc/cpuinfo is unreadable
                    "cpu_flags": sorted(cpu_flags()) or None,
                }
                backends[backend] = run_worker(spec, python=python, timeout_s=config.worker_timeout_s)
            if progress is not None:
                progress(f"{src.name} / {backend}")
        pub = dict(published(src.name)) if published is not None else {}
        pub["batch"] = config.batch
        try:
            g = None if src.error else gflops(src)
        except Exception as exc:  # noqa: BLE001 - a count failure must not lose the timings
            g = None
            pub["gflops_error"] = repr(exc)
        results.append(
            ModelResult(name=src.name, weights=src.weights, gflops=g, backends=backends, published=pub, note=src.note)
        )
        if on_model is not None:
            on_model(_report(machine, results, config, published_conditions))
    return _report(machine, results, config, published_conditions)


def _report(
    machine: dict[str, Any],
    results: Sequence[ModelResult], config: BenchConfig, published_conditions: Mapping[str, str] | None
) -> BenchReport:
    cfg = asdict(config)
    cfg["ort_options"] = dict(config.ort_options)
    found = versions()
    for mres in results:  # a package missing here may have run in a worker's own interpreter
        for b in mres.backends.values():
            for k, v in b.versions.items():
                if found.get(k) == NOT_INSTALLED:
                    found[k] = f"{v} ({b.backend} worker's interpreter)"
    return BenchReport(
        machine=dict(machine),
        versions=found,
        config=cfg,
        models=list(results),
        published_conditions=dict(published_conditions or {}),
    )


def _network_hw(onnx_dir: Path, size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) the network of ``onnx_dir`` sees for a ``size`` image (imported late: see __init__)."""
    from fastseg.model_dir import read_meta
    from fastseg.processing import network_hw

    return network_hw(read_meta(onnx_dir), size)
