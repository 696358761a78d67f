"""Every temporary directory fastseg makes, and crash-safe replacement of an output directory.

Two places, both named after the owning process so that a later run can tell leftovers of a
killed run (``kill -9``, power loss: no cleanup code runs) from the work of a live one:

- ``new_scratch_dir(purpose)``: ``$TMPDIR/fastseg-<uid>/<purpose>-<pid>-<random>/`` (the fastseg
  temp root, one per user, mode 0700). Removed on ``close()`` or when its ``with`` block exits.
- ``staged_dir(target)``: ``<target's parent>/.fastseg-<pid>-<random>/new/``, beside the output
  because a rename must stay on one file system. Filled by the caller, then swapped with
  ``target`` in one atomic ``renameat2(RENAME_EXCHANGE)``: at every moment ``target`` is the
  whole old directory or the whole new one.

A directory is stale when the pid in its name no longer runs AND nobody holds the ``flock``
its owner keeps on it (the lock also covers a pid reused by another process or a run in
another pid namespace that shares /tmp). ``sweep_stale`` removes stale ones; every
``new_scratch_dir``/``staged_dir`` sweeps first, so the next run cleans up after a killed one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastseg.errors import FastSegError

STAGE_PREFIX = ".fastseg-"
_SCRATCH_NAME = re.compile(r"^[a-z0-9_]+-(\d+)-[0-9a-f]{12}$")
_STAGE_NAME = re.compile(rf"^{re.escape(STAGE_PREFIX)}(\d+)-[0-9a-f]{{12}}$")
_TARGET_NOTE = "target"  # in a stage dir: the target's name (for restoring after a fallback swap)
_RENAME_EXCHANGE = 2
KILL_POINT_ENV = "FASTSEG_TEST_KILL_AT"  # tests: SIGKILL this process at the named point


def kill_point(name: str) -> None:
    """Tests only: die by SIGKILL here when ``$FASTSEG_TEST_KILL_AT`` names this point."""
    if os.environ.get(KILL_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def temp_root() -> Path:
    """``$TMPDIR/fastseg-<uid>``: created 0700; refused when another user owns it or it is a link.

    Raises:
        FastSegError: the root exists but is not this user's private directory.
    """
    root = Path(tempfile.gettempdir()) / f"fastseg-{_uid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = root.lstat()
    except OSError as exc:
        raise FastSegError(f"Cannot create fastseg's temp directory {root}: {exc.strerror}; set TMPDIR.") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != _uid():
        raise FastSegError(
            f"{root} is not a directory owned by this user; remove it or set TMPDIR to another directory."
        )
    if info.st_mode & 0o077:
        root.chmod(0o700)
    return root


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _uid() -> int:
    return os.getuid() if sys.platform != "win32" else 0


def _lock(path: Path) -> int:
    """An fd on directory ``path`` holding its exclusive flock (raises BlockingIOError if held);
    -1 on Windows, which has no flock (the owner's pid alone decides there)."""
    if sys.platform == "win32":
        return -1
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_stale(path: Path, pid: int) -> bool:
    if _pid_alive(pid):
        return False
    try:
        if path.lstat().st_uid != _uid() or path.is_symlink():
            return False
        fd = _lock(path)
    except OSError:  # locked by a live owner (BlockingIOError), or gone
        return False
    if fd >= 0:
        os.close(fd)
    return True


def _restore_old(stage: Path) -> None:
    """After a fallback swap cut short: put the old directory back if the target is missing."""
    old, note = stage / "old", stage / _TARGET_NOTE
    if old.is_dir() and note.is_file():
        target = stage.parent / os.fsdecode(note.read_bytes())
        if not os.path.lexists(target):
            os.rename(old, target)


def sweep_stale(where: Path | None = None) -> list[Path]:
    """Remove the stale fastseg temp dirs in ``where`` (default: the temp root).

    Only names fastseg makes are considered (``<purpose>-<pid>-<hex>``, ``.fastseg-<pid>-<hex>``),
    only this user's, only those whose pid is gone and whose lock is free. A stage dir whose
    swap was cut short first gives the old directory back to its target.

    Returns:
        The directories removed.
    """
    root = temp_root() if where is None else Path(where)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _SCRATCH_NAME.match(entry.name) or _STAGE_NAME.match(entry.name)
        path = Path(entry.path)
        if match is None or not _is_stale(path, int(match.group(1))):
            continue
        if entry.name.startswith(STAGE_PREFIX):
            try:
                _restore_old(path)
            except OSError:
                continue  # keep it: it may hold the only copy of the old directory
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed


def _remove(path: Path, fd: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if fd >= 0:
        os.close(fd)


class ScratchDir:
    """A locked temp directory that lives as long as this object: ``path``; ``close()`` (or the
    object's collection, or interpreter exit) removes it."""

    def __init__(self, parent: Path, name: str) -> None:
        self.path = parent / name
        self.path.mkdir(mode=0o700)
        self._finalizer = weakref.finalize(self, _remove, self.path, _lock(self.path))

    def close(self) -> None:
        """Remove the directory (idempotent)."""
        self._finalizer()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{secrets.token_hex(6)}"


def new_scratch_dir(purpose: str) -> ScratchDir:
    """Sweep the temp root, then make ``<root>/<purpose>-<pid>-<hex>`` (the caller closes it)."""
    if not re.fullmatch(r"[a-z0-9_]+", purpose):
        raise ValueError(f"purpose must be [a-z0-9_]+, got {purpose!r}")
    root = temp_root()
    sweep_stale(root)
    return ScratchDir(root, _unique(f"{purpose}-"))


@contextmanager
def scratch_dir(purpose: str) -> Iterator[Path]:
    """A fresh private directory under the fastseg temp root, removed when the block exits."""
    with new_scratch_dir(purpose) as path:
        yield path


@contextmanager
def tempfile_redirected(path: Path) -> Iterator[None]:
    """Send the ``tempfile`` module's default directory to ``path`` for the block.

    For libraries that make temp files with no ``dir=`` argument (ONNX Runtime's quantization:
    ``ort.quant.*``, ``pre.quant.*``, its external data): pointed into a ``scratch_dir``, what
    they leave when the process is killed is swept with it. ``tempfile.tempdir`` is process-wide,
    so use this only in one-shot commands (quantize), never in a server.
    """
    saved = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir_atomically(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; an existing ``target`` ends up at ``new``'s path.

    ``new`` must be on ``target``'s file system (``staged_dir`` makes sure). Where the system
    cannot swap atomically, ``target`` is first moved into ``new``'s stage dir as ``old``, which
    ``sweep_stale`` puts back if this process dies before the new directory is in place.
    """
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if _exchange(new, target):
        kill_point("swapped")
        return
    old = new.parent / "old"
    (new.parent / _TARGET_NOTE).write_bytes(os.fsencode(target.name))
    os.rename(target, old)
    kill_point("fallback-moved-old")
    os.rename(new, target)
    os.rename(old, new)


@contextmanager
def staged_dir(target: Path, *, mode: int = 0o755) -> Iterator[Path]:
    """Yield an empty directory to fill; when the block ends without error it replaces ``target``.

    The old ``target`` stays whole until the new one is in place (atomic swap) and is then
    removed; on an error nothing changes. Leftovers of a killed run are swept by the next
    ``staged_dir`` in the same parent directory.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    with ScratchDir(target.parent, _unique(STAGE_PREFIX)) as stage:
        new = stage / "new"
        new.mkdir()
        yield new
        new.chmod(mode)
        kill_point("staged")
        replace_dir_atomically(new, target)
