"""Handing memory back to the OS after a burst (glibc only; elsewhere every call is a no-op).

glibc's malloc keeps freed heap memory mapped for reuse and, with many threads, spreads it over
up to 8 arenas per core: after 8 concurrent 2048x2048 requests the server held gigabytes while
idle. ``limit_arenas`` caps the arenas (call it once, before the threads start: it is
process-wide, so only the process owner, ``fastseg serve``, calls it); ``IdleTrimmer`` runs
``malloc_trim(0)`` once the server has been idle for a moment after a burst.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from concurrent.futures import Executor

LOG = logging.getLogger("fastseg.serving")

_M_ARENA_MAX = -8  # glibc's mallopt parameter numbers (malloc.h)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 (present on glibc only)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``count`` for this process; False where not glibc."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, count) == 1)


def trim_heap() -> bool:
    """Return free heap memory to the OS now (``malloc_trim(0)``); False where not glibc."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


class IdleTrimmer:
    """Calls ``trim_heap`` in ``executor`` once nothing has been in flight for ``delay_s``.

    ``busy()`` at the start of each request and ``idle_if(no_requests)`` at its end; lives on the
    event loop. A burst ends with one trim, not one per request.
    """

    def __init__(self, delay_s: float = 0.5, still_working: Callable[[], bool] = lambda: False) -> None:
        self._delay_s = delay_s
        self._still_working = still_working  # e.g. an inference that outlived its timed-out request
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def busy(self) -> None:
        """A request started: any pending trim waits for the next idle moment."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle_if(self, idle: bool, executor: Executor | None) -> None:
        """A request ended: when ``idle``, schedule one trim ``delay_s`` from now."""
        if not idle or executor is None:
            return
        self.busy()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._delay_s, self._trim, loop, executor)

    def cancel(self) -> None:
        """Drop a pending trim (server stopping)."""
        self.busy()

    def _trim(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        self._timer = None
        if self._still_working():  # memory it frees later must be trimmed too: look again later
            self._timer = loop.call_later(self._delay_s, self._trim, loop, executor)
            return
        self.trims += 1
        try:
            loop.run_in_executor(executor, trim_heap)
        except RuntimeError:  # executor already shut down
            LOG.debug("heap trim skipped: server stopping")
