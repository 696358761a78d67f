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


SGEMM_N = 4096


def measure_sgemm_gflops(threads: int, *, n: int = SGEMM_N, repeats: int = 5, timeout_s: float = 300.0) -> float:
    """This machine's achievable fp32 peak: the best of ``repeats`` numpy float32 ``n x n``
    matrix products (BLAS sgemm) on ``threads`` threads, in GFLOP/s (2 n^3 FLOPs each).

    Measured in a child process so the BLAS thread count can be set before numpy loads; the
    bench's "% peak" then divides by what this CPU really does instead of a fixed figure.

    Raises:
        FastSegError: the child failed or printed no number.
    """
    import subprocess
    import sys

    from fastseg.errors import FastSegError

    code = (
        "import time, numpy as np\n"
        f"n = {int(n)}\n"
        "a = np.random.default_rng(0).random((n, n), dtype=np.float32); b = a.T.copy(); a @ b\n"
        "best = float('inf')\n"
        f"for _ in range({int(repeats)}):\n"
        "    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
        "print(2 * n ** 3 / best / 1e9)\n"
    )
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FastSegError(f"Measuring the sgemm peak took over {timeout_s:g} s; pass --peak-gflops N instead.") from None
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise FastSegError(
            f"Measuring the sgemm peak failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}; "
            "pass --peak-gflops N instead."
        ) from None


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

    from fastseg.engines.device import parse_device
    from fastseg.engines.ort import FALLBACK_HINT, RuntimeOptions, resolve_providers

    spec = parse_device(device)
    if spec.kind == "cpu":
        return "cpu", None
    try:
        resolve_providers(spec, ort.get_available_providers(), options=RuntimeOptions(), allow_fallback=False)
    except DeviceError as exc:
        if not allow_fallback:
            raise
        return "cpu", f"{str(exc).removesuffix(FALLBACK_HINT)} Falling back to the CPU (--allow-fallback)."
    return device, None
