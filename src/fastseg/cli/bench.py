"""``fastseg bench``: fastseg per stage beside Paddle Inference and PaddleX, on the same files."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.options import ConstantChoice, allow_fallback_option, device_option, parse_hw_size, slide_options
from fastseg.reference import WEIGHTS


def _reference_builder(reference_dir: str | None) -> object | None:
    """A ``(name, cache_dir) -> tar`` builder: prebuilt tars in --reference-dir, else converters/."""
    if reference_dir is not None:
        root = Path(reference_dir)

        def from_dir(name: str, cache_dir: Path) -> Path:
            tar = root / f"{name}_infer.tar"
            if not tar.is_file():
                from fastseg.errors import ModelDirError

                raise ModelDirError(
                    f"{tar} not found: build it with 'python converters/reference_models.py --models {name} --out {root}'."
                )
            return tar

        return from_dir
    from fastseg.convert.reference import load_builder
    from fastseg.errors import MissingDependencyError

    try:
        return load_builder()
    except MissingDependencyError:  # no converters/ or PaddleSeg: official tarballs only
        return None


@click.command("bench")
@click.option("--models", "models_arg", default="PP-LiteSeg-T", show_default=True, help="Comma-separated zoo names, or 'all'.")
@device_option()
@allow_fallback_option()
@click.option("--size", "size_arg", default="1024x2048", show_default=True, help="Image HxW fed to every backend.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--against", default="", help="Comma-separated: paddle (Paddle Inference, MKLDNN), paddlex (PaddleX predictor, "
              "run_mode mkldnn), paddlex-bf16 (its run_mode mkldnn_bf16).")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Image to use (resized to --size); default: a synthetic one.")
@click.option("--peak-gflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The peak '% peak' divides by, GFLOP/s [default: the theoretical peak of the rows' precision on "
                   "this CPU: cores x clock x MAC/cycle x 2, AMX tiles for bf16/int8; see fastseg.bench.peak].")
@click.option("--paddlex-python", envvar="FASTSEG_PADDLEX_PYTHON", help="Interpreter of a venv with paddlex (env FASTSEG_PADDLEX_PYTHON).")
@click.option("--weights", type=click.Choice(WEIGHTS), default=None,
              help="official: the published weights (downloaded when not cached); reference: UNTRAINED random weights "
                   "of the same architecture (same cost) [default: official when its tarball is cached, else reference].")
@click.option("--reference-dir", type=click.Path(file_okay=False), help="Prebuilt reference <NAME>_infer.tar files (converters/reference_models.py --out).")
@click.option("--engine", type=ConstantChoice("fastseg.bench.engines", "BENCH_ENGINES"), default="ort", show_default=True,
              help="Engine for the fastseg rows (auto: the tuned winner, tuning first; int8, openvino-bf16: the variant, UNGATED on reference weights); each row records what ran.")
@slide_options(slide_help="fastseg rows: sliding windows HxW (PaddleSeg slide_inference).",
               protocol_help="fastseg rows: paddlex (inference.yml) or each model's published PaddleSeg test protocol.")
def bench_cmd(
    models_arg: str,
    device: str,
    allow_fallback: bool,
    size_arg: str,
    batch: int,
    runs: int,
    warmup: int,
    threads: int,
    against: str,
    out_dir: str,
    image: str | None,
    peak_gflops: float | None,
    paddlex_python: str | None,
    weights: str | None,
    reference_dir: str | None,
    engine: str,
    slide: str | None,
    slide_stride: str | None,
    protocol: str,
) -> None:
    """Time fastseg per stage, side by side with Paddle Inference and PaddleX on the same files."""
    from rich.console import Console
    from rich.progress import Progress

    from fastseg import bench
    from fastseg.errors import MissingDependencyError
    from fastseg.zoo import cache_home, downloads_dir, load_zoo

    size = parse_hw_size(size_arg)
    from fastseg.slide import parse_hw

    for text, flag in ((slide, "--slide"), (slide_stride, "--slide-stride")):
        if text:
            parse_hw(text, name=flag)  # a malformed size fails here, not in every worker
    others = tuple(a.strip() for a in against.split(",") if a.strip())
    for a in others:
        if a not in bench.AGAINST:
            raise click.BadParameter(f"{a!r}: choose from {', '.join(bench.AGAINST)}", param_hint="--against")
    zoo = load_zoo()
    names = zoo.names() if models_arg.strip() == "all" else [n.strip() for n in models_arg.split(",") if n.strip()]
    for n in names:
        zoo.get(n)  # UnknownModelError with suggestions, before any work
    dev, warning = bench.check_device(device, allow_fallback=allow_fallback)
    console = Console(width=max(240, Console().width))  # the full table: 19 columns, weights spelled out
    if warning:
        console.print(f"[yellow]Warning:[/] {warning}")
    home = cache_home()
    builder = _reference_builder(reference_dir)

    def convert(paddle_dir: Path, onnx_dir: Path, name: str) -> str | None:
        """Convert with verification; a verification miss still benchmarks (same graph cost), noted."""
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
            console.print(f"[yellow]Warning:[/] {name}: {exc} Benchmarking the unverified conversion (same cost).")
            convert_model(paddle_dir, onnx_dir, model_name=name, verify=False)
            return f"unverified: {exc}"

    sources = []
    for n in names:
        cached = downloads_dir(home) / f"{n}_infer.tar"
        tar = None if weights == "reference" or not cached.is_file() else cached
        if weights == "official" and tar is None:
            from fastseg.download import fetch_model_tarball

            tar = fetch_model_tarball(zoo.get(n), home=home)
        with console.status(f"Preparing {n} (reference builds and conversion run once, then are cached)"):
            try:
                sources.append(
                    bench.resolve_model(
                        n, home=home, official_tar=tar,
                        build_reference=builder, convert=convert,  # type: ignore[arg-type]
                    )
                )
            except MissingDependencyError:
                raise  # the same for every model: say it once
            except Exception as exc:  # noqa: BLE001 - one model failing must not lose a long run
                console.print(f"[yellow]Warning:[/] {n}: could not prepare ({type(exc).__name__}: {exc}); row marked failed.")
                sources.append(bench.ModelSource(n, onnx_dir=Path(), paddle_dir=None, weights="-", error=f"{type(exc).__name__}: {exc}"))
    out = Path(out_dir)
    img = bench.make_image(out / f"bench_{size[1]}x{size[0]}.png", size=size, source=Path(image) if image else None)
    from fastseg.bench.engines import prepare_sources, row_precision, worker_engine

    with console.status(f"Preparing engine {engine}") as status:
        sources = prepare_sources(sources, engine, img, threads=threads, size=size, progress=status.update)
    if peak_gflops is None:
        from fastseg.bench.machine import SGEMM_N, measure_sgemm_gflops
        from fastseg.bench.peak import theoretical_peak
        from fastseg.engines.device import physical_cores

        with console.status("Measuring numpy's sgemm (a note beside the theoretical peak)"):
            sgemm = measure_sgemm_gflops(threads)
        precision = row_precision(engine) or "fp32"
        peak = theoretical_peak(precision, min(threads, physical_cores()), sgemm_gflops=sgemm)
        peak_gflops = peak.gflops
        peak_source = (f"theoretical {precision} peak: {peak.formula}; numpy sgemm {SGEMM_N}^3 on {threads} threads "
                       f"measured {sgemm:.0f} GFLOP/s (a note, not the peak)")
    else:
        peak_source = "given with --peak-gflops"
    config = bench.BenchConfig(
        size=size, batch=batch, runs=runs, warmup=warmup, threads=threads, device=dev,
        against=others, peak_gflops=peak_gflops, peak_source=peak_source, paddlex_python=paddlex_python,
        engine=worker_engine(engine) if engine != "auto" else "auto",
        precision=row_precision(engine),
        slide=slide, slide_stride=slide_stride, protocol=protocol,
    )

    def published(name: str) -> dict[str, object]:
        p = zoo.get(name).published
        return {"miou": p.miou, "gpu_ms": p.gpu_ms, "cpu_ms": p.cpu_ms, "latency_note": p.latency_note}

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(sources) * (1 + len(others)))
        report = bench.run_bench(
            sources, img, config,
            progress=lambda label: progress.update(task, advance=1, description=label),
            published=published, published_conditions=zoo.published_conditions,
            on_model=lambda partial: bench.write_outputs(partial, out, chart=False),
        )
    console.print(bench.render_table(report))
    console.print(bench.published_text(report))
    paths = bench.write_outputs(report, out)
    console.print("Wrote " + ", ".join(str(p) for p in paths.values()))

