"""The ``fastseg`` group: its commands, and how an error reaches the user (one line, exit code 2)."""

from __future__ import annotations

import click

from fastseg.cli.bench import bench_cmd
from fastseg.cli.convert import convert_cmd
from fastseg.cli.evaluate import eval_cmd
from fastseg.cli.models import models_cmd
from fastseg.cli.predict import get_config_cmd, predict_cmd
from fastseg.cli.serve import serve_cmd
from fastseg.cli.quantize import quantize_cmd
from fastseg.cli.tune import tune_cmd
from fastseg.errors import FastSegError

COMMANDS: tuple[click.Command, ...] = (
    models_cmd, predict_cmd, get_config_cmd, serve_cmd, bench_cmd, quantize_cmd, tune_cmd, convert_cmd, eval_cmd,
)


class _Group(click.Group):
    """Turn FastSegError (and file-system errors such as a full disk or a path that is a file)
    into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FastSegError as exc:
            click.echo(f"Error: {_cli_wording(exc)}", err=True)
            ctx.exit(2)
        except OSError as exc:
            click.echo(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            ctx.exit(2)


def _cli_wording(exc: FastSegError) -> str:
    """The message in the command line's words: Python's ``allow_fallback=True`` is ``--allow_fallback``
    here, and ``weights='reference'`` is ``--weights reference``."""
    return str(exc).replace("allow_fallback=True", "--allow_fallback").replace("weights='reference'", "--weights reference")


@click.group(cls=_Group, commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastseg-ort", prog_name="fastseg")
def main() -> None:
    """fastseg: PaddleX semantic segmentation on ONNX Runtime."""
