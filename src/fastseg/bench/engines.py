"""``fastseg bench --engine``: turn each model's files into what the chosen engine runs.

- ``ort`` / ``openvino``: the fp32 model on that engine.
- ``auto``: the model's ``fastseg tune`` winner; a model without a record for this machine is
  tuned first (same threads and size as the bench).
- ``int8`` / ``openvino-int8``: an int8 variant made by ``fastseg quantize`` on the bench image
  (and its mirror images), run on ONNX Runtime or OpenVINO.
- ``openvino-bf16``: the bf16 variant (``fastseg quantize --precision bf16``), on OpenVINO; only
  on a CPU with bf16 instructions (AMX or AVX512-BF16).
- ``openvino-int8-bf16``: the int8-bf16 variant (the int8 graph with bf16 wherever it is not
  quantized), on OpenVINO; bf16 CPUs only, as ``openvino-bf16``.
Reference builds have random weights, which no accuracy gate can pass, so their variants are
written UNGATED and the row's weights say so ("bf16 UNGATED"); official weights are gated
(99% pooled, no image below 98.5%).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

from fastseg.bench.models import ModelSource
from fastseg.bench.report import REFERENCE_WEIGHTS_LABEL
from fastseg.model_dir import GateRecord

VARIANT_ENGINES: dict[str, tuple[str, str]] = {
    "int8": ("int8", "ort"),
    "openvino-int8": ("int8", "openvino"),
    "openvino-bf16": ("bf16", "openvino"),
    "openvino-int8-bf16": ("int8-bf16", "openvino"),
}
"""bench ``--engine`` names that run a reduced-precision variant: (precision, engine)."""
BENCH_ENGINES: tuple[str, ...] = ("auto", "ort", "openvino", *VARIANT_ENGINES)


def worker_engine(engine: str) -> str:
    """The engine the worker's Segmenter is given for a bench ``--engine``."""
    return VARIANT_ENGINES[engine][1] if engine in VARIANT_ENGINES else engine


def row_precision(engine: str) -> str | None:
    """The precision a bench ``--engine`` runs (None for ``auto``: the tuned winner's)."""
    if engine == "auto":
        return None
    return VARIANT_ENGINES[engine][0] if engine in VARIANT_ENGINES else "fp32"


def calibration_dir(image: Path, folder: Path) -> Path:
    """A folder with the bench image and its mirror images: 4 calibration inputs, 1 held out."""
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        from fastseg.errors import InputError

        raise InputError(f"Cannot read the bench image {str(image)!r} for calibration.")
    folder.mkdir(parents=True, exist_ok=True)
    for i, flip in enumerate((None, 1, 0, -1, None)):
        out = img if flip is None else cv2.flip(img, flip)
        cv2.imwrite(str(folder / f"calib_{i}.png"), out if i < 4 else cv2.GaussianBlur(img, (5, 5), 0))
    return folder


def prepare_sources(
    sources: list[ModelSource],
    engine: str,
    image: Path,
    *,
    threads: int,
    size: tuple[int, int],
    progress: Callable[[str], None] | None = None,
) -> list[ModelSource]:
    """Sources rewritten for ``engine`` (int8 dirs made, untuned models tuned); failures mark the row."""
    if engine != "auto" and engine not in VARIANT_ENGINES:
        return sources
    out: list[ModelSource] = []
    for src in sources:
        if src.error:
            out.append(src)
            continue
        try:
            out.append(_prepare(src, engine, image, threads=threads, size=size, progress=progress))
        except Exception as exc:  # noqa: BLE001 - one model failing must not lose a long run
            out.append(replace(src, error=f"{engine}: {type(exc).__name__}: {exc}"))
    return out


def _prepare(
    src: ModelSource, engine: str, image: Path, *, threads: int, size: tuple[int, int],
    progress: Callable[[str], None] | None,
) -> ModelSource:
    if engine == "auto":
        from fastseg.engines.tuning import recorded_choice
        from fastseg.precision.tune import tune

        if recorded_choice(src.onnx_dir).reason.startswith("tuned"):
            return src
        if progress:
            progress(f"tuning {src.name}")
        tune(src.onnx_dir, size=size, threads=threads, runs=3, warmup=1, image=image)
        return src
    from fastseg.precision.quantize import QuantPrecision, quantize_model

    precision, gate_engine = VARIANT_ENGINES[engine]
    reference = src.weights == REFERENCE_WEIGHTS_LABEL
    target = src.onnx_dir.parent / f"{src.onnx_dir.name}-{precision}-bench"
    if progress:
        progress(f"{precision} {src.name} ({'ungated: reference weights' if reference else 'gated'})")
    gate = _reusable_gate(src.onnx_dir, target, precision)
    if gate is None:
        with tempfile.TemporaryDirectory(prefix="fastseg-calib-") as tmp:
            gate = quantize_model(
                src.onnx_dir, calibration_dir(image, Path(tmp)), target, precision=cast(QuantPrecision, precision),
                engine=gate_engine, min_agreement=0.0 if reference else 99.0, augment=not reference, force=True,
                register=not reference,
            )
    return replace(src, onnx_dir=target, weights=f"{src.weights}, {gate.label}")


def _reusable_gate(fp32_dir: Path, variant_dir: Path, precision: str) -> GateRecord | None:
    """The gate of a bench variant already made from this very fp32 model (newer than it), else None."""
    from fastseg.model_dir import ONNX_FILE, is_model_dir, read_meta

    if not is_model_dir(variant_dir) or (variant_dir / ONNX_FILE).stat().st_mtime < (fp32_dir / ONNX_FILE).stat().st_mtime:
        return None
    meta = read_meta(variant_dir)
    if meta.gate is None or meta.precision != precision or meta.provenance.get("quantized_from") != str(fp32_dir.resolve()):
        return None
    return meta.gate
