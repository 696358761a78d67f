"""Run paddle / paddle2onnx in a child process (``_worker.py``) and check dependencies.

paddle2onnx 2.x aborts the process (SIGABRT) instead of raising when a conversion fails, so
every paddle call happens in a child; a non-zero exit becomes a ``ConversionError`` carrying
the last lines of its stderr (or one line, for a full disk).

The child runs in its own session, so a terminal's Ctrl-C reaches only the parent, which kills
the child on the way out (``subprocess.run`` does on any exception). On Linux the child also
asks the kernel to kill it when the parent dies (``kill -9`` included; see ``_worker.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastseg.errors import ConversionError, MissingDependencyError

WORKER = Path(__file__).with_name("_worker.py")
INSTALL_HINT = 'pip install "fastseg-ort[convert]"'
_STDERR_TAIL_LINES = 6
PARENT_PID_ENV = "FASTSEG_CONVERT_PARENT_PID"
_NO_SPACE = (os.strerror(errno.ENOSPC), "ENOSPC", "[Errno 28]")


def require_convert_deps() -> None:
    """Raise ``MissingDependencyError`` unless paddlepaddle, paddle2onnx and onnx are importable."""
    missing = [mod for mod in ("paddle", "paddle2onnx", "onnx") if importlib.util.find_spec(mod) is None]
    if missing:
        raise MissingDependencyError(
            f"Converting a Paddle model needs {', '.join(missing)} (not installed). "
            f"Install the convert extra: {INSTALL_HINT}"
        )


def tool_versions() -> dict[str, str]:
    """Versions of the packages that shape the output, for the provenance record."""
    out: dict[str, str] = {}
    for dist in ("paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "fastseg-ort"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def run_paddle_worker(cmd: str, workdir: Path, *, what: str, timeout_s: float = 1800.0, **request: Any) -> None:
    """Run one ``_worker`` command in a child process inside ``workdir``.

    Raises:
        ConversionError: the child crashed or exited non-zero (message: ``what`` plus stderr tail).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    req_file = workdir / f"request_{cmd}.json"
    req_file.write_text(json.dumps({"cmd": cmd, "workdir": str(workdir), **request}), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        GLOG_minloglevel="2",
        FLAGS_logtostderr="0",
        POLYGRAPHY_AUTOINSTALL_DEPS="0",
        TMPDIR=str(workdir),  # paddle2onnx's mkdtemp() lands here and is removed with workdir
        PYTHONWARNINGS="ignore",
    )
    env[PARENT_PID_ENV] = str(os.getpid())
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER), str(req_file)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"{what} timed out after {timeout_s:.0f} s.") from exc
    if proc.returncode != 0:
        output = proc.stderr + proc.stdout
        if any(marker in output for marker in _NO_SPACE):
            raise ConversionError(
                f"{what} ran out of disk space in {workdir.parent} (No space left on device): free some space, "
                "or point TMPDIR at a larger disk."
            )
        if proc.returncode in (-signal.SIGINT, -signal.SIGTERM) or "KeyboardInterrupt" in output[-300:]:
            raise KeyboardInterrupt  # someone interrupted the child directly: the CLI says "Aborted!"
        tail = _tail(output)
        if proc.returncode < 0:
            reason = f"crashed with {signal.Signals(-proc.returncode).name}"
        else:
            reason = f"failed (exit {proc.returncode})"
        raise ConversionError(f"{what} {reason}: {tail}")


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "warn" not in ln.lower()]
    return " | ".join(lines[-_STDERR_TAIL_LINES:]) or "(no output)"
