"""Atomic file writes: readers see the old file or the new one, never half of either.

Every file fastseg writes for a user (model metadata, results, configs, download
side files) goes through here: a temp file in the target's directory, then ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o644  # mkstemp creates 0600; results and models are ordinary shared files


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (parent directories are created)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a name cut to 40 characters (160 bytes at most): the temp name must fit NAME_MAX even when the target's just fits
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:40]}.", dir=target.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(target: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))
