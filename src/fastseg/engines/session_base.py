"""What every engine's session shares: its IO description, ``run`` through its runner, and
the ``with`` lifecycle; an engine supplies the runner, ``close`` and its closed-session check.

ONNX Runtime's ``fastseg.engines.ort.Session`` and OpenVINO's
``fastseg.engines.openvino.OpenVINOSession`` subclass ``SessionBase``, so a new engine is one
more implementation behind the interface ``fastseg.engines.EngineSession`` describes.
Imports nothing from fastseg, onnxruntime or OpenVINO.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt


Batch = npt.NDArray[np.float32] | npt.NDArray[np.uint8]
"""A network batch: float32 [N,3,H,W], or uint8 BGR [N,H,W,3] for a graph that pre-processes."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (ints, or None/str for dynamic dims) and ORT type string of a model input/output."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str


class BatchRunner(Protocol):
    """Runs one float32 NCHW batch and returns the model's first output."""

    def run(self, batch_nchw: Batch) -> npt.NDArray[Any]: ...


def contiguous_float32(batch_nchw: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """``batch_nchw`` itself when it is C-contiguous float32 (no copy), else such a copy."""
    if batch_nchw.dtype != np.float32 or not batch_nchw.flags.c_contiguous:
        return np.ascontiguousarray(batch_nchw, dtype=np.float32)
    return batch_nchw


def contiguous_input(batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A uint8 batch (a fused graph's NHWC image input) as is when C-contiguous, else
    ``contiguous_float32`` (a network's NCHW input)."""
    if batch.dtype == np.uint8:
        return np.ascontiguousarray(batch)
    return contiguous_float32(batch)


class SessionBase:
    """The shared half of an engine session: ``input_name``/``output_name``, ``run`` and ``with``."""

    engine: ClassVar[str]
    precision: str = "fp32"
    """What the engine computes in (``bf16`` only where a bf16 model directory asked for it)."""
    fused_preprocess: bool = False
    """True when the graph starts with the pre-processing: ``run`` takes uint8 BGR NHWC images."""
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    runner: BatchRunner

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    def _check_open(self) -> None:
        """Raise the engine's closed-session error; a no-op where the runner checks under its lock."""

    def run(self, batch_nchw: Batch) -> npt.NDArray[Any]:
        """Run one batch (float32 NCHW, or a fused graph's uint8 NHWC images) through the runner; returns the model's first output."""
        self._check_open()
        return self.runner.run(batch_nchw)

    def close(self) -> None:
        """Release the engine's resources; closing twice is harmless."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
