"""One ``fastseg bench`` run from its parsed options: the models' files (official tarballs or
reference builds, converted once), the engine's variants, the peak, the timed workers, the files.

``fastseg bench`` (fastseg.cli.bench) parses the command line into a :class:`BenchRequest`,
calls :func:`run_job` with a :class:`BenchUI` that shows warnings, status lines and a progress
bar, and prints the report it gets back. Top-level imports stay standard library (see __init__).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fastseg.bench.engines import prepare_sources, row_precision, worker_engine
from fastseg.bench.machine import check_device
from fastseg.bench.models import ModelSource, resolve_model, write_bench_image
from fastseg.bench.render import write_outputs
from fastseg.bench.report import AGAINST, BenchConfig, BenchReport
from fastseg.bench.runner import run_bench
from fastseg.model_dir import BF16_PRECISIONS

if TYPE_CHECKING:
    from fastseg.convert.reference import Builder
    from fastseg.zoo import Zoo


class BenchUI(Protocol):
    """How a run talks to its user while it works (the CLI draws these with rich)."""

    def warn(self, message: str) -> None:
        """One warning line (the run goes on)."""

    def status(self, message: str) -> AbstractContextManager[Callable[[str], None]]:
        """A status line while a step runs; the yielded function replaces its text."""

    def progress(self, total: int) -> AbstractContextManager[Callable[[str], None]]:
        """A progress bar of ``total`` steps; the yielded function advances it with a label."""


@dataclass(frozen=True)
class BenchRequest:
    """What ``fastseg bench`` was asked for, parsed: sizes as (height, width), peers as names."""

    size: tuple[int, int]
    out_dir: Path
    models: str = "PP-LiteSeg-T"
    device: str = "cpu"
    allow_fallback: bool = False
    batch: int = 1
    runs: int = 10
    warmup: int = 2
    threads: int = 2
    against: tuple[str, ...] = ()
    image: Path | None = None
    peak_gflops: float | None = None
    paddlex_python: str | None = None
    weights: str | None = None
    reference_dir: Path | None = None
    engine: str = "ort"
    slide: str | None = None
    slide_stride: str | None = None
    protocol: str = "paddlex"


@dataclass(frozen=True)
class BenchOutcome:
    """A finished run: the report and the files written (``write_outputs``'s kind -> path)."""

    report: BenchReport
    paths: dict[str, Path]


def model_names(zoo: Zoo, models: str) -> list[str]:
    """The zoo names ``--models`` means (``all`` or a comma-separated list), each checked.

    Raises:
        UnknownModelError: a name not in the zoo (with suggestions).
    """
    names = zoo.names() if models.strip() == "all" else [n.strip() for n in models.split(",") if n.strip()]
    for name in names:
        zoo.get(name)
    return names


def reference_builder(reference_dir: Path | None) -> Builder | None:
    """A ``(name, cache_dir) -> tar`` builder: prebuilt tars in ``reference_dir``, else converters/
    (None when neither is available: official tarballs only)."""
    from fastseg.errors import MissingDependencyError, ModelDirError

    if reference_dir is not None:
        root = reference_dir

        def from_dir(name: str, cache_dir: Path) -> Path:
            tar = root / f"{name}_infer.tar"
            if not tar.is_file():
                raise ModelDirError(
                    f"{tar} not found: build it with 'python -m converters.reference_models --models {name} --out {root}' (from the repository root)."
                )
            return tar

        return from_dir
    from fastseg.convert.reference import load_builder

    try:
        return load_builder()
    except MissingDependencyError:
        return None


def verified_converter(ui: BenchUI) -> Callable[[Path, Path, str], str | None]:
    """``convert(paddle_dir, onnx_dir, name)`` with verification; a verification miss still
    benchmarks (same graph cost) and returns a note saying so."""

    def convert(paddle_dir: Path, onnx_dir: Path, name: str) -> str | None:
        from fastseg.errors import ConversionError, MissingDependencyError

        try:
            from fastseg.convert import convert_model
        except ImportError as exc:
            raise MissingDependencyError("Converting needs the convert extra: pip install 'fastseg-ort[convert]'.") from exc
        try:
            convert_model(paddle_dir, onnx_dir, model_name=name)
            return None
        except ConversionError as exc:
            if "Verification failed" not in str(exc):
                raise
            ui.warn(f"{name}: {exc} Benchmarking the unverified conversion (same cost).")
            convert_model(paddle_dir, onnx_dir, model_name=name, verify=False)
            return f"unverified: {exc}"

    return convert


def prepare_models(names: list[str], request: BenchRequest, zoo: Zoo, ui: BenchUI) -> list[ModelSource]:
    """Each model's files: the cached official tarball (downloaded with ``weights="official"``),
    else a reference build; a model that cannot be prepared becomes a failed row."""
    from fastseg.errors import MissingDependencyError
    from fastseg.zoo import cache_home, downloads_dir

    home = cache_home()
    builder = reference_builder(request.reference_dir)
    convert = verified_converter(ui)
    sources = []
    for name in names:
        cached = downloads_dir(home) / f"{name}_infer.tar"
        tar = None if request.weights == "reference" or not cached.is_file() else cached
        if request.weights == "official" and tar is None:
            from fastseg.download import fetch_model_tarball

            tar = fetch_model_tarball(zoo.get(name), home=home)
        with ui.status(f"Preparing {name} (reference builds and conversion run once, then are cached)"):
            try:
                sources.append(resolve_model(name, home=home, official_tar=tar, build_reference=builder, convert=convert))
            except MissingDependencyError:
                raise  # the same for every model: say it once
            except Exception as exc:  # noqa: BLE001 - one model failing must not lose a long run
                ui.warn(f"{name}: could not prepare ({type(exc).__name__}: {exc}); row marked failed.")
                error = f"{type(exc).__name__}: {exc}"
                sources.append(ModelSource(name, onnx_dir=Path(), paddle_dir=None, weights="-", error=error))
    return sources


def peak(request: BenchRequest, ui: BenchUI) -> tuple[float, str]:
    """The GFLOP/s '% peak' divides by and where it comes from: ``--peak-gflops``, else the
    theoretical peak of the rows' precision on this CPU (numpy's sgemm measured as a note)."""
    if request.peak_gflops is not None:
        return request.peak_gflops, "given with --peak-gflops"
    from fastseg.bench.machine import SGEMM_N, measure_sgemm_gflops
    from fastseg.bench.peak import theoretical_peak
    from fastseg.engines.device import physical_cores

    with ui.status("Measuring numpy's sgemm (a note beside the theoretical peak)"):
        sgemm = measure_sgemm_gflops(request.threads)
    precision = row_precision(request.engine) or "fp32"
    found = theoretical_peak(precision, min(request.threads, physical_cores()), sgemm_gflops=sgemm)
    return found.gflops, (f"theoretical {precision} peak: {found.formula}; numpy sgemm {SGEMM_N}^3 on {request.threads} "
                          f"threads measured {sgemm:.0f} GFLOP/s (a note, not the peak)")


def run_job(request: BenchRequest, ui: BenchUI) -> BenchOutcome:
    """Prepare every model, time fastseg and the peers on the same files, write the outputs.

    Raises:
        InputError: a peer not in ``AGAINST``.
        UnknownModelError, DeviceError: a bad model name or device, or bf16 / int8-bf16 on a CPU without bf16
        instructions, before any work.
        MissingDependencyError: no way to get a model's files (said once, not per model).
    """
    from fastseg.errors import InputError
    from fastseg.zoo import load_zoo

    unknown = [a for a in request.against if a not in AGAINST]
    if unknown:
        raise InputError(f"--against {unknown[0]!r}: choose from {', '.join(AGAINST)}.")
    zoo = load_zoo()
    names = model_names(zoo, request.models)
    device, warning = check_device(request.device, allow_fallback=request.allow_fallback)
    if warning:
        ui.warn(warning)
    rows_precision = row_precision(request.engine)
    if rows_precision in BF16_PRECISIONS:
        from fastseg.engines.cpu import require_bf16

        require_bf16(precision=str(rows_precision))  # said once, before any model is built, not as a failed row per model
    sources = prepare_models(names, request, zoo, ui)
    size = request.size
    image, image_note = write_bench_image(request.out_dir / f"bench_{size[1]}x{size[0]}.png", size=size, source=request.image)
    with ui.status(f"Preparing engine {request.engine}") as update:
        sources = prepare_sources(sources, request.engine, image, threads=request.threads, size=size, progress=update)
    peak_gflops, peak_source = peak(request, ui)
    config = BenchConfig(
        size=size, batch=request.batch, runs=request.runs, warmup=request.warmup, threads=request.threads, device=device,
        against=request.against, peak_gflops=peak_gflops, peak_source=peak_source, paddlex_python=request.paddlex_python,
        engine=worker_engine(request.engine) if request.engine != "auto" else "auto",
        precision=rows_precision,
        slide=request.slide, slide_stride=request.slide_stride, protocol=request.protocol,
        image=image_note,
    )

    def published(name: str) -> dict[str, object]:
        p = zoo.get(name).published
        return {"miou": p.miou, "gpu_ms": p.gpu_ms, "cpu_ms": p.cpu_ms, "latency_note": p.latency_note}

    def at_peak(report: BenchReport) -> BenchReport:
        # A peak given with --peak-gflops stands; so does auto's, whose rows mix precisions.
        given_or_mixed = request.peak_gflops is not None or request.engine == "auto"
        return report if given_or_mixed else report.with_peak_at_least_rows()

    with ui.progress(len(sources) * (1 + len(request.against))) as advance:
        report = run_bench(
            sources, image, config, progress=advance, published=published,
            published_conditions=zoo.published_conditions,
            on_model=lambda partial: write_outputs(at_peak(partial), request.out_dir, chart=False),
        )
    report = at_peak(report)
    return BenchOutcome(report=report, paths=write_outputs(report, request.out_dir))
