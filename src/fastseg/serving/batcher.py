"""Dynamic batching of concurrent requests onto worker threads, with admission control.

The event loop never runs inference: requests put a job on an asyncio queue; ``workers``
dispatcher tasks each take the first waiting job, gather more for at most ``max_wait_s`` (up to
``max_batch`` images and ``max_batch_pixels`` network-input pixels), group them by requested
target size, and run each group as one ``predict_images`` call in a thread (the Segmenter itself groups mixed sizes by network input
shape, so images of different sizes still share a call when the model resizes them alike). Under load the queue fills while a batch runs, so batches grow
on their own. Admission (``try_admit``) bounds the number of requests in the system: above
``capacity`` the caller answers 503 instead of growing memory.

Every call gets a ``CancelToken``: once every request of the call has timed out or hung up
(its future is done), the token stops the engine run in flight, so abandoned work frees the
inference thread instead of running to its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fastseg.engines.session_base import CancelToken
from fastseg.errors import InputError, RunCancelledError

LOG = logging.getLogger("fastseg.serving")

RequestedSize = int | tuple[int, int] | None


@dataclass(frozen=True)
class Prediction:
    """One image's label map HxW, and its score map HxW (0..1) when the segmenter computes scores."""

    labels_hw: npt.NDArray[np.integer]
    score_hw: npt.NDArray[np.floating] | None = None


#: (images BGR HxWx3, target size, cancel token) -> one ``Prediction`` per image, in order;
#: raises ``RunCancelledError`` when the token is cancelled.
PredictFn = Callable[[Sequence[npt.NDArray[np.uint8]], RequestedSize, CancelToken], list[Prediction]]


@dataclass(frozen=True)
class Inference:
    """One image's label map (and score map) plus how it was computed (for the Server-Timing header)."""

    labels_hw: npt.NDArray[np.integer]
    infer_ms: float  # wall time of the predict call that included this image
    batch_size: int
    score_hw: npt.NDArray[np.floating] | None = None


@dataclass
class Ticket:
    """One admitted request's place in the system (from ``Batcher.try_admit``)."""

    submitted: bool = False
    pixels: int = 0  # network-input pixels of its image (set before submit; 0 = unknown)


@dataclass
class _Job:
    image: npt.NDArray[np.uint8]
    target_size: RequestedSize
    pixels: int
    future: asyncio.Future[Inference] = field(repr=False)


@dataclass
class BatchStats:
    """Counters for /health and the load test: how many calls and images were run."""

    batches: int = 0
    images: int = 0
    max_batch_seen: int = 0
    cancelled: int = 0  # calls stopped because every request in them had timed out or hung up


class Batcher:
    """Collects concurrent jobs into batched ``predict`` calls on ``workers`` threads."""

    cancellable: ClassVar[bool] = True
    """Whether a request that leaves (timeout, client gone) can stop its running batch."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch: int,
        max_wait_s: float,
        capacity: int,
        workers: int,
        max_batch_pixels: int | None = None,
    ) -> None:
        self._predict = predict
        self._max_batch = max_batch
        self._max_pixels = max_batch_pixels
        self._held: list[_Job] = []  # taken from the queue, left for the next batch (pixel budget)
        self.running = 0  # predict calls running now (one may outlive its timed-out requests)
        self._max_wait_s = max_wait_s
        self._capacity = capacity
        self._workers = workers
        self._admitted = 0
        self._upcoming = 0  # admitted, not yet submitted: still reading/decoding, may join a batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self.stats = BatchStats()

    @property
    def admitted(self) -> int:
        """Requests admitted and not yet answered."""
        return self._admitted

    @property
    def queued(self) -> int:
        """Decoded images waiting for an inference thread."""
        return len(self._held) + (0 if self._queue is None else self._queue.qsize())

    async def start(self) -> None:
        """Start the dispatcher tasks and the inference threads (inside the running loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="fastseg-infer")
        self._tasks = [
            asyncio.create_task(self._dispatch(self._queue), name=f"fastseg-batcher-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        """Cancel the dispatchers, fail waiting jobs, and join the inference threads."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._queue is not None:
            while self._held or not self._queue.empty():
                job = self._held.pop() if self._held else self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(RuntimeError("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def try_admit(self) -> Ticket | None:
        """Reserve a place for one request; None when ``capacity`` requests are in the system."""
        if self._admitted >= self._capacity:
            return None
        self._admitted += 1
        self._upcoming += 1
        return Ticket()

    def release(self, ticket: Ticket) -> None:
        """Give back the place reserved by ``try_admit`` (call exactly once per ticket)."""
        self._admitted -= 1
        if not ticket.submitted:
            self._upcoming -= 1

    async def submit(self, ticket: Ticket, image: npt.NDArray[np.uint8], target_size: RequestedSize) -> Inference:
        """Queue one image and wait for its label map. Cancelling the wait drops the job."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called (is the app's lifespan running?)")
        future: asyncio.Future[Inference] = asyncio.get_running_loop().create_future()
        if not ticket.submitted:
            ticket.submitted = True
            self._upcoming -= 1
        self._queue.put_nowait(_Job(image, target_size, ticket.pixels, future))
        return await future

    def _fits(self, batch: list[_Job], job: _Job) -> bool:
        """A batch holds at most ``max_batch_pixels`` network pixels (its first job always fits)."""
        if self._max_pixels is None:
            return True
        return sum(j.pixels for j in batch) + job.pixels <= self._max_pixels

    async def _next(self, queue: asyncio.Queue[_Job], timeout: float | None) -> _Job:
        if self._held:
            return self._held.pop(0)
        if timeout is None:
            return await queue.get()
        if not queue.empty():
            return queue.get_nowait()
        return await asyncio.wait_for(queue.get(), timeout)

    async def _collect(self, queue: asyncio.Queue[_Job]) -> list[_Job]:
        loop = asyncio.get_running_loop()
        batch = [await self._next(queue, None)]
        deadline = loop.time() + self._max_wait_s
        while len(batch) < self._max_batch:
            if not self._held and queue.empty():
                # Wait only for requests that can still join: admitted ones not yet submitted
                # (reading or decoding). Requests already past inference never will, and with
                # none upcoming a lone request is not delayed by max_wait_ms.
                if self._upcoming == 0:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
            else:
                remaining = 0.0
            try:
                job = await self._next(queue, remaining)
            except TimeoutError:
                break
            if not self._fits(batch, job):
                self._held.insert(0, job)  # first in line for the next batch
                break
            batch.append(job)
        return batch

    async def _dispatch(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            # One batch per call: its images and label maps are freed before the next wait.
            await self._run_batch(await self._collect(queue))

    async def _run_batch(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[RequestedSize, list[_Job]] = {}
        for job in batch:
            if not job.future.done():  # timed out or cancelled while queued: its work stops here
                groups.setdefault(job.target_size, []).append(job)
        for jobs in groups.values():
            started = time.perf_counter()
            self.running += 1
            token = CancelToken()

            def abandon(_: object, jobs: list[_Job] = jobs, token: CancelToken = token) -> None:
                if all(j.future.done() for j in jobs):  # nobody waits for this call any more
                    token.cancel()

            for job in jobs:
                job.future.add_done_callback(abandon)
            try:
                if all(j.future.done() for j in jobs):
                    continue  # abandoned between grouping and now
                outputs = await loop.run_in_executor(
                    self._executor, self._predict, [j.image for j in jobs], jobs[0].target_size, token
                )
                if len(outputs) != len(jobs):
                    raise RuntimeError(f"segmenter returned {len(outputs)} results for {len(jobs)} images")
            except RunCancelledError as exc:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                self.stats.cancelled += 1
                LOG.info("stopped the inference of %d image(s): every request in it had timed out or hung up", len(jobs))
                continue
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError("server is shutting down"))
                raise
            except Exception as exc:  # a bad batch must fail its requests, never the dispatcher
                if not isinstance(exc, InputError):
                    LOG.exception("inference failed for a batch of %d", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.running -= 1
                for job in jobs:
                    job.future.remove_done_callback(abandon)
            self.stats.batches += 1
            self.stats.images += len(jobs)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(jobs))
            infer_ms = (time.perf_counter() - started) * 1000.0
            for job, pred in zip(jobs, outputs):
                if not job.future.done():
                    job.future.set_result(Inference(pred.labels_hw, infer_ms, len(jobs), pred.score_hw))
