"""Benchmark fastseg against Paddle Inference and PaddleX's own predictor on the same files.

Every backend runs in its own worker process (``python -m fastseg.bench --worker SPEC``):
ONNX Runtime timed in a process that has also loaded Paddle ran 25-60% slower, so sharing a
process would flatter nobody. The workers get the same model files (the Paddle directory the
ONNX was converted from), the same image file and the same thread count, one after another.

Stages, per iteration (milliseconds, wall clock, ``time.perf_counter``):

- ``pre``: decode the image file + resize/normalise to the NCHW float32 batch;
- ``infer``: the network (ONNX Runtime ``run`` / Paddle ``predictor.run`` + copy out);
- ``post``: label map (argmax when the graph lacks it) resized back to the source size;
- ``e2e``: the three together (file in, label map out). PaddleX is timed end to end only
  (its ``predict`` call), Paddle Inference on ``infer`` only.

Modules (imports point down the list):

- ``report``: Stats, BenchConfig, BackendResult, ModelResult, BenchReport and bench.json;
- ``flops``: MAC/GFLOP counting from the ONNX graph (1 MAC = 2 FLOPs);
- ``machine``: CPU, cores, versions, the device check;
- ``models``: the files a model is benchmarked on (built/converted once, cached), the image;
- ``workers``: what runs inside a worker process (``__main__`` is its entry);
- ``runner``: spawns the workers and gathers a BenchReport;
- ``render``: table rows, rich table, Markdown, PNG chart, the written files;
- ``engines``: the ``--engine`` variants (int8/bf16 made by quantize, auto tuned first);
- ``job``: one ``fastseg bench`` run from its parsed options (``run_job``), the CLI's one call.

The package returns data (and renders it on request: rich and matplotlib are imported only
there); it reads no environment variables, ``fastseg bench`` (fastseg.cli.bench) does. Top-level imports
are the standard library and numpy only, because the PaddleX worker runs under another
interpreter (a separate venv) that has no onnx/onnxruntime/rich.
"""

from __future__ import annotations

from fastseg.bench.flops import MacCount, count_macs, model_gflops
from fastseg.bench.machine import check_device, machine_info, versions
from fastseg.bench.models import ModelSource, bench_cache_dir, make_image, resolve_model
from fastseg.bench.render import (
    conditions_text,
    published_text,
    render_markdown,
    render_table,
    table_rows,
    write_chart,
    write_outputs,
)
from fastseg.bench.report import (
    AGAINST,
    BACKENDS,
    DEFAULT_PEAK_GFLOPS,
    NOT_INSTALLED,
    OFFICIAL_WEIGHTS_LABEL,
    REFERENCE_WEIGHTS_LABEL,
    STAGES,
    BackendResult,
    BenchConfig,
    BenchReport,
    ModelResult,
    Stats,
    report_from_json,
    summarize,
)
from fastseg.bench.runner import run_bench, run_worker
from fastseg.bench.workers import worker_main
from fastseg.errors import MissingDependencyError  # re-exported: callers catch bench.MissingDependencyError

__all__ = [
    "AGAINST",
    "BACKENDS",
    "BackendResult",
    "BenchConfig",
    "BenchReport",
    "DEFAULT_PEAK_GFLOPS",
    "MacCount",
    "MissingDependencyError",
    "ModelResult",
    "ModelSource",
    "NOT_INSTALLED",
    "OFFICIAL_WEIGHTS_LABEL",
    "REFERENCE_WEIGHTS_LABEL",
    "STAGES",
    "Stats",
    "bench_cache_dir",
    "check_device",
    "conditions_text",
    "count_macs",
    "machine_info",
    "make_image",
    "model_gflops",
    "published_text",
    "render_markdown",
    "render_table",
    "report_from_json",
    "resolve_model",
    "run_bench",
    "run_worker",
    "summarize",
    "table_rows",
    "versions",
    "worker_main",
    "write_chart",
    "write_outputs",
]
