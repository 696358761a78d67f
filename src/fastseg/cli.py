"""The ``fastseg`` command line (click). Argument parsing only: each command calls into the
module that owns the concern. Nothing imports this module. This is the one place that reads
environment variables (through ``zoo.cache_home``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fastseg.errors import FastSegError


class _Group(click.Group):
    """Turn FastSegError into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FastSegError as exc:
            click.echo(f"Error: {exc}", err=True)
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
    import json

    from rich.console import Console
    from rich.table import Table

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
                "converted": converted_model_dir(s.name).is_dir(),
            }
            for s in zoo.models.values()
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="PaddleX semantic segmentation models (published figures)")
    for col in ("Model", "Family", "Dataset", "Classes", "mIoU %", "T4 GPU ms", "Xeon CPU ms", "Size MB", "Converted"):
        table.add_column(col, justify="right" if col not in ("Model", "Family", "Dataset") else "left")
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
            "yes" if converted_model_dir(s.name).is_dir() else "no",
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(
        "GPU: " + zoo.published_conditions.get("gpu_ms", "") + "; CPU: " + zoo.published_conditions.get("cpu_ms", "")
    )
    console.print("* latency measured by PaddleX on sliced (cropped) inputs.")


# ---------------------------------------------------------------- convert (Paddle -> ONNX)
def _parse_hw(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW such as 512x1024, got {value!r}") from None
    return h, w


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
        from fastseg.download import fetch_model_tarball

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


def run() -> None:
    """Entry point wrapper for ``python -m fastseg``."""
    sys.exit(main())
