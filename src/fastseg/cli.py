"""The ``fastseg`` command line (click). Argument parsing only: each command calls into the
module that owns the concern. Nothing imports this module. This is the one place that reads
environment variables (through ``zoo.cache_home``)."""

from __future__ import annotations

import sys

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


def run() -> None:
    """Entry point wrapper for ``python -m fastseg``."""
    sys.exit(main())
