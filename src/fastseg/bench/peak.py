"""The theoretical peak of a precision's instructions on this CPU: what ``% peak`` divides by.

peak = cores x clock x operations per core per cycle, where the last factor follows the widest
instructions the CPU has for that precision (2 FLOPs per multiply-add):

| precision | instructions | multiply-adds / core / cycle |
|---|---|---|
| fp32 | AVX-512 (Intel, AMD Zen 5: 2 FMA ports x 16 lanes) / AVX-512 on AMD Zen 4 (2 x 256-bit) / AVX2 (2 x 8) / AVX2 on AMD Zen, Zen+ (2 x 128-bit) | 32 / 16 / 16 / 8 |
| bf16 | AMX-BF16 tiles / AVX512-BF16 (2 per fp32 lane) | 1024 / 2 x fp32 |
| int8 | AMX-INT8 tiles / AVX512-VNNI or AVX-VNNI (4 per lane) / AVX2 (pmaddubsw, 2 per lane) | 2048 / 4 x fp32 / 2 x fp32 |

int8-bf16 (the int8 graph, bf16 where it is not quantized) counts against the int8 peak: its
convolutions, nearly all of the work, are int8.

A VM reports a nominal clock (``cpu MHz``) that turbo exceeds; when a measured fp32 sgemm beats
the fp32 peak at that clock, the clock is raised to the one the sgemm proves, so no figure is
ever above 100%. The sgemm itself is only a note: it measures numpy's BLAS, not the hardware.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fastseg.engines.cpu import cpu_flags, cpu_identity
from fastseg.model_dir import QDQ_PRECISIONS


@dataclass(frozen=True)
class Peak:
    """A precision's theoretical peak and the formula that gave it."""

    precision: str
    gflops: float
    formula: str


def clock_ghz(cpuinfo: Path = Path("/proc/cpuinfo")) -> float | None:
    """The first CPU's ``cpu MHz`` in GHz (the nominal clock under a VM), or None."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        return None
    return None


def fma_pipe_bits(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The width of this CPU's FMA pipes where it is narrower than its widest instructions on
    some AMD cores: Zen and Zen+ (family 23, model < 0x30) split AVX2 over 2x128-bit pipes, Zen 2
    to Zen 4 (family 23 from model 0x30, family 25) run AVX-512 on 2x256-bit pipes; Zen 5 (family
    26) has 512-bit pipes. None elsewhere: the pipes are as wide as the instructions."""
    identity = cpu_identity(cpuinfo)
    if identity is None or identity[0] != "AuthenticAMD" or identity[1] >= 26:
        return None
    _, family, model = identity
    return 128 if family == 23 and model < 0x30 else 256


def macs_per_cycle(precision: str, flags: Iterable[str], *, pipe_bits: int | None) -> tuple[int, str]:
    """Multiply-adds per core per cycle for ``precision`` and the instructions that give them,
    with two FMA ports of ``min(instruction width, pipe_bits)`` bits."""
    have = set(flags)
    isa, isa_bits = ("AVX-512", 512) if "avx512f" in have else ("AVX2", 256) if "avx2" in have else ("SSE/unknown", 128)
    bits = min(isa_bits, pipe_bits or isa_bits)
    fp32 = 2 * bits // 32
    fp32_isa = f"{isa}, 2 FMA ports" if bits == isa_bits else f"{isa} on 2x{bits}-bit pipes"
    if precision == "bf16":
        if "amx_bf16" in have:
            return 1024, "AMX-BF16 tiles"
        if "avx512_bf16" in have:
            return 2 * fp32, "AVX512-BF16"
    if precision in QDQ_PRECISIONS:
        if "amx_int8" in have:
            return 2048, "AMX-INT8 tiles"
        if "avx512_vnni" in have or "avx_vnni" in have:
            return 4 * fp32 if "avx512_vnni" in have else 4 * min(fp32, 16), "VNNI"
        return 2 * fp32, f"{isa} (no VNNI)" + ("" if bits == isa_bits else f" on 2x{bits}-bit pipes")
    return fp32, fp32_isa


def theoretical_peak(
    precision: str,
    cores: int,
    *,
    flags: Iterable[str] | None = None,
    ghz: float | None = None,
    pipe_bits: int | None = None,
    sgemm_gflops: float | None = None,
) -> Peak:
    """``precision``'s peak on ``cores`` cores of this CPU (arguments default to this machine;
    ``pipe_bits``: the FMA pipes' width, default ``fma_pipe_bits()``)."""
    flags = cpu_flags() if flags is None else flags
    pipes = fma_pipe_bits() if pipe_bits is None else pipe_bits
    ghz = clock_ghz() if ghz is None else ghz
    clock_note = "cpu MHz"
    fp32_macs, _ = macs_per_cycle("fp32", flags, pipe_bits=pipes)
    if ghz is None:
        ghz, clock_note = 2.0, "clock unknown, 2.0 GHz assumed"
    if sgemm_gflops is not None and sgemm_gflops > cores * ghz * fp32_macs * 2:
        ghz, clock_note = sgemm_gflops / (cores * fp32_macs * 2), "clock raised to what the fp32 sgemm proves"
    macs, isa = macs_per_cycle(precision, flags, pipe_bits=pipes)
    gflops = cores * ghz * macs * 2
    return Peak(precision, gflops, f"{cores} cores x {ghz:.2f} GHz ({clock_note}) x {macs} {precision} MAC/cycle ({isa}) x 2")
