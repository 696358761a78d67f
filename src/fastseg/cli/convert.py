"""``fastseg convert``: Paddle -> verified ONNX model directory (official, local, or reference weights)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from fastseg.cli.options import hw_size_callback, weights_option

if TYPE_CHECKING:
    from fastseg.convert.pipeline import ConvertReport


@click.command("convert")
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
@click.option("--fixed-shape", "fixed_hw", callback=hw_size_callback, help="Freeze the input to HxW (default: dynamic H and W).")
@weights_option(help_suffix=" Written to <cache>/reference-models/NAME unless -o.")
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
        from fastseg.convert.child import require_convert_deps
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
    from fastseg.convert.reference import build_reference_model
    from fastseg.reference import REFERENCE_NOTE, reference_model_dir

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

