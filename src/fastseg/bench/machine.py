"""The conditions every number depends on: CPU, cores, OS, package versions, the device to run on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from fastseg.bench.report import NOT_INSTALLED
from fastseg.errors import DeviceError


def machine_info() -> dict[str, Any]:
    """CPU model, core count, OS and Python: the conditions every number here depends on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"paddle": "paddlepaddle", "cv2": "opencv-python-headless"}.get(module, module)
    for name in (dist, module, "opencv-python", "opencv-contrib-python"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return NOT_INSTALLED


def versions() -> dict[str, str]:
    """Versions of everything on the parent interpreter (workers report their own)."""
    from fastseg import __version__

    out = {"fastseg": __version__}
    for mod in ("onnxruntime", "onnx", "numpy", "cv2", "paddle", "paddlex"):
        out[mod] = _version(mod)
    return out


def check_device(device: str, *, allow_fallback: bool = False) -> tuple[str, str | None]:
    """Validate the device for the fastseg worker before anything starts (the runtime's rules).

    Returns:
        (device to use, warning or None). With ``allow_fallback`` a missing accelerator gives
        "cpu" and a warning instead of an error.

    Raises:
        DeviceError: an unparsable device, or an accelerator ONNX Runtime cannot use here.
    """
    import onnxruntime as ort

    from fastseg.runtime import RuntimeOptions, parse_device, resolve_providers

    spec = parse_device(device)
    if spec.kind == "cpu":
        return "cpu", None
    try:
        resolve_providers(spec, ort.get_available_providers(), options=RuntimeOptions(), allow_fallback=False)
    except DeviceError as exc:
        if not allow_fallback:
            raise
        return "cpu", f"{exc} Falling back to CPU (--allow-fallback)."
    return device, None
