"""Building untrained reference models: a zoo model's real architecture with random weights.

The build side of ``weights="reference"`` (``fastseg.reference`` labels the result at run time).
``converters/reference_models.py`` (in the source checkout, not the wheel) builds the Paddle
model with PaddleSeg's code; this module converts it like any Paddle model, labels it and caches
it. ``load_builder`` is the one place ``converters/`` is reached (``fastseg bench`` uses it too).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastseg.errors import ConversionError, MissingDependencyError
from fastseg.model_dir import is_model_dir, write_meta
from fastseg.reference import REFERENCE_WEIGHTS, reads_as_reference, reference_model_dir
from fastseg.tempdirs import staged_dir
from fastseg.zoo import cache_home, load_zoo

if TYPE_CHECKING:
    from fastseg.convert.pipeline import ConvertReport

SOURCE_HINT = (
    "The reference build needs the fastseg source checkout (converters/ is not in the wheel) and its "
    "set-up: git clone the fastseg repository and run 'bash scripts/setup.sh' (the [convert] extra plus PaddleSeg)."
)

Builder = Callable[[str, Path], Path]
"""``(name, cache_dir) -> <NAME>_infer.tar``: builds (or reuses) a reference Paddle model."""


def source_checkout() -> Path:
    """The repository root this fastseg was imported from (converters/ sits there in a checkout)."""
    package = sys.modules["fastseg"]  # already imported: this module is part of it
    return Path(str(package.__file__)).resolve().parents[2]


def load_builder() -> Builder:
    """``converters.reference_models.ensure_reference`` from the source checkout.

    Raises:
        MissingDependencyError: converters/ is absent (a wheel install) or PaddleSeg is missing.
    """
    repo = source_checkout()
    if not (repo / "converters" / "reference_models.py").is_file():
        raise MissingDependencyError(f"The reference build: converters/ not found beside {repo / 'src'}. {SOURCE_HINT}")
    if importlib.util.find_spec("paddleseg") is None:
        raise MissingDependencyError(
            "The reference build needs PaddleSeg (model code for the build): "
            "pip install --no-deps paddleseg==2.8.0 && pip install -r converters/requirements.txt "
            "(scripts/setup.sh does both)."
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from converters.reference_models import ensure_reference

    builder: Builder = ensure_reference
    return builder


def build_reference_model(
    name: str,
    *,
    home: Path | None = None,
    output: Path | None = None,
    force: bool = False,
    verify: bool = True,
    builder: Builder | None = None,
    convert_options: Mapping[str, Any] | None = None,
) -> tuple[Path, ConvertReport | None]:
    """Build, convert and label ``name`` with untrained reference weights (once; then cached).

    Args:
        name: a zoo model name.
        home: fastseg's cache directory (default ``$FASTSEG_HOME`` or ``~/.cache/fastseg``).
        output: the model directory to write (default ``reference_model_dir(name)``).
        force: build and convert again even when a labelled build exists.
        verify: compare the conversion with Paddle Inference, as ``fastseg convert`` does.
        builder: ``(name, cache_dir) -> tar`` (default: ``load_builder()``).
        convert_options: more ``convert_model`` keywords (head, opset, images_dir, threshold, fixed_hw).

    Returns:
        The model directory and the conversion report (None when the cached build was reused).

    Raises:
        UnknownModelError, MissingDependencyError, ConversionError.
    """
    spec = load_zoo().get(name)
    root = home or cache_home()
    target = Path(output) if output is not None else reference_model_dir(spec.name, root)
    if not force and is_model_dir(target) and reads_as_reference(target):
        return target, None
    if target.exists() and not (is_model_dir(target) or (target.is_dir() and not any(target.iterdir()))):
        raise ConversionError(
            f"Output {str(target)!r} exists and is not a fastseg model directory; choose a new or empty directory."
        )
    from fastseg.convert import convert_model
    from fastseg.convert.child import require_convert_deps

    build = builder or load_builder()  # first: its message covers the convert extra too
    require_convert_deps()
    try:
        tar = build(spec.name, root / "reference-models" / ".tars")
    except RuntimeError as exc:  # the builder's child process failed
        raise ConversionError(f"Building the reference {spec.name} failed: {str(exc).splitlines()[0]}") from exc
    with staged_dir(target) as staged:  # the old model stays whole until the new one replaces it
        report = convert_model(
            Path(tar), staged, model_name=spec.name, verify=verify, force=True, **dict(convert_options or {})
        )
        meta = replace(report.meta, provenance={**report.meta.provenance, "weights": REFERENCE_WEIGHTS})
        write_meta(staged, meta)  # labelled before it becomes visible under its final name
    return target, replace(report, output_dir=target, meta=meta)
