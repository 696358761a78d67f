"""The options several commands share, declared once so their names, defaults and help agree,
and the parsers of the command line's size arguments (the one home for them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

WEIGHTS_HELP = (
    "official: the zoo model's published weights (downloaded on first use). reference: the same "
    "architecture with UNTRAINED random weights, built on demand for offline use and labelled as such."
)
SLIDE_HELP = "Sliding windows HxW at network resolution (PaddleSeg slide_inference)."
PROTOCOL_HELP = "paddlex: the model's inference.yml; published: PaddleSeg's test protocol (fastseg models)."


class ConstantChoice(click.Choice):  # type: ignore[type-arg]
    """``click.Choice`` over a constant that lives in a heavy module (``fastseg.engines``,
    ``fastseg.bench``): read from its home when a command parses or shows help, so the CLI's
    choices are the constants themselves while ``fastseg --help`` imports neither."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__((), case_sensitive=True)
        self._home = (module, name)

    @property
    def choices(self) -> tuple[str, ...]:
        import importlib

        module, name = self._home
        return tuple(getattr(importlib.import_module(module), name))

    @choices.setter
    def choices(self, value: object) -> None:  # click's __init__ assigns; the constant is the truth
        pass


# ---------------------------------------------------------------- shared options
def device_option() -> Callable[[F], F]:
    """``--device``: where the model runs (predict, serve, bench, eval)."""
    return click.option("--device", default="cpu", show_default=True, help="cpu, gpu, gpu:N, npu:N, trt:N, openvino[:CPU|GPU].")


def allow_fallback_option() -> Callable[[F], F]:
    """``--allow_fallback``: run on the CPU, with a warning, when the accelerator is missing."""
    return click.option("--allow_fallback", "--allow-fallback", "allow_fallback", is_flag=True,
                        help="Run on the CPU (with a warning) when the requested accelerator is missing.")


def weights_option(*, help_suffix: str = "") -> Callable[[F], F]:
    """``--weights official|reference``; ``help_suffix`` adds what this command does with a reference build."""
    from fastseg.reference import WEIGHTS

    return click.option("--weights", type=click.Choice(WEIGHTS), default="official", show_default=True,
                        help=WEIGHTS_HELP + help_suffix)


def engine_option() -> Callable[[F], F]:
    """``--engine auto|ort|openvino`` for the commands that run a model (predict, serve)."""
    return click.option("--engine", type=ConstantChoice("fastseg.engines", "ENGINE_CHOICES"), default="auto", show_default=True,
                        help="auto: the 'fastseg tune' winner for this model here (else ONNX Runtime).")


def ray_address_option() -> Callable[[F], F]:
    """``--ray-address``: the Ray cluster a ``--ray`` run joins."""
    return click.option("--ray-address", default=None, help="Ray cluster address (with --ray) [default: start a local Ray].")


def slide_options(*, slide_help: str = SLIDE_HELP, protocol_help: str = PROTOCOL_HELP) -> Callable[[F], F]:
    """``--slide``, ``--slide-stride`` and ``--protocol`` (``window_options`` reads them)."""
    options = (
        click.option("--slide", default=None, help=slide_help),
        click.option("--slide-stride", "--slide_stride", "slide_stride", default=None, help="Window step HxW [default: --slide]."),
        click.option("--protocol", type=click.Choice(["paddlex", "published"]), default="paddlex", show_default=True,
                     help=protocol_help),
    )

    def decorate(func: F) -> F:
        for option in reversed(options):  # click lists the last applied first
            func = option(func)
        return func

    return decorate


def window_options(
    model: str | Path, *, slide: str | None, slide_stride: str | None, protocol: str, keep_target_size: bool = False
) -> dict[str, Any]:
    """``Segmenter`` keyword arguments from ``--slide``, ``--slide-stride`` and ``--protocol``
    (one parser for predict and eval). ``keep_target_size``: the user gave ``--target_size``,
    which wins over the protocol's.

    Raises:
        InputError: a malformed HxW, or ``published`` for a model without a published protocol.
    """
    from fastseg.slide import parse_hw, protocol_kwargs

    windows = {
        key: parse_hw(text, name=flag)
        for key, text, flag in (("slide", slide, "--slide"), ("slide_stride", slide_stride, "--slide-stride"))
        if text
    }
    kwargs = {**protocol_kwargs(model, protocol), **windows}
    if keep_target_size:
        kwargs.pop("target_size", None)
    return kwargs


# ---------------------------------------------------------------- --weights
def weights_model(model: str, weights: str, *, model_option: str = "--model") -> str | Path:
    """``model``, or for ``--weights reference`` the labelled reference build of that zoo name.

    ``model_option`` is how this command names its model argument (in the refusal of a directory).
    """
    if weights != "reference":
        return model
    if Path(model).expanduser().exists():
        raise click.UsageError(f"--weights reference builds a zoo model: give {model_option} NAME (see 'fastseg models').")
    from fastseg.model_resolution import resolve_model_dir
    from fastseg.reference import reference_model_dir

    click.echo(
        f"Using untrained reference weights for {model} (random: not the official model); "
        f"built once into {reference_model_dir(model)} ...",
        err=True,
    )
    return resolve_model_dir(model, weights="reference")


def model_dir_for(model: str, weights: str) -> Path:
    """The converted model directory a ``MODEL`` argument means (a directory, or a zoo name
    converted on demand or, with ``--weights reference``, built with untrained weights)."""
    from fastseg.model_resolution import resolve_model_dir

    return Path(weights_model(model, weights, model_option="MODEL")) if weights == "reference" else resolve_model_dir(model)


# ---------------------------------------------------------------- size parsers
def parse_target_size(value: str | None) -> int | tuple[int, int] | None:
    """``--target_size``: ``N`` or ``W,H`` (``WxH`` too)."""
    if value is None:
        return None
    parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{value!r}: use N or W,H (e.g. 512 or 1024,512)") from None
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2:
        return (nums[0], nums[1])
    raise click.BadParameter(f"{value!r}: use N or W,H (e.g. 512 or 1024,512)")


def parse_hw_size(value: str) -> tuple[int, int]:
    """An image size ``HxW`` of at least 8x8 (bench --size, convert --fixed-shape)."""
    from fastseg.errors import InputError
    from fastseg.slide import parse_hw

    try:
        h, w = parse_hw(value)
    except InputError:
        h = w = 0
    if h < 8 or w < 8:
        raise click.BadParameter(f"{value!r}: use HxW, e.g. 1024x2048 (height x width, at least 8x8)")
    return h, w


def hw_size_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """:func:`parse_hw_size` as a click callback for an optional option."""
    return None if value is None else parse_hw_size(value)
