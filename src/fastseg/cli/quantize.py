"""``fastseg quantize``: parse the arguments, call ``fastseg.precision.quantize``, print one line."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from fastseg.cli.options import ConstantChoice, model_dir_for, weights_option

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("quantize")
@click.argument("model")
@weights_option(help_suffix=" Untrained weights rarely pass the accuracy gate and more calibration images do not help (--min-agreement 0 times them, ungated).")
@click.option("--precision", type=ConstantChoice("fastseg.model_dir", "REDUCED_PRECISIONS"), default="int8",
              show_default=True,
              help="int8: calibrated static quantization (both engines). bf16: OpenVINO's bf16 on CPUs with AMX or "
                   "AVX512-BF16 (no calibration). int8-bf16: the int8 graph on OpenVINO with bf16 wherever it is "
                   "not quantized (bf16 CPUs).")
@click.option("--calib", "calib_dir", type=_DIR,
              help="Calibration images, like the ones the model will see (required for int8 and int8-bf16; bf16 "
                   "gates on them when --val is not given).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="The model directory to write.")
@click.option("--engine", type=ConstantChoice("fastseg.engines", "ENGINES"), default=None,
              help="Engine the accuracy gate runs both precisions on [default: ort for int8, openvino for bf16 and "
                   "int8-bf16].")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=99.0, show_default=True,
              help="Gate: pooled % of held-out pixels whose label equals fp32's. 0 = ungated (marked UNGATED).")
@click.option("--min-image-agreement", type=click.FloatRange(0, 100), default=98.5, show_default=True,
              help="Gate: no single held-out image may fall below this % of fp32's labels.")
@click.option("--val", "val_dir", type=_DIR,
              help="Held-out images for the gate [default int8: every 4th --calib image, not calibrated on; bf16: --calib].")
@click.option("--max-side", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Downscale larger images first (models without their own Resize); 0 = full size.")
@click.option("--calib-method", type=click.Choice(["percentile", "minmax", "entropy"]), default="percentile",
              show_default=True, help="int8 activation ranges: 99.99th percentile, min/max, or entropy.")
@click.option("--no-augment", is_flag=True, help="Calibrate on the images alone (not also their mirror and 0.8x/1.2x brightness).")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def quantize_cmd(
    model: str, weights: str, precision: str, calib_dir: Path | None, out_dir: Path, engine: str | None,
    min_agreement: float, min_image_agreement: float, val_dir: Path | None, max_side: int, calib_method: str,
    no_augment: bool, force: bool,
) -> None:
    """int8, bf16 or int8-bf16 variant of MODEL, written only if it keeps fp32's labels on held-out images.

    MODEL is a converted model directory or a zoo name (converted, or built with --weights
    reference, on first use).
    """
    from fastseg.precision.gate import worst_name
    from fastseg.precision.quantize import QuantPrecision, quantize_model

    record = quantize_model(
        model_dir_for(model, weights), calib_dir, out_dir, precision=cast(QuantPrecision, precision),
        engine=engine, min_agreement=min_agreement, min_image_agreement=min_image_agreement, val_dir=val_dir,
        max_side=max_side or None, method=calib_method, augment=not no_augment, force=force,
    )
    if not record.gated:
        gate = "UNGATED (--min-agreement 0): marked so in its metadata"
    else:
        gate = f"gate passed (pooled >= {min_agreement:.2f}%, every image >= {min_image_agreement:.2f}%)"
    measured = (
        f"{precision} keeps {record.agreement_pct:.2f}% of fp32's labels on {record.val_images} held-out image(s) "
        f"with {record.engine}{' on ' + record.cpu if record.cpu else ''} (worst image {record.worst_image_pct:.2f}%"
        f"{worst_name(record)}"
        + (f", calibrated on {record.calib_images})" if record.calib_images else ")")
        if record.val_images else f"{precision} written without a comparison"
    )
    click.echo(f"{measured}; {gate} -> {out_dir}")
