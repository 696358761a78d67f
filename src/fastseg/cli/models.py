"""``fastseg models``: the zoo's 20 models with PaddleX's published figures."""

from __future__ import annotations

import click


@click.command("models")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def models_cmd(fmt: str) -> None:
    """List the 20 PaddleX models with PaddleX's published figures."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    from fastseg.reference import converted_status
    from fastseg.zoo import load_zoo

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
                "converted": converted_status(s.name).startswith("yes"),  # official weights converted
                "converted_weights": converted_status(s.name),
                "inference_urls": list(s.inference_urls),
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
            _figure(p.gpu_ms, ".2f", p.latency_note),
            _figure(p.cpu_ms, ".2f", p.latency_note),
            _figure(p.size_mb, ".1f", None),
            converted_status(s.name),
            "-" if s.protocol is None else s.protocol.describe(),
        )
    console = Console(width=max(150, Console().width))  # 10 columns plus the protocol
    console.print(table)
    console.print(
        "GPU: " + zoo.published_conditions.get("gpu_ms", "") + "; CPU: " + zoo.published_conditions.get("cpu_ms", "")
    )
    console.print("* latency measured by PaddleX on sliced (cropped) inputs.")
    if any("reference" in converted_status(s.name) for s in zoo.models.values()):
        console.print("Converted 'reference': UNTRAINED reference weights (random; --weights reference), not the official model.")
    console.print("Published protocol: how PaddleSeg's config evaluated the mIoU ('predict --protocol published' applies it).")


def _figure(value: float | None, spec: str, note: str | None) -> str:
    """A published figure, '-' where PaddleX publishes none; '*' marks a sliced-input latency."""
    return "-" if value is None else format(value, spec) + ("*" if note else "")
