"""Make onnxruntime-gpu's CUDA and TensorRT providers load from a pip-only install.

``pip install "fastseg-ort[gpu]"`` brings ``onnxruntime-gpu[cuda,cudnn]``: the CUDA and cuDNN
libraries as NVIDIA's pip wheels, outside the loader's search path. onnxruntime-gpu >= 1.21
finds them with ``onnxruntime.preload_dlls()``. When a library is still missing, the provider
library fails to load and ONNX Runtime logs the loader's message and runs on the CPU.
``prepare_cuda`` preloads, then loads the provider library itself (the way ONNX Runtime will)
so that failure becomes one ``DeviceError`` line naming the missing library and the install
command. Call it before creating a CUDA or TensorRT session.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fastseg.errors import DeviceError

log = logging.getLogger(__name__)

CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
PROVIDER_LIBRARIES = {CUDA_EP: "libonnxruntime_providers_cuda.so", TRT_EP: "libonnxruntime_providers_tensorrt.so"}
SHARED_LIBRARY = "libonnxruntime_providers_shared.so"
PIP_CUDA_LIBS = "pip install 'onnxruntime-gpu[cuda,cudnn]'"
"""What ``fastseg-ort[gpu]`` installs: onnxruntime-gpu plus NVIDIA's CUDA and cuDNN wheels."""

_MISSING_LIBRARY = re.compile(r"([\w.+-]+?\.so(?:\.[\w.]+)?): cannot open shared object file")


def missing_library(loader_message: str) -> str | None:
    """The library the dynamic loader could not find, from its message (e.g. ``libcublasLt.so.13``)."""
    match = _MISSING_LIBRARY.search(loader_message)
    return match.group(1) if match else None


def missing_library_message(provider: str, loader_message: str) -> str:
    """One line: which library is missing for ``provider`` and how to install it."""
    lib = missing_library(loader_message)
    what = f"{lib} is missing" if lib else f"its library does not load ({loader_message.strip().splitlines()[0]})"
    if lib and "nvinfer" in lib:
        return (
            f"TensorRT provider cannot start: {what}. Fix: install TensorRT for onnxruntime-gpu's CUDA version "
            "and put its lib directory on LD_LIBRARY_PATH, or use device 'gpu:N' (CUDA without TensorRT)."
        )
    name = "TensorRT" if provider == TRT_EP else "CUDA"
    return f"{name} provider cannot start: {what}. Fix: {PIP_CUDA_LIBS} (CUDA and cuDNN from pip), or install them system-wide."


def prepare_cuda(
    provider: str, *, ort: ModuleType | None = None, load_library: Callable[[str], Any] = ctypes.CDLL
) -> None:
    """Preload pip-installed CUDA/cuDNN and check that ``provider``'s library loads.

    Does nothing for other providers, or when this onnxruntime has no such provider library
    (a CPU build: the session factory's "provider not offered" error applies then).

    Args:
        provider: the ONNX Runtime execution provider about to be used.
        ort: the ``onnxruntime`` module (imported when None; a fake one in tests).
        load_library: loads a shared library by path (``ctypes.CDLL``; replaced in tests).

    Raises:
        DeviceError: a library the provider needs is missing; the message names it. Other load
            failures are left to ONNX Runtime.
    """
    lib_name = PROVIDER_LIBRARIES.get(provider)
    if lib_name is None:
        return
    if ort is None:
        import onnxruntime

        ort = onnxruntime
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if callable(preload):
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):  # it prints each library it misses; the load below says it once
                preload()
        except Exception as exc:  # noqa: BLE001 - a failed preload shows up in the load below
            log.debug("onnxruntime.preload_dlls() failed: %s", exc)
        log.debug("onnxruntime.preload_dlls(): %s", said.getvalue().strip())
    capi = Path(str(ort.__file__)).parent / "capi"
    lib = capi / lib_name
    if not lib.is_file():
        return
    try:
        shared = capi / SHARED_LIBRARY  # ONNX Runtime loads it first; the provider needs it
        if shared.is_file():
            load_library(str(shared))
        load_library(str(lib))
    except OSError as exc:
        if missing_library(str(exc)) is None:  # not a missing file: let ONNX Runtime try and report
            log.debug("Loading %s outside ONNX Runtime failed: %s", lib, exc)
            return
        raise DeviceError(missing_library_message(provider, str(exc))) from exc
