"""A video on Ray: workers segment frame ranges, the driver writes the result in order.

The driver splits the kept frames (every ``every``-th, at most ``max_frames``) into ranges of at
most ``CHUNK_FRAMES``; a pool of actors, each holding one ``Segmenter``, seeks to a range's first
frame (``fastseg.video.seek_frame``) and returns its labels (and scores), with a digest of each
decoded frame. The driver decodes the video itself, in order, and runs the same
``video_to_dir`` as a local run with a ``RangeFeed`` in place of the model: each frame's labels
come from the workers, and its digest must equal the driver's, so a seek that landed on the
wrong frame is caught (that range is redone by decoding and skipping from the start). The
video, label PNGs, score PNGs and legend are therefore those of the local run. At most one range
per worker is in flight, so memory stays bounded however long the video.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import FastSegError, InputError
from fastseg.processing import TargetSize
from fastseg.model_dir import ModelMeta, read_meta
from fastseg.model_resolution import resolve_model_dir
from fastseg.ray.cluster import ModelFiles, WorkerSegmenter, cluster_resources, fetch_model, ray_session, worker_error
from fastseg.ray.devices import WorkerPlan, plan_workers
from fastseg.results import SegResult
from fastseg.video import RenderOptions, VideoInfo, VideoOutcome, VideoSource, predict_video, video_to_dir
from fastseg.video.sources import video_info

CHUNK_FRAMES = 16  # kept frames per range: small enough to spread a short clip, large enough to amortise a seek


def frame_digest(image: npt.NDArray[np.uint8]) -> bytes:
    """A 16-byte digest of a decoded frame's pixels (which frame a worker really segmented)."""
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()


@dataclass(frozen=True)
class FrameRange:
    """Kept frames ``[start, stop)`` (kept frame k is source frame ``k * every``); ``stop`` None = to the end."""

    start: int
    stop: int | None


def frame_ranges(kept: int | None, workers: int, *, max_frames: int | None) -> list[FrameRange]:
    """Split ``kept`` frames (None: unknown length) into ranges; the last one runs to the end
    unless ``max_frames`` bounds it (a frame count from the container may be short)."""
    if kept is None:
        return [FrameRange(0, max_frames)]
    size = max(1, min(CHUNK_FRAMES, math.ceil(kept / max(workers, 1))))
    ranges = [FrameRange(a, a + size) for a in range(0, kept, size)] or [FrameRange(0, None)]
    return ranges[:-1] + [FrameRange(ranges[-1].start, max_frames)]


@dataclass(frozen=True)
class RangeResult:
    """One range's frames: source indices, frame digests, labels (compact dtype), scores (or None)."""

    indices: list[int]
    digests: list[bytes]
    labels: list[npt.NDArray[Any]]
    scores: list[npt.NDArray[Any] | None]


def segment_range(
    seg: Any, path: str, rng: FrameRange, *, every: int, target_size: TargetSize | None, exact: bool
) -> RangeResult:
    """Segment one range of a video file with ``seg`` (in a worker, or locally in tests)."""
    count = None if rng.stop is None else rng.stop - rng.start
    out = RangeResult([], [], [], [])
    if count == 0:
        return out
    dtype = np.uint8 if seg.meta.num_classes <= 256 else np.uint16
    frames = predict_video(seg, path, every=every, max_frames=count, target_size=target_size,
                           start=rng.start * every, exact_seek=exact)
    for res in frames:
        assert res.input_img is not None
        out.indices.append(res.frame_index)
        out.digests.append(frame_digest(res.input_img))
        out.labels.append(res.labels_hw.astype(dtype))
        out.scores.append(None if res.score is None else res.score)
    return out


class RangeWorker:
    """A Ray actor: one ``Segmenter`` per worker, segmenting the ranges it is handed."""

    def __init__(self, model: ModelFiles | Any, *, plan: WorkerPlan, segmenter_kwargs: Mapping[str, Any],
                 batch_size: int) -> None:
        self._worker = WorkerSegmenter(
            fetch_model(model), device=plan.device, threads=plan.intra_op_threads, segmenter_kwargs=segmenter_kwargs
        )
        self._worker.segmenter.batch_size = batch_size

    def segment(self, path: str, rng: FrameRange, every: int, target_size: TargetSize | None, exact: bool) -> RangeResult:
        return segment_range(self._worker.segmenter, path, rng, every=every, target_size=target_size, exact=exact)


class RangeFeed:
    """What ``video_to_dir`` takes for a model: hands out the workers' results in frame order.

    ``fetch(range, exact)`` returns a range's ``RangeResult``; ``ordered`` yields them in order
    (workers run ahead). Each frame the driver decoded must match the worker's digest; on a
    mismatch the range is fetched again with ``exact`` (decode and skip from the start).
    """

    batch_size = 1

    def __init__(self, ordered: Iterator[RangeResult], ranges: Sequence[FrameRange],
                 fetch: Callable[[FrameRange, bool], RangeResult], *, class_names: tuple[str, ...] = ()) -> None:
        self._ordered = ordered
        self._ranges = list(ranges)
        self._fetch = fetch
        self._class_names = class_names
        self._current: RangeResult | None = None
        self._range = -1
        self._pos = 0
        self.refetched = 0

    def _next_range(self) -> None:
        self._range += 1
        if self._range >= len(self._ranges):
            raise FastSegError("The Ray workers returned fewer frames than the driver decoded; rerun without --ray.")
        self._current = next(self._ordered)
        self._pos = 0
        rng = self._ranges[self._range]
        if rng.stop is not None and self._range + 1 < len(self._ranges) and len(self._current.labels) < rng.stop - rng.start:
            self._current = self._fetch(rng, True)  # a range cut short mid-video: its seek went wrong
            self.refetched += 1

    def predict_images(self, images_bgr: Sequence[npt.NDArray[np.uint8]], *,
                       target_size: TargetSize | None = None) -> list[SegResult]:
        out = []
        for image in images_bgr:
            while self._current is None or self._pos >= len(self._current.labels):
                self._next_range()
            assert self._current is not None
            if self._current.digests[self._pos] != frame_digest(image):
                self._current = self._fetch(self._ranges[self._range], True)
                self.refetched += 1
                if self._pos >= len(self._current.digests) or self._current.digests[self._pos] != frame_digest(image):
                    raise FastSegError(
                        f"A Ray worker decoded frame {self._pos} of range {self._range} differently from the driver "
                        "even when decoding from the start; rerun without --ray."
                    )
            score = self._current.scores[self._pos]
            out.append(SegResult(
                input_path=None, input_img=image,
                pred=self._current.labels[self._pos].astype(np.int32)[None],
                score=None if score is None else score, class_names=self._class_names,
            ))
            self._pos += 1
        return out


def kept_frames(info: VideoInfo, every: int, max_frames: int | None) -> int | None:
    """How many frames a run keeps, as far as the container's frame count says (None: unknown)."""
    if info.frame_count is None:
        return max_frames
    kept = math.ceil(info.frame_count / every)
    return kept if max_frames is None else min(kept, max_frames)


def segment_video(
    src: VideoSource,
    out_dir: Path,
    *,
    model_ref: Any,
    plan: WorkerPlan,
    segmenter_kwargs: Mapping[str, Any],
    render: RenderOptions,
    batch_size: int = 1,
    every: int = 1,
    max_frames: int | None = None,
    target_size: TargetSize | None = None,
    on_open: Callable[[VideoInfo], None] | None = None,
    on_frame: Callable[[Any], None] | None = None,
) -> VideoOutcome:
    """Segment a video file on the connected Ray cluster into ``out_dir`` as ``video_to_dir`` does.

    Raises:
        InputError: a stream or camera (only files split into ranges), or a file that cannot be read.
    """
    import ray
    from ray.util import ActorPool

    if src.kind != "file":
        raise InputError(f"{src.spec!r} is a {src.kind}: only video files split across Ray workers; drop --ray.")
    cap = src.open()
    try:
        info = video_info(cap, src)
    finally:
        cap.release()
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}.")
    ranges = frame_ranges(kept_frames(info, every, max_frames), plan.workers, max_frames=max_frames)
    actor_cls: Any = ray.remote(**plan.ray_options())(RangeWorker)
    actors: list[Any] = [actor_cls.remote(model_ref, plan=plan, segmenter_kwargs=segmenter_kwargs, batch_size=batch_size)
              for _ in range(min(plan.workers, len(ranges)))]
    pool = ActorPool(actors)

    def fetch(rng: FrameRange, exact: bool) -> RangeResult:
        result = ray.get(actors[0].segment.remote(src.spec, rng, every, target_size, exact))
        assert isinstance(result, RangeResult)
        return result

    ordered = pool.map(lambda a, r: a.segment.remote(src.spec, r, every, target_size, False), ranges)
    feed = RangeFeed(ordered, ranges, fetch, class_names=render.class_names)
    try:
        return video_to_dir(feed, src, out_dir, render=render, every=every, max_frames=max_frames,
                            on_open=on_open, on_frame=on_frame)
    finally:
        for actor in actors:
            ray.kill(actor)


@dataclass
class RayVideoRunner:
    """A started Ray session with the model shipped: ``segment`` runs one video on it."""

    meta: ModelMeta
    model_ref: Any
    plan: WorkerPlan
    segmenter_kwargs: Mapping[str, Any]
    batch_size: int

    def segment(self, src: VideoSource, out_dir: Path, *, render: RenderOptions, every: int = 1,
                max_frames: int | None = None, target_size: TargetSize | None = None,
                on_open: Callable[[VideoInfo], None] | None = None,
                on_frame: Callable[[Any], None] | None = None) -> VideoOutcome:
        """``segment_video`` on this session; a worker's fastseg error comes back as itself."""
        try:
            return segment_video(src, out_dir, model_ref=self.model_ref, plan=self.plan,
                                 segmenter_kwargs=self.segmenter_kwargs, render=render, batch_size=self.batch_size,
                                 every=every, max_frames=max_frames, target_size=target_size,
                                 on_open=on_open, on_frame=on_frame)
        except FastSegError:
            raise
        except Exception as exc:  # an actor that cannot start (device, model): say why in one line
            cause = worker_error(exc)
            if cause is None:
                raise
            raise cause from None


@contextlib.contextmanager
def ray_videos(model: str | Path, *, device: str = "cpu", workers: int | None = None, address: str | None = None,
               batch_size: int = 1, num_cpus: int | None = None,
               segmenter_kwargs: Mapping[str, Any] | None = None) -> Iterator[RayVideoRunner]:
    """Connect to (or start) Ray, resolve the model here and ship it once; videos then run with
    ``runner.segment(src, out_dir, render=...)``. Ray is shut down on exit when this started it.

    Raises:
        InputError, DeviceError, MissingDependencyError, UnknownModelError, ModelDirError.
    """
    kwargs = dict(segmenter_kwargs or {})
    with ray_session(address=address, device=device, num_cpus=num_cpus):
        import ray

        model_dir = resolve_model_dir(model, home=kwargs.pop("home", None), weights=kwargs.pop("weights", "official"))
        plan = plan_workers(device, workers=workers, cluster=cluster_resources())
        yield RayVideoRunner(meta=read_meta(model_dir), model_ref=ray.put(ModelFiles.pack(model_dir)), plan=plan,
                             segmenter_kwargs=kwargs, batch_size=batch_size)
