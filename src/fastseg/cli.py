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
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_cmd(
    model: str, device: str, host: str, port: int, config_path: str | None, api_key: str | None, log_level: str
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

    from fastseg.segmenter import Segmenter

    config = load_serving_config(config_path) if config_path else ServingConfig()
    if api_key:
        config = config.replace(api_key=api_key)
    model_arg: str | Path = Path(model) if Path(model).is_dir() else model
    segmenter = Segmenter(model_arg, device=device, batch_size=config.max_batch)
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


def run() -> None:
    """Entry point wrapper for ``python -m fastseg``."""
    sys.exit(main())
