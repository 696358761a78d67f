"""The ``fastseg`` command line (click). Argument parsing only: each command calls into the
module that owns the concern. Nothing imports this module. This is the one place that reads
environment variables (through ``zoo.cache_home``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fastseg.errors import FastSegError


class _Group(click.Group):
    """Turn FastSegError (and file-system errors such as a full disk or a path that is a file)
    into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FastSegError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            click.echo(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            ctx.exit(2)


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

    from fastseg.model_dir import is_model_dir
    from fastseg.zoo import converted_model_dir, load_zoo

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
                "converted": is_model_dir(converted_model_dir(s.name)),
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
            "yes" if is_model_dir(converted_model_dir(s.name)) else "no",
            "-" if s.protocol is None else s.protocol.describe(),
        )
    console = Console(width=max(150, Console().width))  # 10 columns plus the protocol
    console.print(table)
    console.print(
        "GPU: " + zoo.published_conditions.get("gpu_ms", "") + "; CPU: " + zoo.published_conditions.get("cpu_ms", "")
    )
    console.print("* latency measured by PaddleX on sliced (cropped) inputs.")
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


LARGE_JSON_PIXELS = 16_000_000  # a label map's JSON is ~3 bytes per pixel


@main.command("predict")
@click.option("--input", "input_", required=True, help="Image file, directory (recursive) or http(s) URL.")
@click.option("--model", default=None, help="Zoo model name or converted model directory [default: PP-LiteSeg-T].")
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
@click.option("--json", "force_json", is_flag=True,
              help="Write <stem>_res.json even for images over 16 MP (skipped by default: ~200 MB for 8000x8000).")
@click.option("--slide", default=None, help="Sliding windows HxW at network resolution (PaddleSeg slide_inference).")
@click.option("--slide-stride", "--slide_stride", "slide_stride", default=None, help="Window step HxW [default: --slide].")
@click.option("--protocol", type=click.Choice(["paddlex", "published"]), default="paddlex", show_default=True,
              help="paddlex: the model's inference.yml; published: PaddleSeg's test protocol (fastseg models).")
def predict_cmd(
    input_: str,
    model: str | None,
    pipeline: str | None,
    device: str,
    save_path: str,
    batch_size: int | None,
    target_size: str | None,
    overlay: bool,
    allow_fallback: bool,
    no_json: bool,
    force_json: bool,
    slide: str | None,
    slide_stride: str | None,
    protocol: str,
) -> None:
    """Segment images and save PaddleX-style pseudo-colour maps and JSON."""
    import time
    from pathlib import Path

    from tqdm import tqdm

    from fastseg.segmenter import DEFAULT_MODEL, Segmenter, create_pipeline, expand_inputs
    from fastseg.slide import parse_hw, protocol_kwargs

    ts = _parse_target_size_opt(target_size)
    windows = {
        k: v for k, v in (
            ("slide", parse_hw(slide, name="--slide") if slide else None),
            ("slide_stride", parse_hw(slide_stride, name="--slide-stride") if slide_stride else None),
        ) if v is not None
    }
    if pipeline is not None:
        if model is not None:
            raise click.UsageError("Give --model or --pipeline, not both (the pipeline names its model).")
        if windows or protocol != "paddlex":
            raise click.UsageError("--slide/--protocol work with --model, not --pipeline.")
        seg = create_pipeline(pipeline, device=device, allow_fallback=allow_fallback)
    else:
        kwargs = {**protocol_kwargs(model or DEFAULT_MODEL, protocol), **windows}
        if ts is not None:  # an explicit --target_size wins over the protocol's
            kwargs.pop("target_size", None)
        seg = Segmenter(model or DEFAULT_MODEL, device=device, allow_fallback=allow_fallback, **kwargs)
    out_dir = Path(save_path)
    providers = seg.providers
    with seg:
        items = expand_inputs(input_)
        start = time.perf_counter()
        count = skipped_json = 0
        with tqdm(total=len(items), unit="img", desc=seg.meta.model_name, disable=None) as bar:
            for res in seg.predict(items, batch_size=batch_size, target_size=ts):
                res.save_to_img(out_dir, overlay=overlay)
                if no_json:
                    pass
                elif force_json or res.pred.size <= LARGE_JSON_PIXELS:
                    res.save_to_json(out_dir)
                else:
                    skipped_json += 1
                count += 1
                bar.update(1)
        elapsed = time.perf_counter() - start
    click.echo(
        f"{count} image(s) in {elapsed:.2f} s ({1000 * elapsed / max(count, 1):.1f} ms/image, "
        f"including reading and saving) with {seg.meta.model_name} on {device} "
        f"({', '.join(providers)}) -> {out_dir}"
    )
    if skipped_json:
        click.echo(
            f"Skipped <stem>_res.json for {skipped_json} image(s) over {LARGE_JSON_PIXELS // 1_000_000} MP "
            "(the PNG has the labels' colours; pass --json to write the JSON anyway)."
        )


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
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, ...")
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
def serve_cmd(
    model: str,
    device: str,
    host: str,
    port: int,
    config_path: str | None,
    api_key: str | None,
    threads: int | None,
    log_level: str,
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

    config = load_serving_config(config_path) if config_path else ServingConfig()
    if api_key:
        config = config.replace(api_key=api_key)
    model_arg: str | Path = Path(model) if Path(model).is_dir() else model
    segmenter = Segmenter(
        model_arg, device=device, batch_size=config.max_batch, options=RuntimeOptions(intra_op_threads=threads),
        slide=config.slide, slide_stride=config.slide_stride,
    )
    try:
        app = create_app(segmenter, config)
        click.echo(
            f"fastseg serve: {segmenter.meta.model_name} on http://{host}:{port}/ "
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
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu:0, ...")
@click.option("--allow-fallback", is_flag=True, help="Run on CPU with a warning when the GPU is not usable.")
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
) -> None:
    """Time fastseg per stage, side by side with Paddle Inference and PaddleX on the same files."""
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

    from fastseg import bench
    from fastseg.errors import MissingDependencyError
    from fastseg.zoo import cache_home, downloads_dir, load_zoo

    size = _parse_size(size_arg)
    others = tuple(a.strip() for a in against.split(",") if a.strip())
    for a in others:
        if a not in bench.AGAINST:
            raise click.BadParameter(f"{a!r}: choose from {', '.join(bench.AGAINST)}", param_hint="--against")
    zoo = load_zoo()
    names = zoo.names() if models_arg.strip() == "all" else [n.strip() for n in models_arg.split(",") if n.strip()]
    for n in names:
        zoo.get(n)  # UnknownModelError with suggestions, before any work
    dev, warning = bench.check_device(device, allow_fallback=allow_fallback)
    console = Console(width=max(200, Console().width))
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
    config = bench.BenchConfig(
        size=size, batch=batch, runs=runs, warmup=warmup, threads=threads, device=dev,
        against=others, peak_gflops=peak_gflops, paddlex_python=paddlex_python,
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
) -> None:
    """Convert a PaddleX/PaddleSeg model to a verified ONNX model directory.

    \b
    fastseg convert PP-LiteSeg-T                 download the official tarball, convert
    fastseg convert PP-LiteSeg-T --from X.tar    convert a tarball/directory you have
    fastseg convert --model-dir ./my_finetuned   any Paddle segmentation inference model
    """
    from fastseg.convert import convert_model
    from fastseg.errors import ConversionError
    from fastseg.zoo import load_zoo

    if model_dir is not None and (from_path is not None):
        raise ConversionError("Use either --model-dir DIR or NAME --from PATH, not both.")
    source = model_dir or from_path
    if source is None:
        if name is None:
            raise ConversionError("Give a zoo model NAME (see 'fastseg models') or --model-dir DIR.")
        spec = load_zoo().get(name)  # UnknownModelError with the nearest names
        from fastseg.convert.engine import require_convert_deps
        from fastseg.download import fetch_model_tarball

        require_convert_deps()  # before a download of hundreds of MB, not after

        source = fetch_model_tarball(spec, progress=True)
    elif name is not None and model_dir is None:
        load_zoo().get(name)  # NAME --from PATH: NAME must be a zoo model
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
