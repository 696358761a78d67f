"""Which converted model directory a ``model`` argument means: a directory as given, or a
zoo name's converted directory, downloaded and converted on first use (``weights="official"``)
or built with untrained reference weights (``weights="reference"``, ``fastseg.reference``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastseg.errors import InputError, MissingDependencyError
from fastseg.model_dir import is_model_dir, read_meta
from fastseg.reference import WEIGHTS, Weights
from fastseg.zoo import ModelSpec, converted_model_dir, load_zoo

# The name this code logged under before it left fastseg.segmenter: log filters keep working.
log = logging.getLogger("fastseg.segmenter")

DEFAULT_MODEL = "PP-LiteSeg-T"


def resolve_model_dir(model: str | Path, *, home: Path | None = None, weights: Weights = "official") -> Path:
    """A converted model directory for ``model`` (a zoo name or a directory), converting on demand.

    ``weights="reference"`` builds (once, then cached) a zoo name's untrained reference model
    instead of downloading the official one; a directory holds the weights it holds and refuses it.

    Raises:
        UnknownModelError: not a directory and not a zoo name (nearest names suggested).
        ModelDirError: a directory that is not a converted model (e.g. a Paddle model).
        MissingDependencyError: a zoo model not converted yet and the converter is not installed.
        InputError: an unknown ``weights``, or ``weights="reference"`` with a directory.
    """
    if weights not in WEIGHTS:
        raise InputError(f"weights must be one of {', '.join(map(repr, WEIGHTS))}, got {weights!r}.")
    text = str(model)
    path = Path(text).expanduser()
    looks_like_path = isinstance(model, Path) or "/" in text or "\\" in text or text.startswith(".")
    if path.is_file() and path.suffix == ".onnx":  # model.onnx given: use its directory
        path = path.parent
    if path.exists() or looks_like_path:
        if weights == "reference":
            raise InputError(
                f"{text!r} is a model directory: its weights are the ones it holds. The reference weights are "
                "built for a zoo model: give its name (see 'fastseg models'), or keep the directory with the "
                "official weights choice."
            )
        read_meta(path)  # validates; says "convert it first" for Paddle model dirs
        return path
    spec = load_zoo().get(text)
    if weights == "reference":
        from fastseg.convert.reference import build_reference_model

        log.info("Using untrained reference weights for %s (random: not the official model)", spec.name)
        reference_dir, _ = build_reference_model(spec.name, home=home)
        return reference_dir
    target = converted_model_dir(spec.name, home)
    if is_model_dir(target):
        return target
    return _convert_zoo_model(spec, target, home=home)


def _convert_zoo_model(spec: ModelSpec, target: Path, *, home: Path | None) -> Path:
    try:
        from fastseg.convert import convert_model
        from fastseg.convert.child import require_convert_deps
        from fastseg.download import fetch_model_tarball

        require_convert_deps()  # before a download of hundreds of MB, not after
    except ImportError as exc:
        raise MissingDependencyError(
            f"Model {spec.name!r} is not converted yet ({target} does not exist) and converting it needs the "
            "[convert] extra: pip install 'fastseg-ort[convert]', or pass a converted model directory."
        ) from exc
    log.info("Model %s is not converted yet: downloading and converting into %s", spec.name, target)
    tarball = fetch_model_tarball(spec, home=home)  # its DownloadError is already one line with the ways forward
    convert_model(tarball, target, model_name=spec.name)
    return target
