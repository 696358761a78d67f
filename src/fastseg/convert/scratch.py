"""SIGTERM during a conversion: raise SystemExit so the child is killed and the scratch dir
(``fastseg.tempdirs``) removed on the way out; ``kill -9`` leftovers are swept by the next run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
