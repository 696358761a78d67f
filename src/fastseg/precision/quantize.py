"""``fastseg quantize``: a reduced-precision model directory, written only if it passes its gate.

``int8`` (the default) is calibrated on the user's images (``fastseg.precision.int8``).
``bf16`` is the fp32 graph run by OpenVINO with bf16 as its inference precision (AMX tiles or
AVX512-BF16): nothing to calibrate, so the directory holds the same ``model.onnx`` and a
``fastseg.json`` that says bf16; it runs as bf16 wherever a model directory is accepted, and is
refused (nothing written) on a CPU without bf16 instructions. ``int8-bf16`` is OpenVINO's mixed
precision: the calibrated int8 graph, with bf16 instead of fp32 wherever it is not quantized
(the head, resizes, the layers that feed no quantized one); OpenVINO and bf16 CPUs only, as bf16.

Either way the gate (``fastseg.precision.gate``) runs fp32 and the new precision on held-out
images with the same engine: pooled agreement and a per-image floor; below either nothing is
written. ``min_agreement=0`` writes an ungated model, marked UNGATED wherever it is shown. The
output is staged beside ``out_dir`` (``tempdirs.staged_dir``: an existing ``out_dir`` stays
whole until the new one is swapped in atomically; a killed run's stage is swept by the next),
and registered in the fp32
directory's ``variants.json`` for ``fastseg tune``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Literal

from fastseg.engines import check_engine
from fastseg.engines.cpu import require_bf16
from fastseg.engines.tuning import register_variant
from fastseg.errors import InputError, ModelDirError
from fastseg.model_dir import BF16_PRECISIONS, ONNX_FILE, REDUCED_PRECISIONS, GateRecord, ModelMeta, read_meta, write_meta
from fastseg.precision.gate import (
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_IMAGE_AGREEMENT,
    check_thresholds,
    gate_record,
    image_files,
    label_agreement,
    passed,
    refuse,
    split_images,
)
from fastseg.precision.int8 import CalibrationSet, quantize_onnx, weight_format
from fastseg.segmenter import Segmenter
from fastseg.tempdirs import staged_dir

log = logging.getLogger(__name__)

QuantPrecision = Literal["int8", "bf16", "int8-bf16"]
QUANT_PRECISIONS: tuple[str, ...] = REDUCED_PRECISIONS
DEFAULT_ENGINE = {"int8": "ort", "bf16": "openvino", "int8-bf16": "openvino"}
UNTRAINED_ADVICE = (
    "These are UNTRAINED reference weights (random): their labels are near-ties everywhere, so no "
    "number of calibration images will make a gate pass; gate a trained model, or pass "
    "--min-agreement 0 (Python: min_agreement=0) for an ungated speed-only model (marked UNGATED)."
)


def quantize_model(
    model_dir: Path,
    calib_dir: Path | None,
    out_dir: Path,
    *,
    precision: QuantPrecision = "int8",
    engine: str | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    min_image_agreement: float = DEFAULT_MIN_IMAGE_AGREEMENT,
    val_dir: Path | None = None,
    max_side: int | None = 1024,
    method: str = "percentile",
    augment: bool = True,
    force: bool = False,
    register: bool = True,
) -> GateRecord:
    """Write ``model_dir`` in ``precision`` to ``out_dir`` if it keeps enough of fp32's labels.

    Args:
        model_dir: a converted fp32 model directory.
        calib_dir: images like the ones the model will see: int8 and int8-bf16 calibrate on
            them (>= 2 without ``val_dir``); bf16 needs no calibration and gates on them when
            ``val_dir`` is not given.
        out_dir: the new model directory (a normal one: Segmenter, predict, serve, bench load it).
        precision: ``int8``, ``bf16`` or ``int8-bf16``.
        engine: the engine the gate runs both models on (int8: ``ort`` or ``openvino``,
            default ``ort``; bf16 and int8-bf16: ``openvino``, the engine that computes them).
        min_agreement: pooled % of held-out pixels whose label must equal fp32's; 0 = ungated.
        min_image_agreement: the floor every single held-out image must reach.
        val_dir: held-out images; int8 default: every 4th calibration image, held out.
        max_side: images larger than this are downscaled (area) first when the model has no
            Resize of its own, bounding gate and calibration time; None = full size.
        method: int8(-bf16) calibration: ``percentile`` (99.99th), ``minmax`` or ``entropy``.
        augment: int8(-bf16): also calibrate on each image's mirror and 0.8x/1.2x brightness.
        force: replace an existing ``out_dir``.
        register: list the variant in ``model_dir``'s ``variants.json`` for ``fastseg tune``.

    Raises:
        QuantizationGateError: below the gate (nothing written); DeviceError: bf16 or int8-bf16
        on a CPU without bf16 instructions (nothing written); InputError, ModelDirError.
    """
    if precision not in QUANT_PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; use one of {', '.join(QUANT_PRECISIONS)}.")
    engine = _gate_engine(precision, engine)
    check_thresholds(min_agreement, min_image_agreement)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = read_meta(model_dir)
    _check_paths(model_dir, meta, out_dir, force=force)
    if precision in BF16_PRECISIONS:
        require_bf16(precision=precision)
    if precision == "bf16":
        calib: list[Path] = []
        val = _bf16_gate_images(calib_dir, val_dir, gated=min_agreement > 0)
    else:
        if calib_dir is None:
            raise InputError(f"{precision} needs calibration images: pass --calib DIR (images like the ones the model will see).")
        calib, val = split_images(image_files(calib_dir), None if val_dir is None else image_files(val_dir))
    with staged_dir(out_dir) as staging:  # 0755 once complete: a shared model directory
        fmt, calibration = _write_model(precision, model_dir, staging, meta, calib, max_side, method, augment)
        figures: tuple[float, float, str] = (0.0, 0.0, "")  # nothing measured: the record says val_images 0
        draft = replace(meta, precision=precision, gate=gate_record(
            precision, engine, figures, val_images=0, min_agreement=0, min_image_agreement=0))
        write_meta(staging, draft)  # the gate's Segmenter needs a model dir; the real gate is written below
        if val:
            log.info("Gating %s on %d held-out image(s) with %s", precision, len(val), engine)
            with Segmenter(model_dir, engine=engine) as fp32, Segmenter(staging, engine=engine) as reduced:
                figures = label_agreement(fp32, reduced, val, max_side)
        record = gate_record(
            precision, engine, figures, val_images=len(val), min_agreement=min_agreement,
            min_image_agreement=min_image_agreement, calib_images=len(calib), format=fmt, calibration=calibration,
        )
        if not passed(record):
            raise refuse(record, advice=_advice(meta, precision))
        provenance = {**meta.provenance, "quantized_from": str(model_dir.resolve())}
        write_meta(staging, replace(meta, provenance=provenance, precision=precision, gate=record))
    if register:
        register_variant(model_dir, out_dir, {"precision": precision, "gated": record.gated, "agreement_pct": record.agreement_pct})
    return record


def _gate_engine(precision: str, engine: str | None) -> str:
    engine = engine or DEFAULT_ENGINE[precision]
    check_engine(engine)
    if engine == "auto":
        raise InputError("quantize --engine must be ort or openvino (the engine the gate measures).")
    if precision in BF16_PRECISIONS and engine != "openvino":
        raise InputError(f"{precision} runs on OpenVINO only (ONNX Runtime has no bf16 CPU kernels): use --engine openvino or leave it out.")
    return engine


def _check_paths(model_dir: Path, meta: ModelMeta, out_dir: Path, *, force: bool) -> None:
    if meta.precision != "fp32":
        raise ModelDirError(f"{str(model_dir)!r} is already {meta.precision}; quantize its fp32 model instead.")
    if out_dir.exists() and not force:
        raise ModelDirError(f"{str(out_dir)!r} already exists; pass --force to replace it, or choose another -o.")
    if out_dir.resolve() == model_dir.resolve():
        raise ModelDirError("The output must not be the fp32 model directory itself; choose another -o.")


def _bf16_gate_images(calib_dir: Path | None, val_dir: Path | None, *, gated: bool) -> list[Path]:
    """bf16 calibrates nothing: every image given (``--val``, else ``--calib``) is held out."""
    folder = val_dir or calib_dir
    if folder is None:
        if gated:
            raise InputError(
                "The bf16 gate needs images to compare on: pass --val DIR (or --calib DIR), images like "
                "the ones the model will see; or --min-agreement 0 (Python: min_agreement=0) for an ungated model (marked UNGATED)."
            )
        return []
    return image_files(folder)


def _write_model(
    precision: str, model_dir: Path, staging: Path, meta: ModelMeta, calib: list[Path],
    max_side: int | None, method: str, augment: bool,
) -> tuple[str, str]:
    """Write ``staging/model.onnx`` for ``precision``; returns (format, calibration) for the record."""
    if precision == "bf16":
        _link_or_copy(model_dir / ONNX_FILE, staging / ONNX_FILE)
        return "onnx fp32 graph, OpenVINO INFERENCE_PRECISION_HINT=bf16", "none (bf16 needs no calibration)"
    log.info("Calibrating on %d image(s)", len(calib))
    calib_set = CalibrationSet(calib, meta, max_side, augment=augment)
    weights = weight_format()
    used = quantize_onnx(model_dir / ONNX_FILE, staging / ONNX_FILE, calib_set, meta.input_name, method=method,
                         weights=weights)
    rest = ", unquantized layers bf16 (OpenVINO INFERENCE_PRECISION_HINT=bf16)" if precision == "int8-bf16" else ""
    return f"onnx-qdq {weights} per-channel{rest}", used + (" + mirror/brightness" if augment else "")


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows (the graph is identical), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _advice(meta: ModelMeta, precision: str) -> str:
    from fastseg.reference import is_reference

    if is_reference(meta):
        return UNTRAINED_ADVICE
    if precision == "bf16":
        return "Keep the fp32 model for this data, or pass --min-agreement 0 (Python: min_agreement=0) for an ungated model (marked UNGATED)."
    return "Calibrate on more images like your data, or pass --min-agreement 0 (Python: min_agreement=0) for an ungated model (marked UNGATED)."
