"""Which engine and precision run a model directory: the ``fastseg tune`` record.

``fastseg tune`` times every engine x precision on this machine and writes ``tuning.json``
into the model directory with a machine fingerprint. ``engine="auto"`` uses its winner when the
fingerprint matches this machine (CPU, cores, engine versions and the instruction sets that
decide precision speed: a record made on an AMX Xeon is never applied on a Zen 4), else ONNX
Runtime fp32. A missing record is normal (info log); a corrupt or foreign one falls back with a
warning, never an exception. int8 and bf16 variants are listed in ``variants.json`` by
``fastseg quantize`` (only gated ones are candidates); a record's winner must be this
directory or one of its registered variants made from it, so a model directory can never
redirect to another model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastseg.engines import BF16_ENGINE_HINT, ENGINES, check_engine
from fastseg.engines.cpu import cpu_generation, cpu_model, precision_flags
from fastseg.engines.openvino import openvino_version
from fastseg.errors import DeviceError
from fastseg.files import write_text_atomic
from fastseg.model_dir import BF16_PRECISIONS, is_model_dir, read_meta
from fastseg.engines.device import DeviceSpec, physical_cores

log = logging.getLogger(__name__)

TUNING_FILE = "tuning.json"
VARIANTS_FILE = "variants.json"
TUNING_VERSION = 2


@dataclass(frozen=True)
class EngineChoice:
    """What runs: an engine on a model directory (the fp32 one or an int8 variant)."""

    engine: str
    model_dir: Path
    precision: str
    reason: str


def machine_fingerprint() -> dict[str, Any]:
    """What a timing depends on: CPU (name and generation), its precision instruction sets, core
    counts and engine versions."""
    import onnxruntime as ort

    return {
        "cpu": cpu_model(),
        "cpu_generation": cpu_generation(),
        "isa": list(precision_flags()),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count() or 1,
        "onnxruntime": ort.__version__,
        "openvino": openvino_version(),
    }


def precision_of(model_dir: Path) -> str:
    """The precision ``model_dir``'s ``fastseg.json`` declares: ``fp32``, ``int8``, ``bf16`` or ``int8-bf16``."""
    return read_meta(model_dir).precision


def read_variants(model_dir: Path) -> list[dict[str, Any]]:
    """The int8/bf16/int8-bf16 variants ``fastseg quantize`` registered for ``model_dir`` (still present ones)."""
    path = Path(model_dir) / VARIANTS_FILE
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = [dict(v) for v in raw["variants"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring %s: %s", path, exc)
        return []
    return [v for v in entries if is_model_dir(Path(str(v.get("path", ""))))]


def register_variant(model_dir: Path, variant_dir: Path, gate: dict[str, Any]) -> bool:
    """Add ``variant_dir`` to ``model_dir``'s ``variants.json``; False when it is read-only."""
    entries = [v for v in read_variants(model_dir) if Path(v["path"]).resolve() != Path(variant_dir).resolve()]
    entries.append({"path": str(Path(variant_dir).resolve()), **gate})
    try:
        write_text_atomic(Path(model_dir) / VARIANTS_FILE, json.dumps({"variants": entries}, indent=2) + "\n")
    except OSError as exc:
        log.warning("Could not register %s in %s (%s); pass it to 'fastseg tune --variant'.", variant_dir, model_dir, exc)
        return False
    return True


def write_record(model_dir: Path, winner: EngineChoice, table: list[dict[str, Any]], conditions: dict[str, Any]) -> Path:
    """Write ``tuning.json``: the winner, every timing, the conditions and this machine's fingerprint."""
    record = {
        "tuning_version": TUNING_VERSION,
        "fingerprint": machine_fingerprint(),
        "conditions": conditions,
        # "." = this directory, so a copied or shipped model dir (Ray workers) keeps its fp32 winner
        "winner": {**asdict(winner), "model_dir": _relative_winner(model_dir, winner.model_dir)},
        "table": table,
    }
    target = Path(model_dir) / TUNING_FILE
    write_text_atomic(target, json.dumps(record, indent=2) + "\n")
    return target


def _relative_winner(model_dir: Path, winner_dir: Path) -> str:
    same = Path(winner_dir).resolve() == Path(model_dir).resolve()
    return "." if same else str(Path(winner_dir).resolve())


def _fp32(model_dir: Path, engine: str, reason: str) -> EngineChoice:
    return EngineChoice(engine=engine, model_dir=Path(model_dir), precision="fp32", reason=reason)


def recorded_choice(model_dir: Path) -> EngineChoice:
    """The tuned winner for ``model_dir`` on this machine, or ONNX Runtime fp32 with the reason.

    Never raises for a bad record: a corrupt, foreign or stale one logs a warning.
    """
    path = Path(model_dir) / TUNING_FILE
    if not path.is_file():
        return _fp32(model_dir, "ort", f"no {TUNING_FILE} (run 'fastseg tune {model_dir}')")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("tuning_version") != TUNING_VERSION:
            raise ValueError(f"unknown tuning_version {raw.get('tuning_version') if isinstance(raw, dict) else raw!r}")
        fingerprint = dict(raw["fingerprint"])
        win = dict(raw["winner"])
        engine = check_engine(str(win["engine"]))
        if engine not in ENGINES:
            raise ValueError(f"winner engine {engine!r}")
        winner_dir = Path(model_dir) if win["model_dir"] == "." else Path(str(win["model_dir"]))
        precision = str(win["precision"])
    except Exception as exc:  # noqa: BLE001 - any damage to the record means "not tuned"
        log.warning("Ignoring %s (%s); running ONNX Runtime. Re-run 'fastseg tune %s'.", path, exc, model_dir)
        return _fp32(model_dir, "ort", f"unreadable {TUNING_FILE}")
    here = machine_fingerprint()
    differs = sorted(k for k in here if fingerprint.get(k) != here[k])
    if differs:
        log.warning(
            "%s was tuned on another machine or engine version (%s differ); running ONNX Runtime. "
            "Re-run 'fastseg tune %s'.", path, ", ".join(differs), model_dir,
        )
        return _fp32(model_dir, "ort", f"tuned elsewhere ({', '.join(differs)} differ)")
    if engine == "openvino" and here["openvino"] is None:
        return _fp32(model_dir, "ort", "tuned winner is OpenVINO, which is not installed")
    if not is_model_dir(winner_dir):
        log.warning("%s names %s, which is no longer a model directory; running ONNX Runtime. Re-run 'fastseg tune %s'.",
                    path, winner_dir, model_dir)
        return _fp32(model_dir, "ort", "tuned variant is missing")
    if not is_own_variant(model_dir, winner_dir):
        log.warning(
            "%s names %s, which is not this model directory nor a variant quantized from it; running ONNX Runtime. "
            "Re-run 'fastseg tune %s'.", path, winner_dir, model_dir,
        )
        return _fp32(model_dir, "ort", "tuned winner is not this model's variant")
    if read_meta(winner_dir).precision != precision:
        log.warning("%s says %s but %s is %s; running ONNX Runtime. Re-run 'fastseg tune %s'.",
                    path, precision, winner_dir, read_meta(winner_dir).precision, model_dir)
        return _fp32(model_dir, "ort", "tuned winner's precision changed")
    return EngineChoice(engine=engine, model_dir=winner_dir, precision=precision, reason=f"tuned ({TUNING_FILE})")


def is_own_variant(model_dir: Path, candidate: Path) -> bool:
    """True for ``model_dir`` itself, or a variant registered in its ``variants.json`` whose
    metadata says it was quantized from ``model_dir`` (both must agree)."""
    model_dir, candidate = Path(model_dir).resolve(), Path(candidate).resolve()
    if candidate == model_dir:
        return True
    registered = {Path(str(v["path"])).resolve() for v in read_variants(model_dir)}
    if candidate not in registered:
        return False
    return str(read_meta(candidate).provenance.get("quantized_from", "")) == str(model_dir)


def choose_engine(model_dir: Path, requested: str, device: DeviceSpec) -> EngineChoice:
    """Resolve ``requested`` (``auto``/``ort``/``openvino``) for ``model_dir`` on ``device``.

    ``auto`` consults the tuning record only on a plain CPU device; accelerators keep the
    engine their device string implies (ONNX Runtime's providers, or OpenVINO for
    ``openvino:*``).
    """
    check_engine(requested)
    model_dir = Path(model_dir)
    precision = precision_of(model_dir)
    if precision in BF16_PRECISIONS:  # bf16 is OpenVINO's CPU precision; no other engine computes it
        if requested == "ort" or device.kind not in ("cpu", "openvino"):
            raise DeviceError(BF16_ENGINE_HINT)
        return EngineChoice("openvino", model_dir, precision, f"{precision} model directory")
    if requested != "auto":
        return EngineChoice(requested, model_dir, precision, "asked for")
    if device.kind == "openvino":
        return EngineChoice("openvino", model_dir, precision, "device string")
    if device.kind != "cpu":
        return EngineChoice("ort", model_dir, precision, "accelerator device")
    choice = recorded_choice(model_dir)
    return choice if choice.model_dir != model_dir else EngineChoice(choice.engine, model_dir, precision, choice.reason)
