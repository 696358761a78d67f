"""Where a conversion writes: the target directory, whether it already holds this conversion,
and the atomic swap of a new one into place (the old one stays whole until then)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastseg.errors import ConversionError, ModelDirError
from fastseg.model_dir import ONNX_FILE, ModelMeta, is_model_dir, read_meta, write_meta
from fastseg.tempdirs import staged_dir
from fastseg.zoo import converted_model_dir


def resolve_output(output: Path | None, model_name: str) -> Path:
    return Path(output) if output is not None else converted_model_dir(model_name)


def refuse_foreign_target(target: Path) -> None:
    """A converted model replaces only a converted model: never a user's other files."""
    if target.exists() and not is_model_dir(target) and (not target.is_dir() or any(target.iterdir())):
        raise ConversionError(
            f"Output {str(target)!r} exists and is not a fastseg model directory; "
            "choose a new or empty directory for -o/--output (nothing was written)."
        )


def cached_meta(
    target: Path, sha: str, options: dict[str, Any], *, verify: bool, threshold: float, inputs: set[str] | None = None
) -> ModelMeta | None:
    """The existing output's meta when it came from the same source with the same options
    (and, when verifying, passed ``threshold`` on the same ``inputs``: image names, or the
    synthetic sizes'); else None."""
    if not is_model_dir(target):
        return None
    try:
        meta = read_meta(target)
    except ModelDirError:
        return None
    prov = meta.provenance
    if prov.get("source_sha256") != sha or prov.get("options") != options:
        return None
    if verify and float(meta.verification.get("min_argmax_agreement", -1.0)) < threshold:
        return None
    recorded = {name for name in meta.verification.get("inputs", {}) if not name.startswith("synthetic_batch2_")}
    if verify and inputs is not None and recorded != inputs:  # verified on other images: verify these
        return None
    return meta


def write_atomically(target: Path, model: Any, meta: ModelMeta) -> int:
    """Write into a stage dir beside ``target`` and swap it into place (the old one stays whole
    until then, and is removed after)."""
    import onnx

    with staged_dir(target) as new:
        onnx.save(model, str(new / ONNX_FILE))
        write_meta(new, meta)
        for f in new.iterdir():  # mkstemp creates owner-only modes; a model dir is ordinary shared data
            f.chmod(0o644)
    return (target / ONNX_FILE).stat().st_size
