"""Which run mode PaddleX's CPU predictor uses for a model, so bench compares against PaddleX as shipped.

PaddleX picks its CPU run mode per model: ``mkldnn`` (oneDNN) unless the model is on its
``MKLDNN_BLOCKLIST``, then plain ``paddle`` (``get_default_run_mode`` in
``paddlex/inference/models/runners/paddle_static/config/pp_option.py``). Its runner also turns an
explicit ``mkldnn*`` request for a blocklisted model into ``paddle``
(``PaddleStaticRunner._check_run_mode`` in ``.../paddle_static/runner.py``) unless
``PADDLE_PDX_DISABLE_MKLDNN_MODEL_BL`` is set. The bench worker reads both from the installed
PaddleX (``paddlex_policy``); the mirror below is used only when those names are not there.

``mkldnn_bf16`` is bf16 only where Paddle says so: ``AnalysisConfig::EnableMkldnnBfloat16``
turns bf16 off on a CPU without oneDNN's ``avx512_core`` (AVX512 F, BW, VL and DQ; it logs "CPU
does not support BFLOAT16 calculations") and emulates it without ``avx512_bf16``. The row's label
says which (``paddle_bf16_note``), so a PaddleX "bf16" column is never fp32 in disguise.
Standard library only: this runs in PaddleX's interpreter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

PADDLE_AVX512_CORE: tuple[str, ...] = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
"""The /proc/cpuinfo flags behind oneDNN's ``avx512_core``, which Paddle's bf16 requires."""

# The segmentation models on PaddleX 3.7.2's MKLDNN_BLOCKLIST
# (paddlex/inference/models/runners/paddle_static/config/blocklists.py); the fallback when the
# installed PaddleX does not expose the list.
MIRRORED_MKLDNN_BLOCKLIST: frozenset[str] = frozenset({"MaskFormer_tiny", "MaskFormer_small"})


@dataclass(frozen=True)
class PaddlexPolicy:
    """PaddleX's CPU run-mode rules: its default per model, its oneDNN blocklist, and where they came from."""

    default_mode: Callable[[str], str]
    blocklist: Collection[str]
    blocklist_disabled: bool
    source: str


@dataclass(frozen=True)
class RunMode:
    """The mode bench asks PaddleX for and the one PaddleX runs (they differ when PaddleX refuses)."""

    requested: str
    runs: str
    note: str = ""

    def label(self) -> str:
        """``paddle``, ``mkldnn``, or ``paddle (mkldnn_bf16 refused: ...)``."""
        return self.runs if not self.note else f"{self.runs} ({self.note})"


def mirrored_policy(mkldnn_available: bool = True) -> PaddlexPolicy:
    """PaddleX 3.7.2's rules, mirrored (``MIRRORED_MKLDNN_BLOCKLIST``)."""

    def default(name: str) -> str:
        return "mkldnn" if mkldnn_available and name not in MIRRORED_MKLDNN_BLOCKLIST else "paddle"

    return PaddlexPolicy(default, MIRRORED_MKLDNN_BLOCKLIST, False, "mirrored from PaddleX 3.7.2 blocklists.py")


def paddlex_policy() -> PaddlexPolicy:
    """The installed PaddleX's own rules; the mirror when it does not expose them."""
    try:
        from paddlex.inference.models.runners.paddle_static.config import (
            MKLDNN_BLOCKLIST,
            get_default_run_mode,
        )
        from paddlex.utils.flags import DISABLE_MKLDNN_MODEL_BL
    except ImportError:
        return mirrored_policy()
    return PaddlexPolicy(
        lambda name: str(get_default_run_mode(name, "cpu")),
        frozenset(MKLDNN_BLOCKLIST),
        bool(DISABLE_MKLDNN_MODEL_BL),
        "read from the installed PaddleX",
    )


def paddle_bf16_note(cpu_flags: Collection[str]) -> str:
    """What Paddle's ``mkldnn_bf16`` computes on a CPU with ``cpu_flags``: "" when native bf16."""
    if not all(flag in cpu_flags for flag in PADDLE_AVX512_CORE):
        return "ran fp32: Paddle's bf16 needs avx512_core"
    if "avx512_bf16" not in cpu_flags:
        return "bf16 emulated: no avx512_bf16"
    return ""


def choose_run_mode(
    model_name: str, requested: str | None, policy: PaddlexPolicy, cpu_flags: Collection[str] | None = None
) -> RunMode:
    """The run mode for ``model_name``: PaddleX's default when ``requested`` is None.

    An ``mkldnn*`` request for a blocklisted model runs ``paddle``, as PaddleX's runner does.
    With ``cpu_flags`` (/proc/cpuinfo; None: unknown, no note), an ``mkldnn_bf16`` that Paddle
    runs as fp32 or emulates is noted as such.
    """
    asked = requested or policy.default_mode(model_name)
    if asked.startswith("mkldnn") and model_name in policy.blocklist and not policy.blocklist_disabled:
        return RunMode(asked, "paddle", f"{asked} refused: PaddleX's MKLDNN_BLOCKLIST")
    if asked == "mkldnn_bf16" and cpu_flags is not None:
        return RunMode(asked, asked, paddle_bf16_note(cpu_flags))
    return RunMode(asked, asked)
