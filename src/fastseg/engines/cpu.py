"""What this CPU can compute fast: the instruction sets that decide which precision pays.

Precision speed follows the silicon, not the model: bf16 runs on AMX tiles (Intel Xeon 4th
generation and later) or AVX512-BF16 (AMD Zen 4, Intel Cooper Lake), int8 on AMX-INT8, VNNI or
plain AVX2. The flags come from ``/proc/cpuinfo`` (Linux); elsewhere none are known and bf16
is not offered. ``tune``'s fingerprint records them so a timing made on one CPU family is never
applied on another.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from pathlib import Path

from fastseg.errors import DeviceError

PRECISION_FLAGS: tuple[str, ...] = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx2")
"""The flags that decide bf16/int8 speed, in the order they are reported."""
BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
"""Either one gives OpenVINO native bf16 kernels; without both it would silently compute f32."""


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags (empty when ``cpuinfo`` is unreadable, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model(cpuinfo: Path | None = None) -> str:
    """The CPU's marketing name: ``model name`` in ``cpuinfo`` (default ``/proc/cpuinfo``); without
    one, ``platform.processor()`` for this machine, "unknown CPU" for a file that lacks it."""
    try:
        for line in (cpuinfo or Path("/proc/cpuinfo")).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    this_machine = (platform.processor() or platform.machine()) if cpuinfo is None else ""
    return this_machine or "unknown CPU"


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, int, int] | None:
    """The first CPU's ``(vendor_id, cpu family, model)`` from x86 ``/proc/cpuinfo``, else None."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                break  # the first CPU's block ends at its blank line
            if key.strip() in ("vendor_id", "cpu family", "model"):
                fields.setdefault(key.strip(), value.strip())
        return fields.get("vendor_id", "unknown vendor"), int(fields["cpu family"]), int(fields["model"])
    except (OSError, KeyError, ValueError):
        return None


def cpu_generation(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """``<vendor> family <F> model <M>`` of the first CPU (x86 ``/proc/cpuinfo``), else "".

    A VM often reports a generic ``model name`` ("AMD EPYC" on Zen 1, Zen 4 and Zen 5 alike), and
    Zen 1 and Zen 3 share their precision flags (avx2 only) while their speeds differ: the family
    and model tell such generations apart (Zen 3 is family 25 model 1, Zen 4 family 25 model 17).
    """
    identity = cpu_identity(cpuinfo)
    return "" if identity is None else f"{identity[0]} family {identity[1]} model {identity[2]}"


def cpu_description(cpuinfo: Path | None = None) -> str:
    """``<model name>: <precision flags>``, e.g. ``AMD EPYC: avx512_bf16 avx512_vnni avx_vnni avx2``
    (``cpuinfo`` default: this machine's ``/proc/cpuinfo``)."""
    flags = precision_flags(None if cpuinfo is None else cpu_flags(cpuinfo))
    return f"{cpu_model(cpuinfo)}: {' '.join(flags) if flags else 'none of ' + ', '.join(PRECISION_FLAGS)}"


def precision_flags(flags: Iterable[str] | None = None) -> tuple[str, ...]:
    """The subset of ``PRECISION_FLAGS`` this CPU has (``flags`` default: ``cpu_flags()``)."""
    have = set(cpu_flags() if flags is None else flags)
    return tuple(f for f in PRECISION_FLAGS if f in have)


def has_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU has bf16 instructions (AMX or AVX512-BF16)."""
    return any(f in BF16_FLAGS for f in precision_flags(flags))


INT8_DOT_FLAGS: tuple[str, ...] = ("amx_int8", "avx512_vnni", "avx_vnni")
"""Instructions that multiply uint8 by int8 into 32-bit sums; without them x86 uses
(v)pmaddubsw, whose 16-bit pair sums saturate."""


def int8_weights_saturate(flags: Iterable[str] | None = None) -> bool:
    """True on an x86 CPU without VNNI or AMX-INT8 (``flags`` default: ``cpu_flags()``), where
    ONNX Runtime's uint8 x int8 kernels add products in saturating 16-bit pairs: ONNX
    Runtime's quantization guide advises the U8U8 format there (no saturation)."""
    have = set(cpu_flags() if flags is None else flags)
    x86 = "sse4_1" in have or "avx2" in have
    return x86 and not any(f in have for f in INT8_DOT_FLAGS)


def require_bf16(flags: Iterable[str] | None = None, *, precision: str = "bf16") -> None:
    """Refuse ``precision`` (bf16, or int8-bf16) on a CPU without bf16 instructions, naming what
    is missing and what it has.

    Raises:
        DeviceError: neither amx_bf16 nor avx512_bf16 is present.
    """
    if has_bf16(flags):
        return
    present = ", ".join(precision_flags(flags)) or "none"
    raise DeviceError(
        f"{precision} needs a CPU with AMX or AVX512-BF16 ({' or '.join(BF16_FLAGS)} in /proc/cpuinfo); this CPU has neither "
        f"(its precision flags: {present}). Use the fp32 model, or int8 ('fastseg quantize --precision int8')."
    )
