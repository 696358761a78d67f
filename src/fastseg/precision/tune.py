"""``fastseg tune``: time every engine x precision for one model on this machine, record the winner.

Candidates: ONNX Runtime and (when installed) OpenVINO on the fp32 model, and on every int8,
bf16 or int8-bf16 variant ``fastseg quantize`` registered that passed its accuracy gate (ungated
ones are never candidates: an ungated model must be chosen by name; bf16 and int8-bf16 run on
OpenVINO only, on a CPU with bf16 instructions). Skipped variants are reported with the reason.
A quantized directory tuned by itself keeps its precision and only its engine is chosen (int8:
ONNX Runtime or OpenVINO; bf16 and int8-bf16: OpenVINO). Each candidate runs in its own worker
process (``fastseg bench``'s), one after another, end to end (read, preprocess, infer, labels
at source size), so the timings are comparable and one engine's threads cannot slow another.
The winner and the whole table go into ``tuning.json`` with this machine's fingerprint;
``Segmenter(engine="auto")`` reads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastseg.engines import available_engines
from fastseg.engines.cpu import has_bf16, require_bf16
from fastseg.engines.tuning import EngineChoice, is_own_variant, read_variants, register_variant, write_record
from fastseg.errors import FastSegError, InputError
from fastseg.model_dir import BF16_PRECISIONS, ModelMeta, is_model_dir, read_meta
from fastseg.tempdirs import scratch_dir

DEFAULT_SIZES = {"Cityscapes": (1024, 2048), "ADE20K": (512, 512)}


@dataclass(frozen=True)
class Candidate:
    """One engine on one model directory."""

    engine: str
    model_dir: Path
    precision: str
    gate: str

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"


@dataclass(frozen=True)
class Timing:
    """A candidate's end-to-end latency (ms, median and p90 of ``runs``), or why it failed."""

    candidate: Candidate
    median_ms: float | None
    p90_ms: float | None
    detail: str = ""
    agreement_pct: float | None = None

    def to_json(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "engine": c.engine,
            "precision": c.precision,
            "model_dir": str(c.model_dir.resolve()),
            "gate": c.gate,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "agreement_with_ort_fp32_pct": self.agreement_pct,
            "detail": self.detail,
        }


def candidates(
    model_dir: Path, engines: Sequence[str] | None = None, variants: Sequence[Path] = (),
) -> tuple[list[Candidate], list[str]]:
    """(every engine that computes it on the fp32 model and on each gated variant, the variants
    skipped with why). int8 runs on every engine; bf16 on OpenVINO, on a CPU with bf16 only.

    Raises:
        InputError: a ``variants`` directory that is ungated or not quantized from ``model_dir``;
            ``variants`` given for a quantized ``model_dir``; a bf16 directory without OpenVINO.
        DeviceError: a bf16 or int8-bf16 ``model_dir`` on a CPU without bf16 instructions.
    """
    engines = list(engines or available_engines())
    model_dir = Path(model_dir)
    own = read_meta(model_dir)
    if own.precision != "fp32":
        if variants:
            raise InputError(
                f"{str(model_dir)!r} is itself a {own.precision} variant: tune the fp32 model directory it was "
                f"quantized from to compare variants ('fastseg tune FP32_DIR --variant ...')."
            )
        return _own_precision_candidates(model_dir, own, engines), []
    out = [Candidate(e, model_dir, "fp32", "fp32") for e in engines]
    skipped: list[str] = []
    for given in map(Path, variants):
        meta = read_meta(given)
        if meta.gate is None or not meta.gate.gated:
            raise InputError(f"{str(given)!r} is not a gated variant ({meta.precision_label}); tune only compares gated ones.")
        if str(meta.provenance.get("quantized_from", "")) != str(model_dir.resolve()):
            raise InputError(f"{str(given)!r} was not quantized from {str(model_dir)!r}; tune compares a model's own variants.")
        register_variant(model_dir, given, {"precision": meta.precision, "gated": True, "agreement_pct": meta.gate.agreement_pct})
    for entry in read_variants(model_dir):
        path = Path(str(entry["path"]))
        meta = read_meta(path)
        why = _skip_reason(model_dir, path, engines)
        if why:
            skipped.append(f"{path} ({meta.precision_label}): {why}")
            continue
        usable = [e for e in engines if meta.precision not in BF16_PRECISIONS or e == "openvino"]
        out.extend(Candidate(e, path, meta.precision, meta.precision_label) for e in usable)
    return out, skipped


def _own_precision_candidates(model_dir: Path, meta: ModelMeta, engines: Sequence[str]) -> list[Candidate]:
    """A quantized directory tuned by itself: its precision on each engine that computes it."""
    if meta.precision in BF16_PRECISIONS:
        if "openvino" not in engines:
            raise InputError(
                f"{str(model_dir)!r} is {meta.precision}, which runs on OpenVINO only, and OpenVINO is not installed "
                "(pip install 'fastseg-ort[openvino]')."
            )
        require_bf16(precision=meta.precision)
        engines = ["openvino"]
    return [Candidate(e, model_dir, meta.precision, meta.precision_label) for e in engines]


def fp32_reference(model_dir: Path) -> Path | None:
    """The fp32 directory candidates' labels are compared with: ``model_dir`` itself, or for a
    quantized one the fp32 directory it was quantized from (None when that is gone)."""
    meta = read_meta(model_dir)
    if meta.precision == "fp32":
        return model_dir
    source = str(meta.provenance.get("quantized_from") or "")
    try:
        if source and is_model_dir(Path(source)) and read_meta(Path(source)).precision == "fp32":
            return Path(source)
    except FastSegError:  # a broken source directory: no reference, the timings still count
        pass
    return None


def _skip_reason(model_dir: Path, path: Path, engines: Sequence[str]) -> str | None:
    """Why a registered variant is not timed here, or None."""
    meta = read_meta(path)
    if meta.gate is None or not meta.gate.gated:
        return "UNGATED: only gated variants are candidates (run it by name)"
    if not is_own_variant(model_dir, path):
        return "not quantized from this model directory"
    if meta.precision in BF16_PRECISIONS and "openvino" not in engines:
        return f"{meta.precision} runs on OpenVINO, which is not installed (pip install 'fastseg-ort[openvino]')"
    if meta.precision in BF16_PRECISIONS and not has_bf16():
        return "this CPU has no bf16 instructions (amx_bf16 / avx512_bf16)"
    return None


def default_size(model_dir: Path) -> tuple[int, int]:
    """The size tune measures at: the zoo dataset's frame size, else 512x512."""
    from fastseg.zoo import load_zoo

    meta = read_meta(model_dir)
    try:
        dataset = load_zoo().get(meta.model_name).dataset.name
    except FastSegError:
        return (512, 512)
    return DEFAULT_SIZES.get(dataset, (512, 512))


def time_candidate(
    c: Candidate, image: Path, *, threads: int, runs: int, warmup: int, timeout_s: float = 1800.0
) -> Timing:
    """End-to-end latency of ``c`` in a fresh worker process (``fastseg bench``'s)."""
    from fastseg.bench.runner import run_worker

    spec = {
        "backend": "fastseg",
        "onnx_dir": str(c.model_dir),
        "device": "cpu",
        "engine": c.engine,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "image": str(image),
        "batch": 1,
        "ort_options": {},
    }
    result = run_worker(spec, python=sys.executable, timeout_s=timeout_s)
    e2e = result.stats.get("e2e")
    if result.status != "ok" or e2e is None:
        return Timing(c, None, None, detail=result.detail or result.status)
    if result.engine not in (None, c.engine):
        return Timing(c, None, None, detail=f"asked for {c.engine}, {result.engine} ran")
    return Timing(c, e2e.median, e2e.p90)


def label_agreements(cands: Sequence[Candidate], image: Path, model_dir: Path, threads: int) -> dict[Candidate, float]:
    """% of the tune image's pixels where each candidate gives ONNX Runtime fp32's label
    (``model_dir``: the fp32 directory). On tune's default synthetic image this says little:
    a smooth picture has few near-tied pixels (the gate's held-out photos are the accuracy check)."""
    import numpy as np

    from fastseg.processing import decode_image
    from fastseg.engines.ort import RuntimeOptions
    from fastseg.segmenter import Segmenter

    img = decode_image(image.read_bytes(), source=str(image))
    options = RuntimeOptions(intra_op_threads=threads)

    def labels(c_dir: Path, engine: str) -> Any:
        with Segmenter(c_dir, engine=engine, options=options) as seg:
            return next(seg.predict(img))["pred"]

    reference = labels(model_dir, "ort")
    return {c: 100.0 * float(np.mean(labels(c.model_dir, c.engine) == reference)) for c in cands}


def tune(
    model_dir: Path,
    *,
    size: tuple[int, int] | None = None,
    threads: int = 2,
    runs: int = 5,
    warmup: int = 1,
    image: Path | None = None,
    engines: Sequence[str] | None = None,
    variants: Sequence[Path] = (),
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Timing], EngineChoice, Path]:
    """Time every candidate, write ``tuning.json`` into ``model_dir``; returns (timings, winner, record).

    Raises:
        FastSegError: no candidate ran (each one's reason in the message).
    """
    from fastseg.bench.models import make_image

    model_dir = Path(model_dir)
    size = size or default_size(model_dir)
    cands, skipped = candidates(model_dir, engines, variants)
    for line in skipped:
        if progress:
            progress(f"skipped {line}")
    timings: list[Timing] = []
    with scratch_dir("tune") as tmp:  # swept by the next run if this one is killed
        img = make_image(tmp / "tune.png", size=size, source=image)
        for c in cands:
            if progress:
                progress(f"timing {c.label} ({c.model_dir})")
            timings.append(time_candidate(c, img, threads=threads, runs=runs, warmup=warmup))
        ran = [t.candidate for t in timings if t.median_ms is not None]
        reference = fp32_reference(model_dir)
        agreement = label_agreements(ran, img, reference, threads) if reference else {}
    timings = [replace(t, agreement_pct=agreement.get(t.candidate)) for t in timings]
    ok = [t for t in timings if t.median_ms is not None]
    if not ok:
        raise FastSegError("No engine ran: " + "; ".join(f"{t.candidate.label}: {t.detail}" for t in timings))
    best = min(ok, key=lambda t: float(t.median_ms or 0.0))
    winner = EngineChoice(best.candidate.engine, best.candidate.model_dir, best.candidate.precision, "tuned")
    conditions = {"size_hw": list(size), "threads": threads, "runs": runs, "warmup": warmup,
                  "image": str(image) if image else "synthetic"}
    record = write_record(model_dir, winner, [t.to_json() for t in timings], conditions)
    return timings, winner, record
