"""What every engine's session shares: its IO description, ``run`` through its runner, and
the ``with`` lifecycle; an engine supplies the runner, ``close`` and its closed-session check.

ONNX Runtime's ``fastseg.engines.ort.Session`` and OpenVINO's
``fastseg.engines.openvino.OpenVINOSession`` subclass ``SessionBase``, so a new engine is one
more implementation behind the interface ``fastseg.engines.EngineSession`` describes.
A run can be cancelled from another thread: pass a ``CancelToken`` to ``run`` and call its
``cancel()``; ONNX Runtime stops at its next node (``RunOptions.terminate``), OpenVINO through
``InferRequest.cancel()``, and ``run`` raises ``RunCancelledError``. The serving handler uses it
to stop a batch whose requests have all timed out or hung up.

Imports nothing from fastseg but its errors, nothing from onnxruntime or OpenVINO.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt

from fastseg.errors import RunCancelledError


Batch = npt.NDArray[np.float32] | npt.NDArray[np.uint8]
"""A network batch: float32 [N,3,H,W], or uint8 BGR [N,H,W,3] for a graph that pre-processes."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (ints, or None/str for dynamic dims) and ORT type string of a model input/output."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str


class CancelToken:
    """Stops, from any thread, the engine runs it is given to: the run in flight ends early and
    later ones do not start; each raises ``RunCancelledError``. One token per unit of work
    (a serving batch); it cannot be reset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._stop: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def running(self) -> bool:
        """An engine run guarded by this token is in flight now."""
        return self._stop is not None

    def cancel(self) -> None:
        """Cancel: stop the run in flight (if any) and refuse every later one."""
        with self._lock:  # held while stopping, so the run cannot hand its engine to another caller meanwhile
            self._cancelled = True
            if self._stop is not None:
                self._stop()

    @contextmanager
    def guard(self, stop: Callable[[], None]) -> Iterator[None]:
        """For engines: wrap one run; ``stop`` is how ``cancel`` interrupts it (called at most once,
        from the cancelling thread). An error the interrupted run raises becomes ``RunCancelledError``."""
        with self._lock:
            if self._cancelled:
                raise RunCancelledError("the run was cancelled before it started")
            self._stop = stop
        try:
            yield
        except Exception as exc:
            if self._cancelled:
                raise RunCancelledError("the run was cancelled while running") from exc
            raise
        finally:
            with self._lock:
                self._stop = None
        if self._cancelled:
            raise RunCancelledError("the run was cancelled while running")


class BatchRunner(Protocol):
    """Runs one float32 NCHW batch and returns the model's first output; ``cancel`` may stop it."""

    def run(self, batch_nchw: Batch, cancel: CancelToken | None = None) -> npt.NDArray[Any]: ...


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
    """What the engine computes in (``bf16`` or ``int8-bf16`` only where such a model directory asked for it)."""
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

    def run(self, batch_nchw: Batch, cancel: CancelToken | None = None) -> npt.NDArray[Any]:
        """Run one batch (float32 NCHW, or a fused graph's uint8 NHWC images) through the runner; returns the model's first output.

        Raises:
            RunCancelledError: ``cancel`` was cancelled before or during the run.
        """
        self._check_open()
        return self.runner.run(batch_nchw, cancel)

    def close(self) -> None:
        """Release the engine's resources; closing twice is harmless."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
