"""Two bounded-queue stages that let decoding, inference and encoding overlap.

``prefetch`` runs an iterator (the decoder) in a thread, at most ``maxsize`` items ahead;
``Drain`` hands items to a function (the encoder) in a thread, blocking the producer when
``maxsize`` items wait. Both bound memory by their queue, however long the video, and both
carry an exception raised in their thread back to the caller. OpenCV and ONNX Runtime release
the GIL, so the three stages really run at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.1


class _End:
    """The end-of-stream marker (with the producer's exception, if it failed)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room unless ``stop`` is set; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterable[T], maxsize: int, *, name: str = "fastseg-decode") -> Generator[T, None, None]:
    """Iterate ``items`` in a background thread, at most ``maxsize`` ahead of the consumer.

    Closing the returned generator (or leaving a ``for`` loop over it early) stops the thread
    and waits for it, so the caller may then release what ``items`` reads from.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(q, item, stop):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(q, _End(exc), stop)
            return
        _put(q, _End(), stop)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


class Drain(Generic[T]):
    """Call ``consume`` on each ``put`` item in a background thread; ``close`` waits for the rest.

    An exception in ``consume`` stops the thread; the next ``put`` or ``close`` raises it.
    """

    def __init__(self, consume: Callable[[T], None], maxsize: int, *, name: str = "fastseg-encode") -> None:
        self._consume = consume
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as exc:
                self._error = exc
                self._stop.set()
                return

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, item: T) -> None:
        """Queue ``item`` (blocks while the queue is full)."""
        self._raise()
        if not _put(self._queue, item, self._stop):
            self._raise()

    def close(self) -> None:
        """Let the thread finish the queued items, then raise its error if it had one."""
        if self._thread.is_alive():
            _put(self._queue, _End(), self._stop)
            self._thread.join()
        self._raise()
