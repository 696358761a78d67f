"""``fastseg tune``: parse the arguments, call ``fastseg.precision.tune``, print the table."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.options import hw_size_callback, model_dir_for, weights_option


@click.command("tune")
@click.argument("model")
@weights_option()
@click.option("--size", "size", default=None, callback=hw_size_callback, help="Image HxW to time at [default: the dataset's frame, e.g. 1024x2048].")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image to time on (resized to --size) [default: a synthetic one].")
@click.option("--variant", "variants", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A gated int8, bf16 or int8-bf16 model dir quantized from MODEL, to compare too (quantize registers "
                   "its own automatically).")
def tune_cmd(
    model: str, weights: str, size: tuple[int, int] | None, threads: int, runs: int, warmup: int, image: Path | None,
    variants: tuple[Path, ...],
) -> None:
    """Time every engine and precision for MODEL here and record the fastest for engine=auto.

    MODEL is a converted model directory or a zoo name (converted, or built with --weights
    reference, on first use).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fastseg.precision.tune import default_size, tune

    model_dir = model_dir_for(model, weights)
    size = size or default_size(model_dir)
    console = Console(width=max(120, Console().width))  # the table unwrapped
    timings, winner, record = tune(
        model_dir, size=size, threads=threads, runs=runs, warmup=warmup, image=image,
        variants=variants, progress=lambda msg: console.print(f"[dim]{escape(msg)}[/dim]", soft_wrap=True),
    )
    fastest = min(t.median_ms for t in timings if t.median_ms is not None)
    on = image.name if image else "a synthetic image"
    table = Table(title=f"fastseg tune {model_dir.name} (end to end, ms, {threads} threads, {size[0]}x{size[1]}, {on})")
    for col in ("engine", "precision", "median", "p90", "vs fastest", "labels = ort fp32", "model dir"):
        table.add_column(col, justify="left" if col in ("engine", "precision", "model dir") else "right", no_wrap=True)
    for t in timings:
        c = t.candidate
        ok = t.median_ms is not None
        precision = c.precision if c.precision == "fp32" else f"{c.precision} (gate {c.gate.split('keeps ')[-1].split(' of')[0]})"
        table.add_row(
            c.engine, precision,
            f"{t.median_ms:.1f}" if ok else "failed", f"{t.p90_ms:.1f}" if t.p90_ms is not None else "-",
            f"{(t.median_ms or 0) / fastest:.2f}x" if ok else t.detail[:60],
            "-" if t.agreement_pct is None else f"{t.agreement_pct:.3f}%", c.model_dir.name,
        )
    console.print(table)
    click.echo(f"Winner: {winner.engine} {winner.precision} ({winner.model_dir}); recorded in {record}")
