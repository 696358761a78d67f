"""The files a model is benchmarked on: found or built once, converted once, cached; and the image."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastseg.bench.report import OFFICIAL_WEIGHTS_LABEL, REFERENCE_WEIGHTS_LABEL, SYNTHETIC_IMAGE
from fastseg.errors import FastSegError, MissingDependencyError


@dataclass(frozen=True)
class ModelSource:
    """The files one model is benchmarked on.

    ``onnx_dir`` holds model.onnx + fastseg.json; ``paddle_dir`` the Paddle inference model it
    was converted from (inference.json/.pdiparams/.yml), or None when there is none.
    ``weights`` is ``"official weights"`` or ``"reference weights"`` (random, same cost).
    ``error`` says why the files could not be prepared (the row then reads "failed").
    """

    name: str
    onnx_dir: Path
    paddle_dir: Path | None
    weights: str
    note: str = ""
    error: str = ""


def bench_cache_dir(home: Path) -> Path:
    """Where bench keeps Paddle model dirs and their converted ONNX (``<home>/bench``)."""
    return home / "bench"


def _extract_tar(tar_path: Path, dest: Path) -> Path:
    """Extract an ``<NAME>_infer.tar`` atomically into ``dest``; return the dir with inference.yml."""
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            from fastseg.convert.sources import extract_tarball  # refuses links, '..', absolute paths

            extract_tarball(tar_path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for yml in sorted(dest.rglob("inference.yml")):
        return yml.parent
    raise FastSegError(f"{tar_path} has no inference.yml; delete {dest} and the tarball, then retry.")


def resolve_model(
    name: str,
    *,
    home: Path,
    official_tar: Path | None = None,
    build_reference: Callable[[str, Path], Path] | None = None,
    convert: Callable[[Path, Path, str], str | None] | None = None,
) -> ModelSource:
    """Find or build the files to benchmark ``name`` on, converting once and caching.

    Official weights when ``official_tar`` (a cached ``<NAME>_infer.tar``) is given, else a
    reference build (``build_reference(name, cache_dir) -> tar``: converters/reference_models'
    ``ensure_reference``). The ONNX is converted with ``convert(paddle_dir, onnx_dir, name)`` into
    ``<home>/bench/<weights>/<name>/onnx`` and reused on the next run. A note ``convert``
    returns (e.g. "unverified: ...") is kept beside it and shown in the row.

    Raises:
        MissingDependencyError: no official tarball and no reference builder, or no converter.
    """
    from fastseg.model_dir import is_model_dir

    if official_tar is not None:
        weights, tag, tar = OFFICIAL_WEIGHTS_LABEL, "official", official_tar
    elif build_reference is not None:
        weights, tag = REFERENCE_WEIGHTS_LABEL, "reference"
        tar = build_reference(name, bench_cache_dir(home) / tag / "tars")
    else:
        raise MissingDependencyError(
            f"No official {name}_infer.tar is cached and the reference builder (converters/) is not importable. "
            "Run from the fastseg repository (converters/ beside src/), or build the references once with "
            "'python -m converters.reference_models --models all --out DIR' (from the repository root) and pass --reference-dir DIR."
        )
    root = bench_cache_dir(home) / tag / name
    paddle_dir = _extract_tar(Path(tar), root / "paddle")
    onnx_dir = root / "onnx"
    if not is_model_dir(onnx_dir):
        if convert is None:
            raise MissingDependencyError(
                f"{name} is not converted yet and fastseg.convert is unavailable: pip install 'fastseg-ort[convert]'."
            )
        from fastseg.files import write_text_atomic

        write_text_atomic(root / "note.txt", convert(paddle_dir, onnx_dir, name) or "")
    note_file = root / "note.txt"
    note = note_file.read_text().strip() if note_file.is_file() else ""
    return ModelSource(name=name, onnx_dir=onnx_dir, paddle_dir=paddle_dir, weights=weights, note=note)


def make_image(path: Path, *, size: tuple[int, int], source: Path | None = None) -> Path:
    """``write_bench_image``'s file, where the caller needs no description of it."""
    return write_bench_image(path, size=size, source=source)[0]


def write_bench_image(path: Path, *, size: tuple[int, int], source: Path | None = None) -> tuple[Path, str]:
    """Write the benchmark image (H, W = ``size``); return where, and what it is for the report.
    ``source``'s own bytes when it already has that size (its format and compression are what a
    user's file has; the suffix follows it), else ``source`` resized, or a fixed synthetic
    scene, as PNG. OpenCV writes PNG at zlib's fastest level with every row Sub, which inflates
    slower than libpng's default (a Cityscapes frame: 2.45 MB against 2.2, decoded in ~10 ms
    against ~7.5 on an AMD EPYC Zen 5 with avx2 avx512f avx512_bf16 avx512_vnni, 2 cores), so
    re-encoding a frame that needs no resize would change what ``pre`` measures.

    Raises:
        FastSegError: ``source`` cannot be read.
    """
    import cv2

    h, w = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        img = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if img is None:
            raise FastSegError(f"Cannot read --image {str(source)!r}: give a PNG/JPEG file.")
        if img.shape[:2] == (h, w):
            own = path.with_suffix(source.suffix.lower() or path.suffix)
            own.write_bytes(source.read_bytes())
            return own, f"{source.name} as is"
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        note = f"{source.name} resized (OpenCV PNG)"
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 255], axis=-1)
        img = np.clip(base + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
        note = SYNTHETIC_IMAGE
    cv2.imwrite(str(path), img)
    return path, note
