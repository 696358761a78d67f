"""``fastseg quantize``: parse the arguments, call ``fastseg.precision.quantize``, print one line."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.options import ConstantChoice, model_dir_for, weights_option


@click.command("quantize")
@click.argument("model")
@weights_option(help_suffix=" int8 of untrained weights rarely passes the accuracy gate and more calibration images do not help (--min-agreement 0 times it, ungated).")
@click.option("--calib", "calib_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Calibration images, like the ones the model will see.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="The int8 model directory to write.")
@click.option("--engine", type=ConstantChoice("fastseg.engines", "ENGINES"), default="ort", show_default=True,
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
    model: str, weights: str, calib_dir: Path, out_dir: Path, engine: str, min_agreement: float,
    val_dir: Path | None, max_side: int, calib_method: str, no_augment: bool, force: bool,
) -> None:
    """Static int8 quantization of MODEL, gated on held-out label agreement with fp32.

    MODEL is a converted model directory or a zoo name (converted, or built with --weights
    reference, on first use).
    """
    from fastseg.precision.quantize import quantize_model

    model_dir = model_dir_for(model, weights)
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
