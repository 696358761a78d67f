"""A byte budget for decoded images, shared by the requests of one app.

Admission bounds how many requests are in flight, not how big their images are: 32 requests
at the 40 MP pixel limit would hold 3.8 GB of decoded pixels. Each request reserves its
image's decoded size (width*height*3, known from the header before decoding) and holds it
until its answer is written; a reservation that does not fit waits (within the request's
deadline) until others give theirs back. Lives on the event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastseg.errors import InputError


class MemoryBudget:
    """At most ``total`` bytes reserved at once; ``reserve`` waits for room."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._used = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used

    @property
    def waiting(self) -> int:
        """Reservations waiting for room."""
        return len(self._waiters)

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        """Hold ``nbytes`` of the budget for the ``async with`` block (waiting for room first).

        Raises:
            InputError: ``nbytes`` is more than the whole budget (it could never fit).
        """
        if nbytes > self._total:
            raise InputError(
                f"the decoded image needs {nbytes} bytes, more than this server's decode_memory_bytes "
                f"of {self._total}; downscale it first."
            )
        while self._used + nbytes > self._total:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self._used += nbytes
        try:
            yield
        finally:
            self._used -= nbytes
            for waiter in self._waiters:  # each re-checks; those that still do not fit wait again
                if not waiter.done():
                    waiter.set_result(None)


class ByteCounter:
    """At most ``total`` bytes taken at once; ``try_take`` refuses (no waiting) when full.

    Request bodies are counted by their Content-Length before a byte is read, so 64 clients
    that each announce 19 MB and stall cannot make the server buffer 1.2 GB.
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self._used = 0

    @property
    def used(self) -> int:
        """Bytes taken now."""
        return self._used

    def try_take(self, nbytes: int) -> bool:
        """Take ``nbytes`` when they fit; False (nothing taken) when they do not."""
        if self._used + nbytes > self._total:
            return False
        self._used += nbytes
        return True

    def give(self, nbytes: int) -> None:
        """Give back bytes taken by ``try_take``."""
        self._used -= nbytes
