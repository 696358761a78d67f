"""The options several commands share are one declaration (fastseg.cli.options): same names,
defaults and choices everywhere; the size parsers reject bad input with the usual wording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from fastseg.cli import main
from fastseg.cli.options import hw_size_callback, parse_hw_size, parse_target_size

SHARED = {  # option name -> the commands that carry it
    "device": ("predict", "serve", "bench", "eval"),
    "allow_fallback": ("predict", "serve", "bench"),
    "weights": ("predict", "serve", "convert", "eval", "tune", "quantize"),
    "engine": ("predict", "serve"),
    "ray_address": ("predict", "serve"),
    "slide": ("predict", "bench", "eval"),
    "slide_stride": ("predict", "bench", "eval"),
    "protocol": ("predict", "bench", "eval"),
}


def _option(command: str, name: str) -> click.Option:
    found = [p for p in main.commands[command].params if p.name == name]
    assert len(found) == 1 and isinstance(found[0], click.Option), (command, name)
    return found[0]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_a_shared_option_is_the_same_on_every_command(name: str) -> None:
    options = [_option(command, name) for command in SHARED[name]]
    first = options[0]
    for option in options[1:]:
        assert (option.opts, option.secondary_opts, option.default, option.is_flag) == (
            first.opts, first.secondary_opts, first.default, first.is_flag
        )
        assert getattr(option.type, "choices", None) == getattr(first.type, "choices", None)


def test_shared_options_keep_their_names_and_defaults() -> None:
    assert _option("predict", "slide_stride").opts == ["--slide-stride", "--slide_stride"]
    assert _option("bench", "protocol").default == "paddlex"
    assert _option("eval", "device").default == "cpu"
    assert _option("serve", "allow_fallback").opts == ["--allow_fallback", "--allow-fallback"]
    assert list(getattr(_option("predict", "engine").type, "choices", ())) == ["auto", "ort", "openvino"]
    # a per-command help text is kept where the command means something narrower
    assert (_option("bench", "slide").help or "").startswith("fastseg rows:")
    assert (_option("convert", "weights").help or "").endswith("Written to <cache>/reference-models/NAME unless -o.")


def test_size_parsers() -> None:
    assert parse_hw_size("1024x2048") == (1024, 2048)
    assert parse_target_size("512") == 512 and parse_target_size("1024,512") == (1024, 512)
    assert parse_target_size(None) is None
    ctx = click.Context(main)
    assert hw_size_callback(ctx, _option("convert", "fixed_hw"), None) is None
    with pytest.raises(click.BadParameter, match="at least 8x8"):
        parse_hw_size("4x4")
    with pytest.raises(click.BadParameter, match="use N or W,H"):
        parse_target_size("1,2,3")


def test_python_dash_m_fastseg_cli_runs_the_cli() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-m", "fastseg.cli", "--help"], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0 and "Commands:" in done.stdout and "predict" in done.stdout


def test_cli_choices_are_the_constants_and_the_cli_stays_light() -> None:
    """--engine/--weights list the constants that define them; importing the CLI loads neither
    numpy nor the engines (fastseg --help stays fast)."""
    from fastseg.bench.engines import BENCH_ENGINES
    from fastseg.engines import ENGINE_CHOICES, ENGINES

    def choices(command: str, option: str) -> tuple[str, ...]:
        param = next(p for p in main.commands[command].params if p.name == option)  # type: ignore[attr-defined]
        return tuple(param.type.choices)

    assert choices("predict", "engine") == choices("serve", "engine") == ENGINE_CHOICES
    assert choices("quantize", "engine") == ENGINES and choices("bench", "engine") == BENCH_ENGINES
    code = "import sys, fastseg.cli; print(sorted(m for m in ('numpy', 'fastseg.engines', 'fastseg.bench') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
