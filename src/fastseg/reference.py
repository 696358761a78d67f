"""Untrained reference weights at run time: what they are called and how they are labelled.

When the official tarball cannot be downloaded (an offline machine), ``weights="reference"``
(``--weights reference`` on the command line, ``weights: reference`` in a pipeline YAML) uses
the zoo model's real architecture with random but sane weights, built once by
``fastseg.convert.reference`` and kept apart from official conversions, in
``<cache_home>/reference-models/<NAME>``. It is always an explicit choice, never a fallback, and
it is labelled wherever a user meets it: ``fastseg.json`` (``provenance["weights"] ==
"reference-random"``), ``fastseg models``, predict's summary line, the result JSON, eval's table
and ``eval.json``, ``/info`` and the demo page. Its outputs exercise the whole pipeline at the
real cost; their labels mean nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastseg.model_dir import ModelMeta, is_model_dir, read_meta
from fastseg.zoo import cache_home, converted_model_dir

Weights = Literal["official", "reference"]
"""The one weights vocabulary of every entry point (Segmenter, create_pipeline, YAML, commands)."""
WEIGHTS: tuple[Weights, ...] = ("official", "reference")
REFERENCE_WEIGHTS = "reference-random"
"""``provenance["weights"]`` of a reference build (and the result JSON's ``weights``)."""
REFERENCE_MARKER = "fastseg-reference-weights.txt"
"""A file a reference build's ``<NAME>_infer/`` folder carries, so that converting its tarball by hand
(``fastseg convert NAME --from <tar>``) labels the result as ``weights="reference"`` does."""
REFERENCE_NOTE = "UNTRAINED reference weights (random; labels are meaningless, not the official model)"


def is_reference(meta: ModelMeta) -> bool:
    """True when ``meta`` describes a reference build (random weights)."""
    return meta.provenance.get("weights") == REFERENCE_WEIGHTS


def weights_note(meta: ModelMeta) -> str | None:
    """The warning to show next to results of ``meta``'s model, or None for a normal conversion."""
    return REFERENCE_NOTE if is_reference(meta) else None


def reference_model_dir(name: str, home: Path | None = None) -> Path:
    """Where ``weights="reference"`` keeps ``name``'s build: ``<cache_home>/reference-models/<name>``."""
    return (home or cache_home()) / "reference-models" / name


def converted_status(name: str, home: Path | None = None) -> str:
    """``fastseg models``' Converted column: ``yes``, ``reference``, ``yes + reference`` or ``no``.

    A default-location conversion whose metadata says reference counts as ``reference``.
    """
    official = converted_model_dir(name, home)
    has_official = is_model_dir(official) and not reads_as_reference(official)
    has_reference = is_model_dir(reference_model_dir(name, home)) or (
        is_model_dir(official) and reads_as_reference(official)
    )
    if has_official and has_reference:
        return "yes + reference"
    return "yes" if has_official else "reference" if has_reference else "no"


def reads_as_reference(model_dir: Path) -> bool:
    """True when ``model_dir`` is a readable model directory labelled as a reference build."""
    try:
        return is_reference(read_meta(model_dir))
    except Exception:  # noqa: BLE001 - an unreadable dir is simply not a reference build
        return False
