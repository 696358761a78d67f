"""The accuracy gate every reduced precision passes: labels compared with fp32 on held-out images.

Two figures decide, both stated in the refusal and kept in ``fastseg.json`` (``ModelMeta.gate``):
pooled agreement over every held-out pixel (``min_agreement``, default 99%) and a per-image
floor (``min_image_agreement``, default 98.5%): no single held-out image may fall below it. A
pooled figure alone let a calibration pass while one photo kept 98.14% of its labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.engines.cpu import cpu_description
from fastseg.errors import InputError, QuantizationGateError
from fastseg.model_dir import GateRecord, ModelMeta, Precision
from fastseg.processing import IMAGE_SUFFIXES, decode_image

DEFAULT_MIN_AGREEMENT = 99.0
DEFAULT_MIN_IMAGE_AGREEMENT = 98.5


def image_files(folder: Path) -> list[Path]:
    """Images in ``folder`` (recursive, sorted).

    Raises:
        InputError: not a directory, or no images in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a directory of images.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def split_images(calib: Sequence[Path], val: Sequence[Path] | None) -> tuple[list[Path], list[Path]]:
    """(calibration, held-out) images. Without ``val``, every 4th calibration image is held out.

    Raises:
        InputError: too few images, or a validation image that is also a calibration image
            (same file or same content).
    """
    calib = list(calib)
    if val is None:
        if len(calib) < 2:
            raise InputError("Quantization needs >= 2 images to hold one out for the gate; add images or pass --val DIR.")
        held = calib[::4]
        return [p for p in calib if p not in held], held
    digest = {_sha256(p): p for p in calib}
    overlap = [p for p in val if _sha256(p) in digest]
    if overlap:
        raise InputError(
            f"{len(overlap)} --val image(s) are also calibration images (e.g. {str(overlap[0])!r}); "
            "the gate must use held-out images: pass disjoint folders."
        )
    return calib, list(val)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_for_gate(path: Path, meta: ModelMeta, max_side: int | None) -> npt.NDArray[np.uint8]:
    """Decode ``path``; downscale (area) to ``max_side`` when the model has no Resize of its own."""
    import cv2

    img = decode_image(Path(path).read_bytes(), source=repr(str(path)))
    if max_side and meta.preprocess.resize is None and meta.dynamic_hw and max(img.shape[:2]) > max_side:
        scale = max_side / max(img.shape[:2])
        size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
        img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return img


def label_agreement(
    reference: Any, candidate: Any, images: Sequence[Path], max_side: int | None
) -> tuple[float, float, str]:
    """(pooled %, worst image %, the worst image's file name) of pixels where ``candidate``
    predicts ``reference``'s label: the name tells a refused user which photo to look at.

    Both are ``Segmenter``s (passed in, so this module stays below the pipeline's wiring).
    """
    same = total = 0
    worst, worst_image = 100.0, ""
    for path in images:
        img = load_for_gate(path, reference.meta, max_side)
        a = next(iter(reference.predict(img)))["pred"]
        b = next(iter(candidate.predict(img)))["pred"]
        equal = int(np.count_nonzero(a == b))
        same += equal
        total += a.size
        pct = 100.0 * equal / a.size
        if not worst_image or pct < worst:
            worst, worst_image = pct, Path(path).name
    return 100.0 * same / total, worst, worst_image


def check_thresholds(min_agreement: float, min_image_agreement: float) -> None:
    """Both gate figures are percentages.

    Raises:
        InputError: either is outside 0..100.
    """
    for name, value in (("--min-agreement", min_agreement), ("--min-image-agreement", min_image_agreement)):
        if not 0.0 <= value <= 100.0:
            raise InputError(f"{name} must be 0..100, got {value}.")


def passed(record: GateRecord) -> bool:
    """True when ``record`` meets both of its thresholds (an ungated record always passes)."""
    if not record.gated:
        return True
    return record.agreement_pct >= record.min_agreement_pct and record.worst_image_pct >= record.min_image_agreement_pct


def refuse(record: GateRecord, *, advice: str) -> QuantizationGateError:
    """The one-line refusal: both measured figures, both thresholds, and what to do."""
    which = []
    if record.agreement_pct < record.min_agreement_pct:
        which.append(f"pooled {record.agreement_pct:.2f}% < {record.min_agreement_pct:.2f}%")
    if record.worst_image_pct < record.min_image_agreement_pct:
        which.append(f"worst image {record.worst_image_pct:.2f}% < floor {record.min_image_agreement_pct:.2f}%")
    return QuantizationGateError(
        f"{record.precision} keeps {record.agreement_pct:.2f}% of fp32's labels on {record.val_images} held-out "
        f"image(s) with {record.engine}{' on ' + record.cpu if record.cpu else ''} (worst image "
        f"{record.worst_image_pct:.2f}%{worst_name(record)}); gate: pooled >= "
        f"{record.min_agreement_pct:.2f}%, every image >= {record.min_image_agreement_pct:.2f}% "
        f"({'; '.join(which)}): nothing written. {advice}"
    )


def worst_name(record: GateRecord) -> str:
    """``, <file>`` naming the worst held-out image, or nothing for a record without it."""
    return f", {record.worst_image}" if record.worst_image else ""


def gate_record(
    precision: Precision,
    engine: str,
    figures: tuple[float, float, str],
    *,
    val_images: int,
    min_agreement: float,
    min_image_agreement: float,
    calib_images: int = 0,
    format: str = "",
    calibration: str = "",
) -> GateRecord:
    """The record of one gate run from ``label_agreement``'s figures (pooled, worst, worst
    image); ``min_agreement`` 0 means ungated (kept, and marked so)."""
    pooled, worst, worst_image = figures
    return GateRecord(
        precision=precision, engine=engine, gated=min_agreement > 0, agreement_pct=round(pooled, 4),
        worst_image_pct=round(worst, 4), worst_image=worst_image, min_agreement_pct=float(min_agreement),
        min_image_agreement_pct=float(min_image_agreement) if min_agreement > 0 else 0.0,
        val_images=val_images, calib_images=calib_images, format=format, calibration=calibration,
        cpu=cpu_description() if val_images else "",
    )
