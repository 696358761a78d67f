"""Segmenting a video: ``predict_video`` yields one ``FrameResult`` per frame; ``video_to_dir``
writes ``<stem>_res.mp4`` (and label PNGs, a legend) from it.

Three stages overlap: a decoder thread (``prefetch``), inference in the caller's thread, and
an encoder thread (``Drain``), joined by bounded queues so memory stays flat however long the
video. Frames go to the model one at a time (or ``batch_size`` at a time) through the same
``predict_images`` path as a single image, so each frame's labels are those of predicting it alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError
from fastseg.palettes import legend_names, paddlex_palette, present_labels, save_legend
from fastseg.processing import TargetSize
from fastseg.results import SegResult, colorize, overlay, save_score_png
from fastseg.video.pipeline import Drain, prefetch
from fastseg.video.sources import VideoInfo, VideoSource, read_frames, seek_frame, video_info, video_source
from fastseg.video.writer import VideoOutput, full_size_path, label_png_dtype, output_suffix, write_label_png

QUEUE_FRAMES = 4  # per queue: decoded frames waiting for the model, results waiting for the encoder


class FramePredictor(Protocol):
    """What ``predict_video`` needs of a ``Segmenter``."""

    batch_size: int

    def predict_images(
        self, images_bgr: Sequence[npt.NDArray[np.uint8]], *, target_size: TargetSize | None = None
    ) -> list[SegResult]: ...


@dataclass(frozen=True, eq=False)
class FrameResult(SegResult):
    """A ``SegResult`` for one video frame, plus ``frame_index`` (in the source, 0-based) and
    ``timestamp`` (seconds). ``input_path`` is the video; ``input_img`` the frame."""

    frame_index: int = 0
    timestamp: float = 0.0

    def __repr__(self) -> str:
        return f"FrameResult(input_path={self.input_path!r}, frame_index={self.frame_index}, t={self.timestamp:.3f}s)"

    def _stem(self) -> str:
        """``<video stem>_<frame index, 6 digits>``: the frames of one video saved into a directory
        do not overwrite each other (``clip_000012_res.png``)."""
        return f"{super()._stem()}_{self.frame_index:06d}"


def as_video_source(source: VideoSource | str | Path) -> VideoSource:
    """A ``VideoSource`` from what ``predict_video`` accepts."""
    return source if isinstance(source, VideoSource) else video_source(source)


def predict_video(
    seg: FramePredictor,
    source: VideoSource | str | Path,
    *,
    every: int = 1,
    max_frames: int | None = None,
    target_size: TargetSize | None = None,
    on_open: Callable[[VideoInfo], None] | None = None,
    start: int = 0,
    exact_seek: bool = False,
) -> Generator[FrameResult, None, None]:
    """Segment a video file, stream or camera lazily, one ``FrameResult`` per kept frame.

    Args:
        every: keep every N-th frame (indices 0, N, 2N, ...).
        max_frames: stop after this many kept frames.
        on_open: called once with the source's ``VideoInfo`` before the first frame.
        start: a file only: begin at this source frame (``seek_frame``; Ray's frame ranges).
        exact_seek: reach ``start`` by decoding and skipping every frame before it.

    Raises:
        InputError: the source cannot be opened (the message says what to check).
    """
    src = as_video_source(source)
    cap = src.open()
    try:
        info = video_info(cap, src)
        if on_open is not None:
            on_open(info)
        cap = seek_frame(cap, src, start, exact=exact_seek)
        frames = prefetch(
            read_frames(cap, fps=info.fps, live=src.is_live, every=every, max_frames=max_frames, start=start),
            QUEUE_FRAMES,
        )
        try:
            batch = []
            for frame in frames:
                batch.append(frame)
                if len(batch) < max(seg.batch_size, 1):
                    continue
                yield from _segment(seg, src, batch, target_size)
                batch = []
            yield from _segment(seg, src, batch, target_size)
        finally:
            frames.close()  # stops and joins the decoder before the capture is released
    finally:
        cap.release()


def _segment(seg: FramePredictor, src: VideoSource, batch: list[Any], target_size: TargetSize | None) -> Iterator[FrameResult]:
    if not batch:
        return
    results = seg.predict_images([f.image for f in batch], target_size=target_size)
    for frame, res in zip(batch, results, strict=True):
        base = {f.name: getattr(res, f.name) for f in fields(SegResult)}
        base["input_path"] = src.spec
        yield FrameResult(**base, frame_index=frame.index, timestamp=frame.timestamp)


@dataclass
class VideoOutcome:
    """What ``video_to_dir`` wrote: the video, its frame count, the label PNG folder and legend."""

    video: Path
    frames: int = 0
    seconds: float = 0.0
    labels_dir: Path | None = None
    scores_dir: Path | None = None
    legend: Path | None = None
    interrupted: bool = False
    info: VideoInfo | None = None
    classes: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class RenderOptions:
    """How frames are drawn and what else is written.

    ``overlay``: None = the colour map alone, else the blend's alpha over the frame.
    ``palette``: RGB uint8 [256,3] look-up table (None = PaddleX's).
    ``class_names``: the model's names per label, ``palette_names`` a palette file's (used where
    the model's are generic ``class_N``); ``legend``: write ``<stem>_res_legend.png``.
    """

    overlay: float | None = None
    palette: npt.NDArray[np.uint8] | None = None
    save_labels: bool = False
    save_scores: bool = False
    num_classes: int = 256
    legend: bool = False
    class_names: tuple[str, ...] = ()
    palette_names: tuple[str, ...] = ()
    fourcc: str | None = None


def video_output_path(src: VideoSource, out_dir: Path) -> Path:
    """``out_dir/<stem>_res.<ext>``: the source's container when OpenCV writes it, else .mp4."""
    suffix = output_suffix(Path(src.spec).suffix) if src.kind == "file" else ".mp4"
    return out_dir / f"{src.stem}_res{suffix}"


def video_to_dir(
    seg: FramePredictor,
    source: VideoSource | str | Path,
    out_dir: Path,
    *,
    render: RenderOptions | None = None,
    every: int = 1,
    max_frames: int | None = None,
    target_size: TargetSize | None = None,
    on_open: Callable[[VideoInfo], None] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> VideoOutcome:
    """Segment ``source`` into ``out_dir/<stem>_res.mp4`` (same size; frame rate / ``every``).

    With ``render.save_labels``, ``out_dir/<stem>_res/<frame index:06d>.png`` holds each kept
    frame's labels (uint8, uint16 past 256 classes); with ``render.save_scores``,
    ``<stem>_res_score/<index>.png`` its score map (0-255; needs a Segmenter with ``scores``).
    Ctrl-C (``KeyboardInterrupt``) stops the run, finishes the file (playable, with the frames so
    far) and sets ``interrupted``.
    """
    opts = render or RenderOptions()
    src = as_video_source(source)
    outcome = VideoOutcome(video=video_output_path(src, out_dir))
    labels_dir = out_dir / f"{src.stem}_res" if opts.save_labels else None
    scores_dir = out_dir / f"{src.stem}_res_score" if opts.save_scores else None
    for folder in (labels_dir, scores_dir):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    outcome.labels_dir, outcome.scores_dir = labels_dir, scores_dir
    dtype = label_png_dtype(opts.num_classes)
    holder: dict[str, VideoOutput] = {}

    def opened(info: VideoInfo) -> None:
        outcome.info = info
        fps = info.fps / every  # kept frames span the source's duration
        outcome.video = full_size_path(outcome.video, (info.width, info.height), opts.fourcc)
        holder["out"] = VideoOutput(outcome.video, fps=fps, size=(info.width, info.height), fourcc=opts.fourcc)
        if on_open is not None:
            on_open(info)

    def encode(res: FrameResult) -> None:
        labels = res.labels_hw
        if opts.overlay is not None and res.input_img is not None:
            picture = overlay(res.input_img, labels, opts.palette, opts.overlay)
        else:
            picture = colorize(labels, opts.palette, bgr=True)
        holder["out"].write(picture)
        if labels_dir is not None:
            write_label_png(labels_dir / f"{res.frame_index:06d}.png", labels, dtype)
        if scores_dir is not None:
            save_score_png(scores_dir / f"{res.frame_index:06d}.png", res)
        if opts.legend:
            outcome.classes |= present_labels(labels)

    start = time.perf_counter()
    drain: Drain[FrameResult] = Drain(encode, QUEUE_FRAMES)
    results = predict_video(seg, src, every=every, max_frames=max_frames, target_size=target_size, on_open=opened)
    try:
        for res in results:
            drain.put(res)
            outcome.frames += 1
            if on_frame is not None:
                on_frame(res)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        results.close()  # stops the decoder, releases the capture
        try:
            drain.close()
        finally:
            if "out" in holder:
                holder["out"].close()
    outcome.seconds = time.perf_counter() - start
    if outcome.frames == 0:
        outcome.video.unlink(missing_ok=True)
        if not outcome.interrupted:
            raise InputError(f"Video {src.spec!r} has no readable frames (empty, or a codec OpenCV cannot decode).")
    if opts.legend and outcome.classes:
        outcome.legend = write_legend(out_dir / f"{src.stem}_res_legend.png", sorted(outcome.classes), opts)
    return outcome


def write_legend(path: Path, labels: Sequence[int], opts: RenderOptions) -> Path:
    """Write the legend PNG naming ``labels`` with their colours."""
    lut = opts.palette if opts.palette is not None else paddlex_palette()
    return save_legend(path, labels, legend_names(max(labels) + 1, opts.class_names, opts.palette_names), lut)
