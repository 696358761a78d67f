"""The conversion's scratch directory: named after its process, removed on SIGTERM, and swept
at the next conversion when its process was killed outright (``kill -9`` cannot be caught)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRATCH_PREFIX = "fastseg-convert-"
_SCRATCH_PID = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def sweep_stale_scratch(root: Path | None = None) -> list[Path]:
    """Remove scratch dirs left by conversions whose process is gone (``kill -9``, power loss).

    Each conversion's scratch dir is ``<tmp>/fastseg-convert-<pid>-<random>``; a dir whose pid no
    longer runs is removed. Dirs of live processes, of other users, and without a pid are kept.

    Returns:
        The directories removed.
    """
    root = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = list(root.iterdir())
    except OSError:
        return removed
    for path in candidates:
        match = _SCRATCH_PID.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink() or _pid_alive(int(match.group(1))):
            continue
        try:
            if path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


@contextmanager
def sigterm_exits_cleanly() -> Iterator[None]:
    """While converting, SIGTERM raises SystemExit(143) in the main thread, so the child is
    killed and the scratch dir removed on the way out (the default action would leave both)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def new_scratch_dir() -> Path:
    """A fresh ``<tmp>/fastseg-convert-<pid>-<random>`` directory (the pid lets a later sweep
    tell whether its owner still runs)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
