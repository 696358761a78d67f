"""``fastseg predict``'s video side: its options, splitting ``--input`` into videos and images,
and the per-video run with a progress bar (frames/s, and an ETA when the length is known)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fastseg.cli.options import F

if TYPE_CHECKING:
    from fastseg.model_dir import ModelMeta
    from fastseg.palettes import Palette
    from fastseg.segmenter import Segmenter
    from fastseg.video import RenderOptions, VideoInfo, VideoOutcome, VideoSource

OVERLAY_ALPHA = 0.4  # fastseg.results.DEFAULT_OVERLAY_ALPHA, kept here so the CLI starts without OpenCV


def video_options() -> Callable[[F], F]:
    """``--save_labels``, ``--every``, ``--max-frames``, ``--fourcc``, ``--palette``, ``--legend``."""
    options = (
        click.option("--save_labels", "--save-labels", "save_labels", is_flag=True,
                     help="Video: also write each frame's labels as lossless PNG, <stem>_res/000000.png ... "
                          "(uint8; uint16 past 256 classes)."),
        click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Video: segment every N-th frame (the result video has fps/N, the same duration)."),
        click.option("--max-frames", "--max_frames", "max_frames", type=click.IntRange(min=1), default=None,
                     help="Video: stop after N segmented frames (a stream or camera runs until Ctrl-C otherwise)."),
        click.option("--fourcc", default=None,
                     help="Video codec FourCC [default: mp4v for .mp4/.mov/.mkv, MJPG for .avi, VP80 for .webm]; "
                          "FFV1 in .mkv/.avi is lossless."),
        click.option("--palette", default=None,
                     help="Colours: paddlex (default), cityscapes, ade20k, or a JSON file of [[R,G,B], ...] "
                          'or {"palette": [...], "class_names": [...]}.'),
        click.option("--save_scores", "--save-scores", "save_scores", is_flag=True,
                     help="Also write each pixel's winning-class probability as an 8-bit PNG (0-255): <stem>_res_score.png, "
                          "for a video <stem>_res_score/000000.png ..."),
        click.option("--legend", is_flag=True,
                     help="Also write <stem>_res_legend.png naming each class present with its colour."),
    )

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def split_inputs(input_: str) -> tuple[list[VideoSource], Any]:
    """The videos in ``--input`` and what is left for the image path (None when nothing is).

    A video file, stream URL or ``camera:N`` is one video; a directory gives its videos
    (recursive) and its images.
    """
    from fastseg.errors import InputError
    from fastseg.video import is_video_input, video_source, videos_in

    if is_video_input(input_):
        return [video_source(input_)], None
    path = Path(input_).expanduser()
    if path.is_dir():
        videos = videos_in(path)
        if videos:
            from fastseg.inputs import expand_inputs

            try:
                return videos, expand_inputs(input_)
            except InputError:  # a directory of videos only
                return videos, None
    return [], input_


@dataclass(frozen=True)
class VideoRun:
    """The options of one ``predict`` run that concern videos."""

    out_dir: Path
    overlay: float | None
    palette: Palette | None
    save_labels: bool
    save_scores: bool
    legend: bool
    every: int
    max_frames: int | None
    fourcc: str | None
    target_size: Any


def render_options(meta: ModelMeta, run: VideoRun) -> RenderOptions:
    """How ``run`` draws and writes a video of a model with ``meta``."""
    from fastseg.video import RenderOptions

    return RenderOptions(
        overlay=run.overlay, palette=None if run.palette is None else run.palette.lut(),
        save_labels=run.save_labels, save_scores=run.save_scores, num_classes=meta.num_classes, legend=run.legend,
        class_names=meta.class_names, palette_names=run.palette.class_names if run.palette else (),
        fourcc=run.fourcc,
    )


def run_videos(seg: Segmenter, videos: list[VideoSource], run: VideoRun) -> int:
    """Segment each video locally with a progress bar (``report_videos``)."""
    from fastseg.video import video_to_dir

    render = render_options(seg.meta, run)

    def one(src: VideoSource, opened: Callable[[VideoInfo], None], advance: Callable[[Any], None]) -> VideoOutcome:
        return video_to_dir(seg, src, run.out_dir, render=render, every=run.every, max_frames=run.max_frames,
                            target_size=run.target_size, on_open=opened, on_frame=advance)

    return report_videos(videos, run, one)


SegmentOne = Callable[["VideoSource", Callable[["VideoInfo"], None], Callable[[Any], None]], "VideoOutcome"]


def report_videos(videos: list[VideoSource], run: VideoRun, segment_one: SegmentOne, *, where: str = "") -> int:
    """Run ``segment_one(src, on_open, on_frame)`` per video with a progress bar and a summary
    line; returns how many frames were written.

    Ctrl-C finishes the current video's file (playable) and stops the run with exit code 130.
    """
    from tqdm import tqdm

    total = 0
    for src in videos:
        with tqdm(unit="frame", desc=src.stem, disable=None, dynamic_ncols=True) as bar:

            def opened(info: VideoInfo, bar: Any = bar) -> None:
                if info.frame_count is not None:  # a known length: tqdm shows an ETA
                    kept = math.ceil(info.frame_count / run.every)
                    bar.reset(total=kept if run.max_frames is None else min(kept, run.max_frames))

            def advance(_res: Any, bar: Any = bar) -> None:
                bar.update(1)

            outcome = segment_one(src, opened, advance)
        fps = outcome.frames / outcome.seconds if outcome.seconds else 0.0
        extras = "".join(f", {p}" for p in (outcome.labels_dir, outcome.scores_dir, outcome.legend) if p is not None)
        click.echo(f"{src.spec}: {outcome.frames} frame(s) in {outcome.seconds:.2f} s ({fps:.1f} frames/s, "
                   f"decode + inference + encode{where}) -> {outcome.video}{extras}")
        total += outcome.frames
        if outcome.interrupted:
            click.echo("Interrupted: the video written so far is complete and playable.", err=True)
            raise SystemExit(130)
    return total
