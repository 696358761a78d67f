"""``fastseg bench``: fastseg per stage beside Paddle Inference and PaddleX, on the same files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fastseg.cli.options import ConstantChoice, allow_fallback_option, device_option, parse_hw_size, slide_options
from fastseg.reference import WEIGHTS

if TYPE_CHECKING:
    from rich.console import Console as RichConsole


def _against(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--against a,b``: the peers, each one of ``fastseg.bench.AGAINST``."""
    from fastseg.bench.report import AGAINST

    others = tuple(a.strip() for a in value.split(",") if a.strip())
    for a in others:
        if a not in AGAINST:
            raise click.BadParameter(f"{a!r}: choose from {', '.join(AGAINST)}", param_hint="--against")
    return others


class _RichUI:
    """``BenchUI`` on a rich console: yellow warnings, a status line, a transient progress bar."""

    def __init__(self, console: RichConsole) -> None:
        self.console = console

    def warn(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]Warning:[/] {escape(message)}")  # a message's [gpu] is text, not markup

    @contextmanager
    def status(self, message: str) -> Iterator[Callable[[str], None]]:
        with self.console.status(message) as status:
            yield status.update

    @contextmanager
    def progress(self, total: int) -> Iterator[Callable[[str], None]]:
        from rich.progress import Progress

        with Progress(console=self.console, transient=True) as progress:
            task = progress.add_task("benchmarking", total=total)
            yield lambda label: progress.update(task, advance=1, description=label)


@click.command("bench")
@click.option("--models", "models_arg", default="PP-LiteSeg-T", show_default=True, help="Comma-separated zoo names, or 'all'.")
@device_option()
@allow_fallback_option()
@click.option("--size", "size_arg", default="1024x2048", show_default=True, help="Image HxW fed to every backend.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--against", default="", callback=_against, help="Comma-separated: paddle (Paddle Inference, MKLDNN), paddlex (PaddleX predictor, "
              "its own default run mode per model: mkldnn, or paddle for its oneDNN blocklist), "
              "paddlex-bf16 (run_mode mkldnn_bf16).")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Image to use (as is when it already has --size, else resized); default: a synthetic one.")
@click.option("--peak-gflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The peak '% peak' divides by, GFLOP/s [default: the theoretical peak of the rows' precision on "
                   "this CPU: cores x clock x MAC/cycle x 2, AMX tiles for bf16/int8; see fastseg.bench.peak].")
@click.option("--paddlex-python", envvar="FASTSEG_PADDLEX_PYTHON", help="Interpreter of a venv with paddlex (env FASTSEG_PADDLEX_PYTHON).")
@click.option("--weights", type=click.Choice(WEIGHTS), default=None,
              help="official: the published weights (downloaded when not cached); reference: UNTRAINED random weights "
                   "of the same architecture (same cost) [default: official when its tarball is cached, else reference].")
@click.option("--reference-dir", type=click.Path(file_okay=False), help="Prebuilt reference <NAME>_infer.tar files (converters/reference_models.py --out).")
@click.option("--engine", type=ConstantChoice("fastseg.bench.engines", "BENCH_ENGINES"), default="ort", show_default=True,
              help="Engine for the fastseg rows (auto: the tuned winner, tuning first; int8, openvino-int8, openvino-bf16, "
                   "openvino-int8-bf16: the variant, UNGATED on reference weights); each row records what ran.")
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
    against: tuple[str, ...],
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
    from rich.text import Text

    from fastseg.bench.job import BenchRequest, run_job
    from fastseg.bench.render import not_measured, published_text, render_table
    from fastseg.slide import parse_hw

    size = parse_hw_size(size_arg)
    for text, flag in ((slide, "--slide"), (slide_stride, "--slide-stride")):
        if text:
            parse_hw(text, name=flag)  # a malformed size fails here, not in every worker
    request = BenchRequest(
        size=size, out_dir=Path(out_dir), models=models_arg, device=device,
        allow_fallback=allow_fallback, batch=batch, runs=runs, warmup=warmup, threads=threads, against=against,
        image=Path(image) if image else None, peak_gflops=peak_gflops, paddlex_python=paddlex_python,
        weights=weights, reference_dir=Path(reference_dir) if reference_dir else None, engine=engine,
        slide=slide, slide_stride=slide_stride, protocol=protocol,
    )
    console = Console(width=max(240, Console().width))  # the full table: 19 columns, weights spelled out
    outcome = run_job(request, _RichUI(console))
    console.print(render_table(outcome.report))
    console.print(published_text(outcome.report))
    for line in not_measured(outcome.report):
        console.print(Text.assemble(("Not measured: ", "yellow"), line))  # plain text: details hold brackets
    console.print("Wrote " + ", ".join(str(p) for p in outcome.paths.values()))
