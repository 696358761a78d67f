"""The ``fastseg`` command line (click). Argument parsing only: each command calls into the
module that owns the concern. Nothing imports this module. This is the one place that reads
environment variables (through ``zoo.cache_home``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from typing import TYPE_CHECKING

from fastseg.errors import FastSegError

if TYPE_CHECKING:
    from fastseg.convert.pipeline import ConvertReport


class _Group(click.Group):
    """Turn FastSegError (and file-system errors such as a full disk or a path that is a file)
    into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FastSegError as exc:
            click.echo(f"Error: {_cli_wording(exc)}", err=True)
            ctx.exit(2)
        except OSError as exc:
            click.echo(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            ctx.exit(2)


def _cli_wording(exc: FastSegError) -> str:
    """The message in the command line's words: Python's ``allow_fallback=True`` is ``--allow_fallback`` here."""
    return str(exc).replace("allow_fallback=True", "--allow_fallback")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastseg-ort", prog_name="fastseg")
def main() -> None:
    """fastseg: PaddleX semantic segmentation on ONNX Runtime."""


# ---------------------------------------------------------------- models (zoo)
@main.command("models")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def models_cmd(fmt: str) -> None:
    """List the 18 PaddleX models with PaddleX's published figures."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    from fastseg.reference import converted_status
    from fastseg.zoo import load_zoo

    zoo = load_zoo()
    if fmt == "json":
        rows = [
            {
                "name": s.name,
                "family": s.family,
                "dataset": s.dataset.name,
                "classes": s.dataset.num_classes,
                "miou": s.published.miou,
                "gpu_ms": s.published.gpu_ms,
                "cpu_ms": s.published.cpu_ms,
                "size_mb": s.published.size_mb,
                "converted": converted_status(s.name).startswith("yes"),  # official weights converted
                "converted_weights": converted_status(s.name),
                "inference_urls": list(s.inference_urls),
                "protocol": None if s.protocol is None else dataclasses.asdict(s.protocol),
            }
            for s in zoo.models.values()
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="PaddleX semantic segmentation models (published figures)")
    for col in ("Model", "Family", "Dataset", "Classes", "mIoU %", "T4 GPU ms", "Xeon CPU ms", "Size MB", "Converted", "Published protocol"):
        table.add_column(
            col, justify="right" if col not in ("Model", "Family", "Dataset", "Published protocol") else "left",
            no_wrap=col in ("Model", "Published protocol"),
        )
    for s in zoo.models.values():
        p = s.published
        table.add_row(
            s.name,
            s.family,
            s.dataset.name,
            str(s.dataset.num_classes),
            f"{p.miou:.2f}",
            f"{p.gpu_ms:.2f}" + ("*" if p.latency_note else ""),
            f"{p.cpu_ms:.2f}" + ("*" if p.latency_note else ""),
            f"{p.size_mb:.1f}",
            converted_status(s.name),
            "-" if s.protocol is None else s.protocol.describe(),
        )
    console = Console(width=max(150, Console().width))  # 10 columns plus the protocol
    console.print(table)
    console.print(
        "GPU: " + zoo.published_conditions.get("gpu_ms", "") + "; CPU: " + zoo.published_conditions.get("cpu_ms", "")
    )
    console.print("* latency measured by PaddleX on sliced (cropped) inputs.")
    if any("reference" in converted_status(s.name) for s in zoo.models.values()):
        console.print("Converted 'reference': UNTRAINED reference weights (random; --weights reference), not the official model.")
    console.print("Published protocol: how PaddleSeg's config evaluated the mIoU ('predict --protocol published' applies it).")


# ---------------------------------------------------------------- predict / get-config (runtime)
def _parse_target_size_opt(value: str | None) -> int | tuple[int, int] | None:
    if value is None:
        return None
    parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{value!r}: use N or W,H (e.g. 512 or 1024,512)") from None
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2:
        return (nums[0], nums[1])
    raise click.BadParameter(f"{value!r}: use N or W,H (e.g. 512 or 1024,512)")


_WEIGHTS_HELP = (
    "official: the zoo model's published weights (downloaded on first use). reference: the same "
    "architecture with UNTRAINED random weights, built on demand for offline use and labelled as such."
)


def _weights_model(model: str, weights: str) -> str | Path:
    """``model``, or for ``--weights reference`` the labelled reference build of that zoo name."""
    if weights != "reference":
        return model
    if Path(model).expanduser().exists():
        raise click.UsageError("--weights reference builds a zoo model: give --model NAME (see 'fastseg models').")
    from fastseg.reference import build_reference_model, reference_model_dir

    click.echo(
        f"Using untrained reference weights for {model} (random: not the official model); "
        f"built once into {reference_model_dir(model)} ...",
        err=True,
    )
    model_dir, _ = build_reference_model(model)
    return model_dir


LARGE_JSON_PIXELS = 16_000_000  # a label map's JSON is ~3 bytes per pixel


@main.command("predict")
@click.option("--input", "input_", default=None,
              help="Image file, directory (recursive) or http(s) URL [default: the demo street photo shipped "
                   "in the package, fastseg/data/demo_street.jpg].")
@click.option("--model", default=None, help="Zoo model name or converted model directory [default: PP-LiteSeg-T].")
@click.option("--weights", type=click.Choice(["official", "reference"]), default="official", show_default=True,
              help=_WEIGHTS_HELP)
@click.option("--pipeline", default=None, help="PaddleX pipeline YAML (its model/batch_size/target_size).")
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu, gpu:N, npu:N, trt:N, openvino[:CPU|GPU].")
@click.option("--save_path", "--save-path", "save_path", default="./output", show_default=True,
              help="Directory for <stem>_res.png and <stem>_res.json.")
@click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Images per network call [default: 1, or the pipeline's].")
@click.option("--target_size", "--target-size", "target_size", default=None, help="N or W,H; overrides the model's Resize.")
@click.option("--overlay", is_flag=True, help="Save the colour map blended over the input instead of the map alone.")
@click.option("--allow_fallback", "--allow-fallback", "allow_fallback", is_flag=True,
              help="Run on the CPU (with a warning) when the requested accelerator is missing.")
@click.option("--no-json", "no_json", is_flag=True, help="Skip writing <stem>_res.json (label maps as JSON are large).")
@click.option("--engine", type=click.Choice(["auto", "ort", "openvino"]), default="auto", show_default=True,
              help="auto: the 'fastseg tune' winner for this model here (else ONNX Runtime).")
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Data (the [ray] extra); implied by a device list such as gpu:0,1.")
@click.option("--ray-address", default=None, help="Ray cluster address (with --ray) [default: start a local Ray].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray actors (with --ray) [default: one per listed device, or one per node on CPU].")
@click.option("--json", "force_json", is_flag=True,
              help="Write <stem>_res.json even for images over 16 MP (skipped by default: ~200 MB for 8000x8000).")
@click.option("--slide", default=None, help="Sliding windows HxW at network resolution (PaddleSeg slide_inference).")
@click.option("--slide-stride", "--slide_stride", "slide_stride", default=None, help="Window step HxW [default: --slide].")
@click.option("--protocol", type=click.Choice(["paddlex", "published"]), default="paddlex", show_default=True,
              help="paddlex: the model's inference.yml; published: PaddleSeg's test protocol (fastseg models).")
def predict_cmd(
    input_: str | None,
    model: str | None,
    weights: str,
    pipeline: str | None,
    device: str,
    save_path: str,
    batch_size: int | None,
    target_size: str | None,
    overlay: bool,
    allow_fallback: bool,
    no_json: bool,
    engine: str,
    use_ray: bool,
    ray_address: str | None,
    workers: int | None,
    force_json: bool,
    slide: str | None,
    slide_stride: str | None,
    protocol: str,
) -> None:
    """Segment images and save PaddleX-style pseudo-colour maps and JSON.

    An unreadable image is skipped: the others are written, the failures are listed at the
    end and the exit code is 1.
    """
    from pathlib import Path

    from tqdm import tqdm

    from fastseg.batch_predict import failures_text, predict_to_dir, summary_line
    from fastseg.demo_data import demo_image
    from fastseg.segmenter import DEFAULT_MODEL, Segmenter, create_pipeline, expand_inputs
    from fastseg.slide import window_options

    ts = _parse_target_size_opt(target_size)
    kwargs = window_options(
        model or DEFAULT_MODEL, slide=slide, slide_stride=slide_stride, protocol=protocol,
        keep_target_size=ts is not None,
    )
    if use_ray or ray_address or "," in device:
        from fastseg.ray.commands import run_predict

        run_predict(
            input_=input_ if input_ is not None else str(demo_image()),
            model=None if model is None else str(_weights_model(model, weights)), pipeline=pipeline, device=device, save_path=save_path,
            batch_size=batch_size, target_size=ts, overlay=overlay, no_json=no_json, workers=workers,
            address=ray_address, segmenter_kwargs={"allow_fallback": allow_fallback, "engine": engine, **kwargs},
        )
        return
    if pipeline is not None:
        if model is not None:
            raise click.UsageError("Give --model or --pipeline, not both (the pipeline names its model).")
        if weights != "official":
            raise click.UsageError("--weights reference needs --model NAME, not --pipeline.")
        if kwargs or protocol != "paddlex":
            raise click.UsageError("--slide/--protocol work with --model, not --pipeline.")
        seg = create_pipeline(pipeline, device=device, allow_fallback=allow_fallback, engine=engine)
    else:
        model_arg = _weights_model(model or DEFAULT_MODEL, weights)
        seg = Segmenter(model_arg, device=device, allow_fallback=allow_fallback, engine=engine, **kwargs)
    out_dir = Path(save_path)
    with seg:
        items = expand_inputs(input_ if input_ is not None else str(demo_image()))
        with tqdm(total=len(items), unit="img", desc=seg.meta.model_name, disable=None) as bar:
            outcome = predict_to_dir(
                seg, items, out_dir, batch_size=batch_size, target_size=ts, overlay=overlay,
                write_json=not no_json, json_max_pixels=None if force_json else LARGE_JSON_PIXELS,
                on_item=lambda: bar.update(1),
            )
        click.echo(summary_line(outcome, seg, device=device, out_dir=out_dir))
    if outcome.skipped_json:
        click.echo(
            f"Skipped <stem>_res.json for {outcome.skipped_json} image(s) over {LARGE_JSON_PIXELS // 1_000_000} MP "
            "(the PNG has the labels' colours; pass --json to write the JSON anyway)."
        )
    if outcome.failures:
        click.echo(failures_text(outcome), err=True)
        raise SystemExit(1)


@main.command("get-config")
@click.argument("pipeline", default="semantic_segmentation")
@click.option("--save_path", "--save-path", "save_path", default="./", show_default=True,
              help="Directory (gets <pipeline>.yaml) or a .yaml file path.")
def get_config_cmd(pipeline: str, save_path: str) -> None:
    """Write the default PaddleX-style pipeline YAML (edit it, then predict --pipeline it)."""
    from pathlib import Path

    from fastseg.segmenter import write_pipeline_config

    target = write_pipeline_config(Path(save_path), pipeline=pipeline)
    click.echo(f"Wrote {target}")


# ---------------------------------------------------------------- serve (HTTP)
@main.command("serve")
@click.option("--model", required=True, help="Zoo model name (e.g. PP-LiteSeg-T) or a converted model directory.")
@click.option("--weights", type=click.Choice(["official", "reference"]), default="official", show_default=True,
              help=_WEIGHTS_HELP)
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu, gpu:N, npu:N, trt:N, openvino[:CPU|GPU].")
@click.option("--allow_fallback", "--allow-fallback", "allow_fallback", is_flag=True,
              help="Run on the CPU (with a warning) when the requested accelerator is missing.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (keep loopback unless behind a proxy).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Serving YAML (visualize, limits, batching, api_key, url_inputs); see docs.",
)
@click.option(
    "--api-key", envvar="FASTSEG_API_KEY", default=None, show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on inference (overrides the config's api_key).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime intra-op threads (default: physical cores).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--engine", type=click.Choice(["auto", "ort", "openvino"]), default="auto", show_default=True,
              help="auto: the 'fastseg tune' winner for this model here (else ONNX Runtime).")
@click.option("--ray", "use_ray", is_flag=True, help="Deploy on Ray Serve (the [ray] extra); implied by a device list such as gpu:0,1.")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="Ray Serve replicas [default: one per listed device, or one per node on CPU].")
@click.option("--max-ongoing-requests", type=click.IntRange(min=1), default=None,
              help="Requests one replica works on at once (with --ray) [default: 2 x max_batch].")
@click.option("--ray-address", default=None, help="Ray cluster address (with --ray) [default: start a local Ray].")
def serve_cmd(
    model: str,
    weights: str,
    device: str,
    allow_fallback: bool,
    host: str,
    port: int,
    config_path: str | None,
    api_key: str | None,
    threads: int | None,
    log_level: str,
    engine: str,
    use_ray: bool,
    replicas: int | None,
    max_ongoing_requests: int | None,
    ray_address: str | None,
) -> None:
    """Serve MODEL over HTTP with PaddleX's /semantic-segmentation contract and a demo page at /."""
    try:
        import uvicorn

        from fastseg.serving import ServingConfig, create_app, load_serving_config
    except ImportError as exc:
        from fastseg.errors import MissingDependencyError

        raise MissingDependencyError(
            f"'fastseg serve' needs the [serve] extra ({exc.name} is missing): pip install 'fastseg-ort[serve]'"
        ) from exc
    from pathlib import Path

    from fastseg.runtime import RuntimeOptions
    from fastseg.segmenter import Segmenter

    from fastseg.serving.port import ensure_port_free

    config = load_serving_config(config_path) if config_path else ServingConfig()
    if api_key:
        config = config.replace(api_key=api_key)
    model_arg = _weights_model(model, weights)
    if isinstance(model_arg, str) and Path(model_arg).is_dir():
        model_arg = Path(model_arg)
    if use_ray or ray_address or replicas or "," in device:
        from fastseg.ray.commands import run_serve

        run_serve(
            model=str(model_arg), device=device, host=host, port=port, config=config, replicas=replicas,
            max_ongoing_requests=max_ongoing_requests, address=ray_address, threads=threads, log_level=log_level,
            segmenter_kwargs={"allow_fallback": allow_fallback, "engine": engine},
        )
        return
    ensure_port_free(host, port)  # before loading a model and printing the banner
    segmenter = Segmenter(
        model_arg, device=device, batch_size=config.max_batch, options=RuntimeOptions(intra_op_threads=threads),
        allow_fallback=allow_fallback, engine=engine, slide=config.slide, slide_stride=config.slide_stride,
    )
    try:
        app = create_app(segmenter, config)
        click.echo(
            f"fastseg serve: {segmenter.meta.model_name} ({segmenter.precision_label}, {segmenter.engine_name}) on http://{host}:{port}/ "
            f"(POST /semantic-segmentation, docs at /docs; max_batch={config.max_batch}, "
            f"queue_size={config.queue_size}, auth={'on' if config.api_key else 'off'})",
            err=True,
        )
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        segmenter.close()


# ---------------------------------------------------------------- bench
def _parse_size(value: str) -> tuple[int, int]:
    h, sep, w = value.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 8 or int(w) < 8:
        raise click.BadParameter(f"{value!r}: use HxW, e.g. 1024x2048 (height x width, at least 8x8)")
    return int(h), int(w)


def _reference_builder(reference_dir: str | None) -> object | None:
    """A ``(name, cache_dir) -> tar`` builder: prebuilt tars in --reference-dir, else converters/."""
    from pathlib import Path

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
    import fastseg

    repo = Path(fastseg.__file__).resolve().parents[2]
    if not (repo / "converters" / "reference_models.py").is_file():
        return None
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    try:
        from converters.reference_models import ensure_reference
    except ImportError:
        return None
    return ensure_reference


@main.command("bench")
@click.option("--models", "models_arg", default="PP-LiteSeg-T", show_default=True, help="Comma-separated zoo names, or 'all'.")
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu, gpu:N, npu:N, trt:N, openvino[:CPU|GPU].")
@click.option("--allow_fallback", "--allow-fallback", "allow_fallback", is_flag=True,
              help="Run on the CPU (with a warning) when the requested accelerator is missing.")
@click.option("--size", "size_arg", default="1024x2048", show_default=True, help="Image HxW fed to every backend.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--against", default="", help="Comma-separated: paddle (Paddle Inference, MKLDNN), paddlex (PaddleX predictor).")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Image to use (resized to --size); default: a synthetic one.")
@click.option("--peak-gflops", type=float, default=157.0, show_default=True, help="This machine's fp32 peak, GFLOP/s.")
@click.option("--paddlex-python", envvar="FASTSEG_PADDLEX_PYTHON", help="Interpreter of a venv with paddlex (env FASTSEG_PADDLEX_PYTHON).")
@click.option("--reference-dir", type=click.Path(file_okay=False), help="Prebuilt reference <NAME>_infer.tar files (converters/reference_models.py --out).")
@click.option("--engine", type=click.Choice(["auto", "ort", "openvino", "int8", "openvino-int8"]), default="ort", show_default=True,
              help="Engine for the fastseg rows (auto: the tuned winner, tuning first; int8: quantized, UNGATED on reference weights); each row records what ran.")
@click.option("--slide", default=None, help="fastseg rows: sliding windows HxW (PaddleSeg slide_inference).")
@click.option("--slide-stride", "--slide_stride", "slide_stride", default=None, help="Window step HxW [default: --slide].")
@click.option("--protocol", type=click.Choice(["paddlex", "published"]), default="paddlex", show_default=True,
              help="fastseg rows: paddlex (inference.yml) or each model's published PaddleSeg test protocol.")
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
    peak_gflops: float,
    paddlex_python: str | None,
    reference_dir: str | None,
    engine: str,
    slide: str | None,
    slide_stride: str | None,
    protocol: str,
) -> None:
    """Time fastseg per stage, side by side with Paddle Inference and PaddleX on the same files."""
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

    from fastseg import bench
    from fastseg.errors import MissingDependencyError
    from fastseg.zoo import cache_home, downloads_dir, load_zoo

    size = _parse_size(size_arg)
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
        tar = downloads_dir(home) / f"{n}_infer.tar"
        with console.status(f"Preparing {n} (reference builds and conversion run once, then are cached)"):
            try:
                sources.append(
                    bench.resolve_model(
                        n, home=home, official_tar=tar if tar.is_file() else None,
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
    from fastseg.bench.engines import prepare_sources, worker_engine

    with console.status(f"Preparing engine {engine}") as status:
        sources = prepare_sources(sources, engine, img, threads=threads, size=size, progress=status.update)
    config = bench.BenchConfig(
        size=size, batch=batch, runs=runs, warmup=warmup, threads=threads, device=dev,
        against=others, peak_gflops=peak_gflops, paddlex_python=paddlex_python,
        engine=worker_engine(engine) if engine != "auto" else "auto",
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


# ---------------------------------------------------------------- quantize, tune (engines)
def _register_engine_commands() -> None:
    from fastseg.engines.cli import quantize_cmd, tune_cmd

    main.add_command(quantize_cmd)
    main.add_command(tune_cmd)


_register_engine_commands()


# ---------------------------------------------------------------- convert (Paddle -> ONNX)
def _parse_hw(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    return None if value is None else _parse_size(value)


@main.command("convert")
@click.argument("name", required=False)
@click.option("--from", "from_path", type=click.Path(exists=True, path_type=Path), help="Official *_infer.tar or an extracted model directory (no download).")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Any PaddleSeg/PaddleX inference directory (e.g. fine-tuned); name read from its inference.yml.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output model directory [default: <cache>/models/NAME].")
@click.option("--head", type=click.Choice(["labels", "logits", "probs"]), default="labels", show_default=True, help="labels: int32 [N,H,W] (argmax in the graph); logits/probs: float32 [N,C,H,W].")
@click.option("--opset", type=int, default=None, help="ONNX opset [default: 17, see fastseg.convert.pipeline.choose_opset].")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Verify on these images (own sizes) instead of synthetic ones.")
@click.option("--no-verify", is_flag=True, help="Skip the comparison with Paddle Inference.")
@click.option("--threshold", type=float, default=0.999, show_default=True, help="Minimum argmax agreement with Paddle Inference.")
@click.option("--force", is_flag=True, help="Convert again even if the output is up to date.")
@click.option("--fixed-shape", "fixed_hw", callback=_parse_hw, help="Freeze the input to HxW (default: dynamic H and W).")
@click.option("--weights", type=click.Choice(["official", "reference"]), default="official", show_default=True,
              help=_WEIGHTS_HELP + " Written to <cache>/reference-models/NAME unless -o.")
def convert_cmd(
    name: str | None,
    from_path: Path | None,
    model_dir: Path | None,
    output: Path | None,
    head: str,
    opset: int | None,
    images_dir: Path | None,
    no_verify: bool,
    threshold: float,
    force: bool,
    fixed_hw: tuple[int, int] | None,
    weights: str,
) -> None:
    """Convert a PaddleX/PaddleSeg model to a verified ONNX model directory.

    \b
    fastseg convert PP-LiteSeg-T                 download the official tarball, convert
    fastseg convert PP-LiteSeg-T --from X.tar    convert a tarball/directory you have
    fastseg convert --model-dir ./my_finetuned   any Paddle segmentation inference model
    fastseg convert PP-LiteSeg-T --weights reference   offline: untrained random weights, labelled
    """
    from fastseg.convert import convert_model
    from fastseg.errors import ConversionError
    from fastseg.zoo import OTHERWISE_PADDLE_DIR, load_zoo

    if model_dir is not None and (from_path is not None):
        raise ConversionError("Use either --model-dir DIR or NAME --from PATH, not both.")
    source = model_dir or from_path
    if weights == "reference":
        if source is not None or name is None:
            raise click.UsageError("--weights reference builds a zoo model itself: give NAME, without --from/--model-dir.")
        load_zoo().get(name, otherwise=OTHERWISE_PADDLE_DIR)
        _convert_reference(name, output=output, force=force, verify=not no_verify, head=head, opset=opset,
                           images_dir=images_dir, threshold=threshold, fixed_hw=fixed_hw)
        return
    if source is None:
        if name is None:
            raise ConversionError("Give a zoo model NAME (see 'fastseg models') or --model-dir DIR.")
        spec = load_zoo().get(name, otherwise=OTHERWISE_PADDLE_DIR)  # UnknownModelError with the nearest names
        from fastseg.convert.engine import require_convert_deps
        from fastseg.download import fetch_model_tarball

        require_convert_deps()  # before a download of hundreds of MB, not after

        source = fetch_model_tarball(spec, progress=True)
    elif name is not None and model_dir is None:
        load_zoo().get(name, otherwise=OTHERWISE_PADDLE_DIR)  # NAME --from PATH: NAME must be a zoo model
    report = convert_model(
        source,
        output,
        model_name=name,
        head=head,
        opset=opset,
        verify=not no_verify,
        images_dir=images_dir,
        threshold=threshold,
        force=force,
        fixed_hw=fixed_hw,
    )
    _echo_convert_report(report)


def _convert_reference(name: str, *, output: Path | None, force: bool, verify: bool, **options: object) -> None:
    """``fastseg convert NAME --weights reference``: build, convert and label; say so on every line that matters."""
    from fastseg.reference import REFERENCE_NOTE, build_reference_model, reference_model_dir

    target = output or reference_model_dir(name)
    click.echo(f"Building {name} with untrained reference weights (random: not the official model) into {target} ...",
               err=True)
    model_dir, report = build_reference_model(name, output=output, force=force, verify=verify, convert_options=options)
    if report is None:
        click.echo(f"Up to date (reference build): {model_dir}  (use --force to build again)")
    else:
        _echo_convert_report(report)
    click.echo(f"Weights: {REFERENCE_NOTE}")


def _echo_convert_report(report: ConvertReport) -> None:
    ver = report.verification
    if report.cache_hit:
        click.echo(f"Up to date (same source sha256): {report.output_dir}  (use --force to convert again)")
    click.echo(
        f"{report.model_name}: {report.paddle_format} -> ONNX opset {report.opset}, "
        f"{report.onnx_bytes / 1e6:.1f} MB, head={report.meta.output_kind}, "
        f"{'H,W dynamic' if report.meta.dynamic_hw else f'fixed {report.meta.fixed_hw}'}, "
        f"{report.seconds:.1f} s"
    )
    if ver.get("inputs"):
        for key, fig in ver["inputs"].items():
            click.echo(
                f"  {key:32s} {'x'.join(str(d) for d in fig['shape'])}: argmax agreement "
                f"{fig['argmax_agreement']:.4%}, max |logit diff| {fig['max_abs_logit_diff']:.2e}"
            )
        click.echo(
            f"Verified against {ver['reference']}: min agreement {ver['min_argmax_agreement']:.4%} "
            f"(threshold {ver['threshold']:.2%})"
        )
    else:
        click.echo("Verification skipped (--no-verify).")
    click.echo(f"Model directory: {report.output_dir}")


# ---------------------------------------------------------------- eval (accuracy, PaddleSeg's mIoU)
from fastseg.evaluation.command import eval_cmd  # noqa: E402 - the command's body lives with evaluation

main.add_command(eval_cmd)
