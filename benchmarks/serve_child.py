"""Shared by the benchmark scripts that start their own ``fastseg serve``: wait until it answers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


def wait_until_healthy(url: str, proc: subprocess.Popen[bytes], output: Callable[[], bytes | str], timeout_s: float = 120) -> None:
    """Poll ``url``/health until the server answers 200; exit with the tail of ``output()`` (its
    log) when the process ends or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not come up: {output()[-2000:]!r}")
        time.sleep(0.3)
