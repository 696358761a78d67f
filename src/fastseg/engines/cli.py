"""``fastseg quantize`` and ``fastseg tune``: argument parsing only (registered by fastseg.cli)."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_hw(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not HxW (e.g. 1024x2048)") from exc
    if h < 1 or w < 1:
        raise click.BadParameter(f"{value!r}: both sides must be >= 1")
    return h, w


@click.command("quantize")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--calib", "calib_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Calibration images, like the ones the model will see.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="The int8 model directory to write.")
@click.option("--engine", type=click.Choice(["ort", "openvino"]), default="ort", show_default=True,
              help="Engine the accuracy gate runs fp32 and int8 on.")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=99.0, show_default=True,
              help="Gate: % of held-out pixels whose int8 label equals fp32's. 0 = ungated (marked UNGATED).")
@click.option("--val", "val_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Held-out images for the gate [default: every 4th --calib image, not calibrated on].")
@click.option("--max-side", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Downscale larger images first (models without their own Resize); 0 = full size.")
@click.option("--calib-method", type=click.Choice(["percentile", "minmax", "entropy"]), default="percentile",
              show_default=True, help="Activation ranges: 99.99th percentile, min/max, or entropy.")
@click.option("--no-augment", is_flag=True, help="Calibrate on the images alone (not also their mirror and 0.8x/1.2x brightness).")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def quantize_cmd(
    model_dir: Path, calib_dir: Path, out_dir: Path, engine: str, min_agreement: float,
    val_dir: Path | None, max_side: int, calib_method: str, no_augment: bool, force: bool,
) -> None:
    """Static int8 quantization of MODEL_DIR, gated on held-out label agreement with fp32."""
    from fastseg.quantize import quantize_model

    result = quantize_model(
        model_dir, calib_dir, out_dir, engine=engine, min_agreement=min_agreement,
        val_dir=val_dir, max_side=max_side or None, method=calib_method, augment=not no_augment, force=force,
    )
    gate = (f"gate {min_agreement:.2f}% passed" if result.gated else "UNGATED (--min-agreement 0): marked so in its metadata")
    click.echo(
        f"int8 keeps {result.agreement_pct:.2f}% of fp32's labels on {result.val_images} held-out image(s) "
        f"with {engine} (worst image {result.min_image_agreement_pct:.2f}%, calibrated on {result.calib_images}); "
        f"{gate} -> {out_dir}"
    )


@click.command("tune")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--size", "size_arg", default=None, help="Image HxW to time at [default: the dataset's frame, e.g. 1024x2048].")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image to time on (resized to --size) [default: a synthetic one].")
@click.option("--variant", "variants", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A gated int8 model dir to compare too (quantize registers its own automatically).")
def tune_cmd(
    model_dir: Path, size_arg: str | None, threads: int, runs: int, warmup: int, image: Path | None,
    variants: tuple[Path, ...],
) -> None:
    """Time every engine and precision for MODEL_DIR here and record the fastest for engine=auto."""
    from rich.console import Console
    from rich.table import Table

    from fastseg.tune import tune

    console = Console(width=max(120, Console().width))  # the table unwrapped
    timings, winner, record = tune(
        model_dir, size=_parse_hw(size_arg), threads=threads, runs=runs, warmup=warmup, image=image,
        variants=variants, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"),
    )
    fastest = min(t.median_ms for t in timings if t.median_ms is not None)
    table = Table(title=f"fastseg tune {model_dir.name} (end to end, ms, {threads} threads)")
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
