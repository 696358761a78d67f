"""Untrained reference weights: a zoo model's real architecture with random weights.

When the official tarball cannot be downloaded (an offline machine), ``--weights reference``
builds the architecture from PaddleSeg's code with random but sane weights
(``converters/reference_models.py``, the builder ``fastseg bench`` uses offline), converts it
like any Paddle model and keeps it apart from official conversions, in
``<cache_home>/reference-models/<NAME>``. It is always an explicit choice, never a fallback, and
it is labelled wherever a user meets it: ``fastseg.json`` (``provenance["weights"] ==
"reference-random"``), ``fastseg models``, predict's summary line, the result JSON, ``/info`` and
the demo page. Its outputs exercise the whole pipeline at the real cost; their labels mean
nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastseg.errors import ConversionError, MissingDependencyError
from fastseg.model_dir import ModelMeta, is_model_dir, read_meta, write_meta
from fastseg.tempdirs import staged_dir
from fastseg.zoo import cache_home, converted_model_dir, load_zoo

if TYPE_CHECKING:
    from fastseg.convert.pipeline import ConvertReport

REFERENCE_WEIGHTS = "reference-random"
"""``provenance["weights"]`` of a reference build (and the result JSON's ``weights``)."""
WEIGHTS_CHOICES = ("official", "reference")
REFERENCE_NOTE = "UNTRAINED reference weights (random; labels are meaningless, not the official model)"
SOURCE_HINT = (
    "The reference build needs the fastseg source checkout (converters/ is not in the wheel) and its "
    "set-up: git clone the fastseg repository and run 'bash scripts/setup.sh' (the [convert] extra plus PaddleSeg)."
)

Builder = Callable[[str, Path], Path]


def is_reference(meta: ModelMeta) -> bool:
    """True when ``meta`` describes a reference build (random weights)."""
    return meta.provenance.get("weights") == REFERENCE_WEIGHTS


def weights_note(meta: ModelMeta) -> str | None:
    """The warning to show next to results of ``meta``'s model, or None for a normal conversion."""
    return REFERENCE_NOTE if is_reference(meta) else None


def reference_model_dir(name: str, home: Path | None = None) -> Path:
    """Where ``--weights reference`` keeps ``name``'s build: ``<cache_home>/reference-models/<name>``."""
    return (home or cache_home()) / "reference-models" / name


def converted_status(name: str, home: Path | None = None) -> str:
    """``fastseg models``' Converted column: ``yes``, ``reference``, ``yes + reference`` or ``no``.

    A default-location conversion whose metadata says reference counts as ``reference``.
    """
    official = converted_model_dir(name, home)
    has_official = is_model_dir(official) and not _reads_as_reference(official)
    has_reference = is_model_dir(reference_model_dir(name, home)) or (
        is_model_dir(official) and _reads_as_reference(official)
    )
    if has_official and has_reference:
        return "yes + reference"
    return "yes" if has_official else "reference" if has_reference else "no"


def _reads_as_reference(model_dir: Path) -> bool:
    try:
        return is_reference(read_meta(model_dir))
    except Exception:  # noqa: BLE001 - an unreadable dir is simply not a reference build
        return False


def load_builder() -> Builder:
    """``converters.reference_models.ensure_reference`` from the source checkout.

    Raises:
        MissingDependencyError: converters/ is absent (a wheel install) or PaddleSeg is missing.
    """
    import fastseg

    repo = Path(fastseg.__file__).resolve().parents[2]
    if not (repo / "converters" / "reference_models.py").is_file():
        raise MissingDependencyError(f"--weights reference: converters/ not found beside {repo / 'src'}. {SOURCE_HINT}")
    if importlib.util.find_spec("paddleseg") is None:
        raise MissingDependencyError(
            "--weights reference needs PaddleSeg (model code for the build): "
            "pip install --no-deps paddleseg==2.8.0 && pip install -r converters/requirements.txt "
            "(scripts/setup.sh does both)."
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from converters.reference_models import ensure_reference

    return ensure_reference


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
    if not force and is_model_dir(target) and _reads_as_reference(target):
        return target, None
    if target.exists() and not (is_model_dir(target) or (target.is_dir() and not any(target.iterdir()))):
        raise ConversionError(
            f"Output {str(target)!r} exists and is not a fastseg model directory; choose a new or empty directory."
        )
    from fastseg.convert import convert_model
    from fastseg.convert.engine import require_convert_deps

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
