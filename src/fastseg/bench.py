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

FLOPs convention: 1 multiply-accumulate (MAC) = 2 FLOPs. Counted for Conv, ConvTranspose,
MatMul and Gemm from the ONNX graph after shape inference at the benchmark size; other ops
(elementwise, pooling, softmax, resize) are not counted, as in most papers' GFLOPs tables.

This module returns data (and renders it on request: rich and matplotlib are imported only
there); it reads no environment variables, ``fastseg bench`` (cli.py) does. Top-level imports are the standard library and numpy only, because the PaddleX worker runs
under another interpreter (a separate venv) that has no onnx/onnxruntime/rich.
"""

from __future__ import annotations

import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import DeviceError, FastSegError, MissingDependencyError
from fastseg.files import write_bytes_atomic

BACKENDS: tuple[str, ...] = ("fastseg", "paddle", "paddlex")
AGAINST: tuple[str, ...] = ("paddle", "paddlex")
STAGES: tuple[str, ...] = ("pre", "infer", "post", "e2e")
# 2 cores x 2 FMA units x 8 fp32 lanes (AVX2) x 2 FLOPs per FMA x ~2.45 GHz.
DEFAULT_PEAK_GFLOPS = 157.0
NOT_INSTALLED = "not installed"
REFERENCE_WEIGHTS = "reference weights"
OFFICIAL_WEIGHTS = "official weights"


# ------------------------------------------------------------------ data


@dataclass(frozen=True)
class Stats:
    """Summary of latency samples in milliseconds."""

    median: float
    p90: float
    min: float
    mean: float
    n: int


def summarize(samples_ms: Sequence[float]) -> Stats:
    """Median, 90th percentile (linear interpolation, numpy's default), min and mean.

    Raises:
        ValueError: on an empty sample list (a bug in the caller, never user input).
    """
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarise")
    arr = np.asarray(samples_ms, dtype=np.float64)
    return Stats(
        median=float(np.median(arr)),
        p90=float(np.percentile(arr, 90)),
        min=float(arr.min()),
        mean=float(arr.mean()),
        n=int(arr.size),
    )


@dataclass(frozen=True)
class ModelSource:
    """The files one model is benchmarked on.

    ``onnx_dir`` holds model.onnx + fastseg.json; ``paddle_dir`` the Paddle inference model it
    was converted from (inference.json/.pdiparams/.yml), or None when there is none.
    ``weights`` is ``"official weights"`` or ``"reference weights"`` (random, same cost).
    ``error`` says why the files could not be prepared (the row then reads "failed").
    """

    name: str
    onnx_dir: Path
    paddle_dir: Path | None
    weights: str
    note: str = ""
    error: str = ""


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``size`` is (height, width) of the image fed to every backend."""

    size: tuple[int, int] = (1024, 2048)
    batch: int = 1
    runs: int = 10
    warmup: int = 2
    threads: int = 2
    device: str = "cpu"
    against: tuple[str, ...] = ()
    peak_gflops: float = DEFAULT_PEAK_GFLOPS
    paddle_python: str | None = None
    paddlex_python: str | None = None
    ort_options: Mapping[str, Any] = field(default_factory=dict)
    worker_timeout_s: float = 3600.0


@dataclass(frozen=True)
class BackendResult:
    """One backend on one model. ``status`` is "ok", "not installed", "not applicable" or "failed"."""

    backend: str
    status: str
    stats: Mapping[str, Stats] = field(default_factory=dict)
    samples_ms: Mapping[str, list[float]] = field(default_factory=dict)
    images_per_s: float | None = None
    peak_rss_mb: float | None = None
    load_ms: float | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class ModelResult:
    """All backends on one model, plus its cost and PaddleX's published figures."""

    name: str
    weights: str
    gflops: float | None
    backends: Mapping[str, BackendResult]
    published: Mapping[str, Any]
    note: str = ""

    def stage(self, backend: str, stage: str) -> Stats | None:
        res = self.backends.get(backend)
        return None if res is None or res.status != "ok" else res.stats.get(stage)

    def achieved_gflops(self) -> float | None:
        """GFLOP/s of fastseg's inference stage (per image; batch already divided out)."""
        infer = self.stage("fastseg", "infer")
        if self.gflops is None or infer is None or infer.median <= 0:
            return None
        batch = int(self.published.get("batch", 1))
        return self.gflops * batch / (infer.median / 1000.0)

    def ratio(self, against: str) -> float | str | None:
        """fastseg / other: inference medians against Paddle, end to end against PaddleX.

        A string ("not installed", "failed", ...) when the other side has no number.
        """
        stage = "infer" if against == "paddle" else "e2e"
        other = self.backends.get(against)
        if other is None:
            return None
        if other.status != "ok":
            return other.status
        mine, theirs = self.stage("fastseg", stage), other.stats.get(stage)
        if mine is None or theirs is None or theirs.median <= 0:
            return None
        return mine.median / theirs.median


@dataclass(frozen=True)
class BenchReport:
    """A whole run: machine, versions, configuration and one ModelResult per model."""

    machine: Mapping[str, Any]
    versions: Mapping[str, str]
    config: Mapping[str, Any]
    models: list[ModelResult]
    published_conditions: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for m, mres in zip(out["models"], self.models):
            m["achieved_gflops_per_s"] = mres.achieved_gflops()
            achieved = mres.achieved_gflops()
            m["peak_fraction"] = None if achieved is None else achieved / float(self.config["peak_gflops"])
            m["ratios"] = {a: mres.ratio(a) for a in AGAINST}
        return out


def report_from_json(raw: Mapping[str, Any]) -> BenchReport:
    """Rebuild a ``BenchReport`` from ``bench.json`` (to re-render tables/charts without re-running)."""
    models = []
    for m in raw["models"]:
        backends = {}
        for name, b in m["backends"].items():
            fields = {k: v for k, v in b.items() if k in BackendResult.__dataclass_fields__}
            fields["stats"] = {k: Stats(**v) for k, v in b.get("stats", {}).items()}
            backends[name] = BackendResult(**fields)
        models.append(
            ModelResult(name=m["name"], weights=m["weights"], gflops=m["gflops"], backends=backends,
                        published=m["published"], note=m.get("note", ""))
        )
    return BenchReport(machine=raw["machine"], versions=raw["versions"], config=raw["config"], models=models,
                       published_conditions=raw.get("published_conditions", {}))


# ------------------------------------------------------------------ FLOPs


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of the counted ops; ``unresolved`` lists nodes whose shapes stayed unknown."""

    macs: int
    by_op: Mapping[str, int]
    unresolved: tuple[str, ...]

    @property
    def gflops(self) -> float:
        """GFLOPs with the 1 MAC = 2 FLOPs convention."""
        return 2.0 * self.macs / 1e9


def count_macs(model: Any, *, input_shape: Sequence[int], measure_unresolved: bool = True) -> MacCount:
    """Count Conv/ConvTranspose/MatMul/Gemm MACs of an ONNX model at a fixed input shape.

    Shapes come from ONNX shape inference (with data propagation). paddle2onnx graphs compute
    many Reshape targets from ``Shape`` ops that inference cannot follow; with
    ``measure_unresolved`` the remaining nodes' shapes are read from one un-optimised ONNX
    Runtime run with its profiler on (every node event records its input/output shapes).

    Args:
        model: an ``onnx.ModelProto`` or a path to a .onnx file.
        input_shape: the first graph input's shape, e.g. (1, 3, 1024, 2048).
        measure_unresolved: run the model once to resolve what inference could not.

    Raises:
        MissingDependencyError: the ``onnx`` package is not installed.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError as exc:  # pragma: no cover - onnx is in the convert extra
        raise MissingDependencyError("Counting GFLOPs needs onnx: pip install 'fastseg-ort[convert]'.") from exc
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    proto = _copy_model(proto)
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"fastseg_node_{i}"
    init_names = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in init_names]
    dims = graph_inputs[0].type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    inferred = shape_inference.infer_shapes(proto, data_prop=True)
    shapes: dict[str, list[int] | None] = {}

    def _shape(vi: Any) -> list[int] | None:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            return None
        out = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return None if any(v <= 0 for v in out) else out

    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = _shape(vi)
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    counted = [n for n in inferred.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")]
    pending = [n for n in counted if _node_macs(n, [shapes.get(i) for i in n.input], shapes.get(n.output[0])) is None]
    measured: dict[str, tuple[list[list[int] | None], list[int] | None]] = {}
    if pending and measure_unresolved:
        measured = _profiled_shapes(proto, graph_inputs[0].name, input_shape)
    by_op: dict[str, int] = {}
    unresolved: list[str] = []
    for node in counted:
        ins = [shapes.get(n) for n in node.input]
        out = shapes.get(node.output[0])
        macs = _node_macs(node, ins, out)
        if macs is None and node.name in measured:
            m_ins, m_out = measured[node.name]
            macs = _node_macs(node, [a if a is not None else b for a, b in zip(ins, m_ins + [None] * len(ins))], out or m_out)
        if macs is None:
            unresolved.append(node.name)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return MacCount(macs=sum(by_op.values()), by_op=by_op, unresolved=tuple(unresolved))


def _profiled_shapes(
    proto: Any, input_name: str, input_shape: Sequence[int]
) -> dict[str, tuple[list[list[int] | None], list[int] | None]]:
    """Node name -> (input shapes, first output shape) from one profiled, un-optimised ORT run."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fastseg-flops-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.enable_profiling = True
        so.log_severity_level = 3  # no "Removing initializer" chatter from an un-optimised load
        so.profile_file_prefix = str(Path(tmp) / "shapes")
        session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        session.run(None, {input_name: np.zeros(tuple(int(v) for v in input_shape), np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    out: dict[str, tuple[list[list[int] | None], list[int] | None]] = {}
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") != "Node" or "input_type_shape" not in args:
            continue
        name = str(ev.get("name", "")).removesuffix("_kernel_time")
        ins = [next(iter(d.values())) if d else None for d in args["input_type_shape"]]
        outs = [next(iter(d.values())) if d else None for d in args.get("output_type_shape", [])]
        out[name] = (ins, outs[0] if outs else None)
    return out


def _copy_model(proto: Any) -> Any:
    copy = type(proto)()
    copy.CopyFrom(proto)
    return copy


def _node_macs(node: Any, ins: list[list[int] | None], out: list[int] | None) -> int | None:
    attrs = {a.name: a for a in node.attribute}
    group = int(attrs["group"].i) if "group" in attrs else 1
    if node.op_type == "Conv":
        w = ins[1] if len(ins) > 1 else None
        if out is None or w is None:
            return None
        return int(np.prod(out)) * int(np.prod(w[1:]))  # every output element: Cin/g * kh * kw MACs
    if node.op_type == "ConvTranspose":
        x, w = ins[0], (ins[1] if len(ins) > 1 else None)
        if x is None or w is None:
            return None
        return int(np.prod(x)) * w[1] * int(np.prod(w[2:]))  # every input element: Cout/g * kh * kw
    if node.op_type == "MatMul":
        a = ins[0]
        if out is None or a is None:
            return None
        return int(np.prod(out)) * a[-1]
    if node.op_type == "Gemm":
        a = ins[0]
        if out is None or a is None:
            return None
        trans_a = int(attrs["transA"].i) if "transA" in attrs else 0
        return int(np.prod(out)) * (a[0] if trans_a else a[-1])
    return None  # pragma: no cover


# ------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    """CPU model, core count, OS and Python: the conditions every number here depends on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"paddle": "paddlepaddle", "cv2": "opencv-python-headless"}.get(module, module)
    for name in (dist, module, "opencv-python", "opencv-contrib-python"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return NOT_INSTALLED


def versions() -> dict[str, str]:
    """Versions of everything on the parent interpreter (workers report their own)."""
    from fastseg import __version__

    out = {"fastseg": __version__}
    for mod in ("onnxruntime", "onnx", "numpy", "cv2", "paddle", "paddlex"):
        out[mod] = _version(mod)
    return out


# ------------------------------------------------------------------ device


def check_device(device: str, *, allow_fallback: bool = False) -> tuple[str, str | None]:
    """Validate the device for the fastseg worker before anything starts (the runtime's rules).

    Returns:
        (device to use, warning or None). With ``allow_fallback`` a missing accelerator gives
        "cpu" and a warning instead of an error.

    Raises:
        DeviceError: an unparsable device, or an accelerator ONNX Runtime cannot use here.
    """
    import onnxruntime as ort

    from fastseg.runtime import RuntimeOptions, parse_device, resolve_providers

    spec = parse_device(device)
    if spec.kind == "cpu":
        return "cpu", None
    try:
        resolve_providers(spec, ort.get_available_providers(), options=RuntimeOptions(), allow_fallback=False)
    except DeviceError as exc:
        if not allow_fallback:
            raise
        return "cpu", f"{exc} Falling back to CPU (--allow-fallback)."
    return device, None


# ------------------------------------------------------------------ models


def bench_cache_dir(home: Path) -> Path:
    """Where bench keeps Paddle model dirs and their converted ONNX (``<home>/bench``)."""
    return home / "bench"


def _extract_tar(tar_path: Path, dest: Path) -> Path:
    """Extract an ``<NAME>_infer.tar`` atomically into ``dest``; return the dir with inference.yml."""
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            from fastseg.convert.sources import extract_tarball  # refuses links, '..', absolute paths

            extract_tarball(tar_path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for yml in sorted(dest.rglob("inference.yml")):
        return yml.parent
    raise FastSegError(f"{tar_path} has no inference.yml; delete {dest} and the tarball, then retry.")


def resolve_model(
    name: str,
    *,
    home: Path,
    official_tar: Path | None = None,
    build_reference: Callable[[str, Path], Path] | None = None,
    convert: Callable[[Path, Path, str], str | None] | None = None,
) -> ModelSource:
    """Find or build the files to benchmark ``name`` on, converting once and caching.

    Official weights when ``official_tar`` (a cached ``<NAME>_infer.tar``) is given, else a
    reference build (``build_reference(name, cache_dir) -> tar``: converters/reference_models'
    ``ensure_reference``). The ONNX is converted with ``convert(paddle_dir, onnx_dir, name)`` into
    ``<home>/bench/<weights>/<name>/onnx`` and reused on the next run. A note ``convert``
    returns (e.g. "unverified: ...") is kept beside it and shown in the row.

    Raises:
        MissingDependencyError: no official tarball and no reference builder, or no converter.
    """
    from fastseg.model_dir import is_model_dir

    if official_tar is not None:
        weights, tag, tar = OFFICIAL_WEIGHTS, "official", official_tar
    elif build_reference is not None:
        weights, tag = REFERENCE_WEIGHTS, "reference"
        tar = build_reference(name, bench_cache_dir(home) / tag / "tars")
    else:
        raise MissingDependencyError(
            f"No official {name}_infer.tar is cached and the reference builder (converters/) is not importable. "
            "Run from the fastseg repository (converters/ beside src/), or build the references once with "
            "'python converters/reference_models.py --models all --out DIR' and pass --reference-dir DIR."
        )
    root = bench_cache_dir(home) / tag / name
    paddle_dir = _extract_tar(Path(tar), root / "paddle")
    onnx_dir = root / "onnx"
    if not is_model_dir(onnx_dir):
        if convert is None:
            raise MissingDependencyError(
                f"{name} is not converted yet and fastseg.convert is unavailable: pip install 'fastseg-ort[convert]'."
            )
        from fastseg.files import write_text_atomic

        write_text_atomic(root / "note.txt", convert(paddle_dir, onnx_dir, name) or "")
    note_file = root / "note.txt"
    note = note_file.read_text().strip() if note_file.is_file() else ""
    return ModelSource(name=name, onnx_dir=onnx_dir, paddle_dir=paddle_dir, weights=weights, note=note)


# ------------------------------------------------------------------ running


def make_image(path: Path, *, size: tuple[int, int], source: Path | None = None) -> Path:
    """Write the benchmark image (H, W = ``size``) as PNG: ``source`` resized, or a fixed synthetic scene.

    Raises:
        FastSegError: ``source`` cannot be read.
    """
    import cv2

    h, w = size
    if source is not None:
        img = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if img is None:
            raise FastSegError(f"Cannot read --image {str(source)!r}: give a PNG/JPEG file.")
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 255], axis=-1)
        img = np.clip(base + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def run_worker(spec: Mapping[str, Any], *, python: str, timeout_s: float) -> BackendResult:
    """Run one backend in a fresh ``python -m fastseg.bench --worker`` process and read its result.

    The worker's own environment pins OMP/MKL threads to ``spec['threads']``; its stdout/stderr
    (Paddle's logs) are captured and kept only for a failure's detail.
    """
    backend = str(spec["backend"])
    if not Path(python).exists():
        return BackendResult(backend=backend, status=NOT_INSTALLED, detail=f"interpreter {python} not found")
    src_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    threads = str(spec["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, GLOG_minloglevel="2", FLAGS_logtostderr="0")
    env.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
    with tempfile.TemporaryDirectory(prefix="fastseg-bench-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
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
    )


def run_bench(
    sources: Sequence[ModelSource],
    image: Path,
    config: BenchConfig,
    *,
    progress: Callable[[str], None] | None = None,
    gflops: Callable[[ModelSource], float | None] | None = None,
    published: Callable[[str], Mapping[str, Any]] | None = None,
    published_conditions: Mapping[str, str] | None = None,
    on_model: Callable[[BenchReport], None] | None = None,
) -> BenchReport:
    """Benchmark every model on every backend, one worker process after another.

    ``progress(label)`` is called after each (model, backend) step (the CLI drives a progress
    bar with it). ``gflops`` defaults to counting the ONNX graph at ``config.size``.
    ``on_model(partial_report)`` is called after each model, so a long run (the full table at
    1024x2048 takes over an hour here) keeps what it measured if it is stopped.
    """
    gflops = gflops or (lambda s: model_gflops(s.onnx_dir / "model.onnx", size=network_hw(s.onnx_dir, config.size)))
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
                    "ort_options": dict(config.ort_options),
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


def network_hw(onnx_dir: Path, size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) the network sees for a ``size`` image: the model's Resize (or fixed size) applied."""
    from fastseg.model_dir import read_meta
    from fastseg.processing import resized_hw

    meta = read_meta(onnx_dir)
    if meta.fixed_hw is not None and not meta.dynamic_hw:
        return meta.fixed_hw
    return resized_hw(size, meta.preprocess.resize)


def model_gflops(onnx_path: Path, *, size: tuple[int, int], batch: int = 1) -> float:
    """GFLOPs of one forward pass at ``size`` (per batch of ``batch``), cached beside the model."""
    cache = onnx_path.with_name("gflops.json")
    key = f"{batch}x3x{size[0]}x{size[1]}"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except json.JSONDecodeError:
        known = {}
    if key in known and known.get("_mtime") == onnx_path.stat().st_mtime:
        return float(known[key])
    count = count_macs(onnx_path, input_shape=(batch, 3, size[0], size[1]))
    known = {**(known if known.get("_mtime") == onnx_path.stat().st_mtime else {}), key: count.gflops}
    known["_mtime"] = onnx_path.stat().st_mtime
    from fastseg.files import write_text_atomic

    write_text_atomic(cache, json.dumps(known))
    return count.gflops


# ------------------------------------------------------------------ rendering


def _fmt_ms(stats: Stats | None) -> str:
    return "-" if stats is None else f"{stats.median:.1f}"


def _fmt_ratio(value: float | str | None) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.2f}x"


def table_rows(report: BenchReport) -> list[dict[str, str]]:
    """One row of display strings per model (shared by the terminal table and Markdown)."""
    peak = float(report.config["peak_gflops"])
    rows = []
    for m in report.models:
        fs = m.backends.get("fastseg")
        e2e = m.stage("fastseg", "e2e")
        achieved = m.achieved_gflops()
        paddle, paddlex = m.backends.get("paddle"), m.backends.get("paddlex")
        rows.append(
            {
                "Model": m.name,
                "Weights": m.weights + (" (unverified)" if m.note.startswith("unverified") else ""),
                "GFLOPs": "-" if m.gflops is None else (f"{m.gflops:.1f}" if m.gflops >= 1 else f"{m.gflops:.4f}"),
                "pre ms": _fmt_ms(m.stage("fastseg", "pre")),
                "infer ms": _fmt_ms(m.stage("fastseg", "infer")),
                "post ms": _fmt_ms(m.stage("fastseg", "post")),
                "e2e ms": _fmt_ms(e2e) if fs is None or fs.status == "ok" else fs.status,
                "e2e p90/min": "-" if e2e is None else f"{e2e.p90:.1f}/{e2e.min:.1f}",
                "img/s": "-" if fs is None or fs.images_per_s is None else f"{fs.images_per_s:.2f}",
                "GFLOP/s (% peak)": "-" if achieved is None else f"{achieved:.1f} ({100 * achieved / peak:.0f}%)",
                "RSS MB": "-" if fs is None or fs.peak_rss_mb is None else f"{fs.peak_rss_mb:.0f}",
                "Paddle infer ms": "-" if paddle is None else (_fmt_ms(paddle.stats.get("infer")) if paddle.status == "ok" else paddle.status),
                "fastseg/Paddle": "-" if paddle is None else _fmt_ratio(m.ratio("paddle")),
                "PaddleX e2e ms": "-" if paddlex is None else (_fmt_ms(paddlex.stats.get("e2e")) if paddlex.status == "ok" else paddlex.status),
                "fastseg/PaddleX": "-" if paddlex is None else _fmt_ratio(m.ratio("paddlex")),
                "published T4 ms": _fmt_pub(m.published.get("gpu_ms"), m.published.get("latency_note")),
                "published Xeon ms": _fmt_pub(m.published.get("cpu_ms"), m.published.get("latency_note")),
                "published mIoU": "-" if m.published.get("miou") is None else f"{m.published['miou']:.2f}",
            }
        )
    return rows


def _fmt_pub(value: Any, note: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}" + ("*" if note else "")


def conditions_text(report: BenchReport) -> str:
    """The line that says under which conditions the numbers were taken."""
    c, mach = report.config, report.machine
    h, w = c["size"]
    return (
        f"{mach.get('cpu')} ({mach.get('logical_cores')} logical cores), device {c['device']}, "
        f"{c['threads']} threads, batch {c['batch']}, image {w}x{h} (WxH), fp32, "
        f"{c['runs']} runs after {c['warmup']} warm-up; medians in ms. fastseg/Paddle compares inference, "
        f"fastseg/PaddleX end to end (file in, label map out); < 1 means fastseg is faster. "
        f"GFLOPs: Conv/ConvTranspose/MatMul/Gemm, 1 MAC = 2 FLOPs; % peak of {c['peak_gflops']:.0f} GFLOP/s."
    )


def published_text(report: BenchReport) -> str:
    pc = report.published_conditions
    return (
        "published = PaddleX's own figures on other hardware, never a ratio to ours: "
        f"T4: {pc.get('gpu_ms', '?')}; Xeon: {pc.get('cpu_ms', '?')}. * measured by PaddleX on sliced inputs."
    )


# Short terminal headers for table_rows' keys (the Markdown keeps the long ones).
_SHORT = {
    "Weights": "weights", "GFLOPs": "GFLOPs", "pre ms": "pre", "infer ms": "infer", "post ms": "post",
    "e2e ms": "e2e", "e2e p90/min": "e2e p90/min", "img/s": "img/s", "GFLOP/s (% peak)": "GFLOP/s (%pk)",
    "RSS MB": "RSS MB", "Paddle infer ms": "Paddle infer", "fastseg/Paddle": "/Paddle",
    "PaddleX e2e ms": "PaddleX e2e", "fastseg/PaddleX": "/PaddleX", "published T4 ms": "pub. T4",
    "published Xeon ms": "pub. Xeon", "published mIoU": "pub. mIoU",
}


def render_table(report: BenchReport, *, title: str = "fastseg bench (ms, medians)") -> Any:
    """A ``rich.table.Table`` of ``table_rows`` (rich is imported here, not at module import)."""
    from rich.table import Table

    rows = table_rows(report)
    table = Table(title=title, caption=conditions_text(report), caption_justify="left")
    for col in (rows[0] if rows else {"Model": ""}):
        table.add_column(
            _SHORT.get(col, col), justify="left" if col in ("Model", "Weights") else "right", no_wrap=col == "Model"
        )
    for row in rows:
        table.add_row(*[v.replace("reference weights", "reference") for v in row.values()])
    return table


def render_markdown(report: BenchReport) -> str:
    """The table as GitHub Markdown, with the machine, versions and conditions."""
    rows = table_rows(report)
    lines = ["# fastseg bench", "", conditions_text(report), "", published_text(report), ""]
    if rows:
        cols = list(rows[0])
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" if c in ("Model", "Weights") else "---:" for c in cols) + "|")
        lines.extend("| " + " | ".join(r[c] for c in cols) + " |" for r in rows)
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items())]
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    worker_versions = sorted(
        {f"{b.backend}: " + ", ".join(f"{k} {v}" for k, v in b.versions.items()) for m in report.models for b in m.backends.values() if b.versions}
    )
    if worker_versions:
        lines.append("Workers: " + "; ".join(worker_versions))
    notes = [f"- {m.name}: {m.note}" for m in report.models if m.note]
    if notes:
        lines += ["", "Notes:", *notes]
    failures = [f"{m.name}/{b.backend}: {b.status} ({b.detail})" for m in report.models for b in m.backends.values() if b.status not in ("ok",)]
    if failures:
        lines += ["", "Not measured:", *[f"- {f}" for f in failures]]
    return "\n".join(lines) + "\n"


def write_chart(report: BenchReport, path: Path) -> Path:
    """PNG: fastseg end-to-end latency vs published mIoU (left), stacked pre/infer/post (right).

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``bench`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("The bench chart needs matplotlib: pip install 'fastseg-ort[bench]'.") from exc
    models = [m for m in report.models if m.stage("fastseg", "e2e") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(4.5, 0.35 * len(models) + 2)))
    for m in models:
        miou = m.published.get("miou")
        if miou is None:
            continue
        e2e = m.stage("fastseg", "e2e")
        e2e_ms = e2e.median if e2e is not None else 0.0
        ax1.scatter(e2e_ms, float(miou), marker="o", color="#dd8452", label="fastseg")
        ax1.annotate(m.name, (e2e_ms, float(miou)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        px = m.backends.get("paddlex")
        px_e2e = px.stats.get("e2e") if px is not None and px.status == "ok" else None
        if px_e2e is not None:
            ax1.scatter(px_e2e.median, float(miou), marker="x", color="#4c72b0", label="PaddleX predictor")
            ax1.plot([e2e_ms, px_e2e.median], [float(miou)] * 2, color="#999999", linewidth=0.6)
    handles, labels = ax1.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax1.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax1.set_xscale("log")
    ax1.set_xlabel("end-to-end latency, ms (log scale; this machine, file in, label map out)")
    ax1.set_ylabel("published mIoU % (PaddleX)")
    ax1.set_title("Latency vs published accuracy")
    ax1.grid(True, which="both", alpha=0.3)
    names = [m.name for m in models]
    left = np.zeros(len(models))
    for stage, colour in (("pre", "#4c72b0"), ("infer", "#dd8452"), ("post", "#55a868")):
        vals = np.array([(m.stage("fastseg", stage) or Stats(0, 0, 0, 0, 0)).median for m in models])
        ax2.barh(names, vals, left=left, color=colour, label=stage)
        left += vals
    ax2.invert_yaxis()
    ax2.set_xlabel("median ms per stage")
    ax2.set_title("fastseg: pre / infer / post")
    ax2.legend(loc="lower right")
    h, w = report.config["size"]
    weights = {m.weights for m in models}
    fig.suptitle(f"fastseg bench, {w}x{h}, {report.config['threads']} threads, {report.machine.get('cpu')}"
                 + (f" ({', '.join(sorted(weights))})" if weights else ""), fontsize=10)
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, png.getvalue())  # atomic, and 0644 like every other output
    return path


def write_outputs(report: BenchReport, out_dir: Path, *, chart: bool = True) -> dict[str, Path]:
    """Write bench.json (raw samples included), bench.md and bench.png into ``out_dir``."""
    from fastseg.files import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md"}
    write_text_atomic(paths["json"], json.dumps(report.to_json(), indent=1) + "\n")
    write_text_atomic(paths["markdown"], render_markdown(report))
    if chart:
        paths["png"] = write_chart(report, out_dir / "bench.png")
    return paths


# ------------------------------------------------------------------ workers (run in child processes)


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

    pre: read the file + ``decode_image`` + ``preprocess_into`` (a reused buffer); infer:
    ``Session.run`` (the runtime's Runner: plain or IO binding); post: ``labels_from_output``
    + ``restore_size`` to the source size.
    """
    import onnxruntime as ort

    from fastseg.model_dir import ONNX_FILE
    from fastseg.processing import decode_image, labels_from_output, preprocess_into, resized_hw, restore_size
    from fastseg.runtime import RuntimeOptions
    from fastseg.segmenter import Segmenter

    options = dict(spec.get("ort_options") or {})
    threads = int(spec["threads"])
    experiment = {k: options.pop(k) for k in list(options) if k in _EXPERIMENT_KEYS}
    rt_options = RuntimeOptions(**{"intra_op_threads": threads, **options})
    seg = Segmenter(Path(spec["onnx_dir"]), device=str(spec["device"]), options=rt_options)
    meta = seg.meta
    run: Callable[[Any], Any] = seg.session.run
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
    resize = meta.preprocess.resize
    buffers: dict[tuple[int, int], Any] = {}

    def pre() -> Any:
        images = [decode_image(path.read_bytes(), source=str(path)) for _ in range(batch)]
        src_hw = (int(images[0].shape[0]), int(images[0].shape[1]))
        net_hw = resized_hw(src_hw, resize)
        buf = buffers.get(net_hw)
        if buf is None:
            buf = buffers[net_hw] = np.empty((batch, 3, *net_hw), dtype=np.float32)
        return preprocess_into(images, buf, meta.preprocess, resize=resize), src_hw

    def post(x: Any, y: Any) -> Any:
        labels, _ = labels_from_output(y, meta.output_kind)
        return [restore_size(lab, x[1]) for lab in labels]

    used = {"onnxruntime": ort.__version__, "mode": "raw ORT session (experiment)" if experiment else f"Segmenter, {seg.session.runner.mode}"}
    return pre, (lambda x: run(x[0])), post, used


def _worker_fastseg(spec: Mapping[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    pre, infer, post, used = _fastseg_stages(spec)
    load_ms = (time.perf_counter() - t0) * 1e3
    samples = _time_loop(spec, pre, infer, post)
    return {"status": "ok", "samples_ms": samples, "versions": used, "load_ms": load_ms}


def _worker_paddle(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        import paddle.inference as pi
    except ImportError as exc:
        return {"status": NOT_INSTALLED, "detail": f"paddle: {exc}"}
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


def _worker_paddlex(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from paddlex import create_model
        from paddlex.inference import PaddlePredictorOption
    except ImportError as exc:
        return {"status": NOT_INSTALLED, "detail": f"paddlex: {exc}"}

    threads = int(spec["threads"])
    option = PaddlePredictorOption(run_mode="mkldnn", device_type="cpu", cpu_threads=threads)
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
    return {
        "status": "ok",
        "samples_ms": {"e2e": samples["infer"]},
        "versions": {"paddlex": _version("paddlex"), "paddle": _version("paddle")},
        "detail": "PaddleX create_model(...).predict(file), run_mode=mkldnn; end to end only",
    }


_WORKERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "fastseg": _worker_fastseg,
    "paddle": _worker_paddle,
    "paddlex": _worker_paddlex,
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


if __name__ == "__main__":  # pragma: no cover - exercised through run_worker
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(Path(sys.argv[2])))
    print("usage: python -m fastseg.bench --worker SPEC.json (internal; use 'fastseg bench')", file=sys.stderr)
    sys.exit(2)
