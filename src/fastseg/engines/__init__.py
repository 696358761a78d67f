"""Inference engines behind one session interface.

An engine turns ``model.onnx`` into a session with ``run(batch_nchw) -> output``, ``close()``,
``providers`` and a ``runner`` (its ``lock`` and ``mode``), which is all ``Segmenter``'s run
loop uses; the part every engine shares is ``fastseg.engines.session_base.SessionBase``. Two engines exist:

- ``ort``: ONNX Runtime (``fastseg.engines.ort``), every device string (CPU, CUDA, TensorRT, CANN,
  ONNX Runtime's own OpenVINO provider when that build is installed).
- ``openvino``: OpenVINO's runtime (``fastseg.engines.openvino``) on the same ``model.onnx``.

``auto`` is resolved per model directory from the ``fastseg tune`` record
(``fastseg.engines.tuning``); a precision (fp32, int8, bf16, int8-bf16) is a model directory, not an
engine: its ``fastseg.json`` says which, and bf16 and int8-bf16 directories run on OpenVINO only.

Also here: ``device`` (device strings), ``cpu`` (the instruction sets that decide precision
speed), ``gpu_libs`` (CUDA libraries for onnxruntime-gpu), ``session_base`` (what every
session shares).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fastseg.errors import DeviceError
from fastseg.engines.device import DeviceSpec, parse_device
from fastseg.engines.session_base import Batch, CancelToken, TensorInfo
from fastseg.engines.ort import RuntimeOptions, create_session
from fastseg.engines.preprocess_graph import FusedPreprocess
from fastseg.model_dir import BF16_PRECISIONS

ENGINES: tuple[str, ...] = ("ort", "openvino")
ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINES)
BF16_ENGINE_HINT = (
    "A bf16 or int8-bf16 model directory runs on OpenVINO only (ONNX Runtime has no bf16 CPU kernels): use "
    "engine 'auto' or 'openvino' (--engine openvino) on cpu, or the fp32 model directory for ONNX Runtime."
)


class RunnerLike(Protocol):
    """What the run loop needs from a session's runner: a lock, its mode, and whether ``run``
    returns a buffer the next run overwrites (then the caller holds ``lock`` until it has
    consumed the output)."""

    @property
    def lock(self) -> Any: ...

    @property
    def mode(self) -> str: ...

    @property
    def reuses_output(self) -> bool: ...


class EngineSession(Protocol):
    """The session interface every engine implements."""

    model_path: Path
    device: DeviceSpec
    providers: list[str]
    precision: str
    fused_preprocess: bool

    @property
    def engine(self) -> str: ...

    @property
    def runner(self) -> RunnerLike: ...

    @property
    def inputs(self) -> tuple[TensorInfo, ...]: ...

    @property
    def outputs(self) -> tuple[TensorInfo, ...]: ...

    def run(self, batch_nchw: Batch, cancel: CancelToken | None = None) -> npt.NDArray[Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> EngineSession: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def check_engine(engine: str) -> str:
    """Validate an engine name (``auto`` included).

    Raises:
        DeviceError: not one of ``ENGINE_CHOICES``.
    """
    if engine not in ENGINE_CHOICES:
        raise DeviceError(f"Unknown engine {engine!r}; use one of {', '.join(ENGINE_CHOICES)}.")
    return engine


def available_engines() -> list[str]:
    """Engines that can run on this machine's CPU (OpenVINO only when installed)."""
    from fastseg.engines.openvino import openvino_version

    return ["ort"] + (["openvino"] if openvino_version() else [])


def engine_for_device(engine: str, spec: DeviceSpec) -> str:
    """The concrete engine for an explicit ``engine`` (not ``auto``) on ``spec``.

    ``openvino[:T]`` device strings mean the OpenVINO engine when the ``openvino`` package is
    installed; without it they stay on ONNX Runtime, whose OpenVINO provider (the
    ``onnxruntime-openvino`` build) is then required.
    """
    check_engine(engine)
    if engine == "auto":
        raise DeviceError("engine='auto' is resolved from a model directory's tuning record first.")
    if spec.kind == "openvino":
        from fastseg.engines.openvino import openvino_version

        return "openvino" if openvino_version() else "ort"
    return engine


def open_session(
    model_path: Path | str,
    device: str | DeviceSpec = "cpu",
    options: RuntimeOptions | None = None,
    *,
    engine: str = "ort",
    allow_fallback: bool = False,
    precision: str = "fp32",
    fused: FusedPreprocess | None = None,
) -> EngineSession:
    """A session for ``model_path`` on ``device`` with ``engine`` (``ort`` or ``openvino``)
    computing in ``precision`` (the model directory's: ``fp32``, ``int8``, ``bf16`` or ``int8-bf16``);
    ``fused`` prepends the pre-processing, so ``run`` takes uint8 BGR NHWC images.

    Raises:
        DeviceError: bf16 or int8-bf16 on an engine other than OpenVINO, or on a CPU without bf16.
        MissingDependencyError, ModelDirError: as the engine's factory does.
    """
    spec = device if isinstance(device, DeviceSpec) else parse_device(device)
    concrete = engine_for_device(engine, spec)
    if precision in BF16_PRECISIONS and concrete != "openvino":
        raise DeviceError(BF16_ENGINE_HINT)
    if concrete == "openvino":
        from fastseg.engines.openvino import create_openvino_session

        return create_openvino_session(model_path, spec, options, precision=precision, fused=fused)
    return create_session(model_path, spec, options, allow_fallback=allow_fallback, fused=fused)
