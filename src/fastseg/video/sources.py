"""Where video frames come from: files, directories of videos, rtsp/http(s) streams and cameras.

A ``VideoSource`` names one source and opens it with OpenCV (``cv2.VideoCapture``, whose pip
wheel bundles FFmpeg); ``read_frames`` turns an open capture into ``Frame`` records carrying
the frame's index in the source and its timestamp. Nothing here runs a model.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".m3u8")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://", "srt://")
CAMERA_PREFIX = "camera:"
STREAM_TIMEOUT_MS = 10_000  # a stream that sends nothing for this long has ended

SourceKind = Literal["file", "stream", "camera"]


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index in the source (0-based, counting every frame read),
    its timestamp in seconds, and the BGR uint8 [H,W,3] image."""

    index: int
    timestamp: float
    image: npt.NDArray[np.uint8]


@dataclass(frozen=True)
class VideoInfo:
    """What a capture reports: frame size, frame rate, and frame count (None for streams)."""

    width: int
    height: int
    fps: float
    frame_count: int | None


@dataclass(frozen=True)
class VideoSource:
    """One video input: ``spec`` as the user wrote it, its ``kind`` and the ``stem`` outputs are named by."""

    spec: str
    kind: SourceKind
    stem: str

    @property
    def is_live(self) -> bool:
        """Streams and cameras: no known length, no ETA."""
        return self.kind != "file"

    def open(self) -> Any:
        """An opened ``cv2.VideoCapture``.

        Raises:
            InputError: the file, stream or camera cannot be opened (the message says what to check).
        """
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(self.spec[len(CAMERA_PREFIX):]))
            hint = "check the camera index (camera:0 is the first) and that no other program holds it"
        elif self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
            hint = "check the URL and that the stream is live (OpenCV waits 10 s for it)"
        else:
            if not Path(self.spec).is_file():
                raise InputError(f"Video {self.spec!r} does not exist.")
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)
            hint = "the file may be truncated or use a codec this OpenCV build cannot decode; convert it with " \
                   "'ffmpeg -i IN -c:v libx264 OUT.mp4' or 'ffmpeg -i IN -c:v mjpeg OUT.avi'"
        if not cap.isOpened():
            cap.release()
            raise InputError(f"Cannot open video {self.spec!r}: {hint}.")
        remote_file = self.kind == "stream" and self.spec.lower().startswith(("http://", "https://")) \
            and not urllib.parse.urlparse(self.spec).path.lower().endswith(".m3u8")
        sized = cap.get(cv2.CAP_PROP_FRAME_WIDTH) > 0 and cap.get(cv2.CAP_PROP_FRAME_HEIGHT) > 0
        if (self.kind == "file" or remote_file) and not sized:  # live streams and cameras may size on the first frame
            cap.release()  # opened, but nothing readable: say so here, not later as a writer's failure at 0x0
            remote = "; over HTTP the server must answer Range requests (an MP4's index may sit at its end), " \
                     "or download the file first" if remote_file else ""
            raise InputError(f"Cannot read video {self.spec!r}: it opens but has no frame size; {hint}{remote}.")
        return cap


def _safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "stream"


def is_video_input(x: object) -> bool:
    """Whether ``x`` names a video: a file with a video suffix, a stream URL or ``camera:N``.

    An http(s) URL is a video only when its path ends in a video suffix (``.mp4``, ``.m3u8``, ...);
    any other http(s) URL is an image, as before.
    """
    if not isinstance(x, (str, Path)):
        return False
    text = str(x)
    low = text.lower()
    if low.startswith(STREAM_SCHEMES) or re.fullmatch(r"camera:\d+", low):
        return True
    if low.startswith(("http://", "https://")):
        try:
            path = urllib.parse.urlparse(text).path
        except ValueError:  # an unparsable URL is no video; the image path reports it as a failed input
            return False
        return Path(path).suffix.lower() in VIDEO_SUFFIXES
    return Path(text).suffix.lower() in VIDEO_SUFFIXES


def video_source(x: str | Path) -> VideoSource:
    """The ``VideoSource`` for a path, stream URL or ``camera:N``.

    Raises:
        InputError: not a video input (the message lists what is).
    """
    text = str(x)
    low = text.lower()
    if re.fullmatch(r"camera:\d+", low):
        return VideoSource(spec=low, kind="camera", stem=f"camera{low[len(CAMERA_PREFIX):]}")
    if low.startswith(STREAM_SCHEMES + ("http://", "https://")):
        if not is_video_input(text):
            raise InputError(f"{text!r} is not a video URL: give rtsp://..., or an http(s) URL ending in a video suffix.")
        parsed = urllib.parse.urlparse(text)
        stem = Path(parsed.path).stem or parsed.hostname or "stream"
        return VideoSource(spec=text, kind="stream", stem=_safe_stem(stem))
    if not is_video_input(text):
        raise InputError(
            f"{text!r} is not a video: give a file ending in {', '.join(VIDEO_SUFFIXES)}, a stream URL "
            "(rtsp://, rtmp://, http(s)://...m3u8) or camera:N."
        )
    return VideoSource(spec=text, kind="file", stem=Path(text).stem)


def videos_in(directory: Path) -> list[VideoSource]:
    """The video files under ``directory`` (recursive, sorted)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return [VideoSource(spec=str(p), kind="file", stem=p.stem) for p in files]


def video_info(cap: Any, source: VideoSource) -> VideoInfo:
    """Size, frame rate (25 when the source does not say) and frame count (None when live or unknown)."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not 0.0 < fps < 1000.0:
        fps = 25.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return VideoInfo(
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps=fps,
        frame_count=count if count > 0 and not source.is_live else None,
    )


def seek_frame(cap: Any, source: VideoSource, index: int, *, exact: bool = False) -> Any:
    """Position a file's capture so that its next frame is frame ``index``; returns the capture.

    Seeks with ``CAP_PROP_POS_FRAMES`` (OpenCV's FFmpeg backend seeks to the key frame before and
    decodes forward); when OpenCV then reports another position, or with ``exact``, it reopens the
    file and decodes and skips ``index`` frames from the start instead, which is exact by
    construction. Callers that must be sure (``fastseg.ray.video``) also compare frame digests.

    Raises:
        InputError: not a file (streams and cameras cannot seek), or the file cannot be reopened.
    """
    if index <= 0:
        return cap
    if source.kind != "file":
        raise InputError(f"{source.spec!r} is a {source.kind}; only video files can start at a frame.")
    if not exact and cap.set(cv2.CAP_PROP_POS_FRAMES, index) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index:
        return cap
    cap.release()
    cap = source.open()
    for _ in range(index):
        if not cap.grab():
            break
    return cap


def read_frames(
    cap: Any, *, fps: float, live: bool, every: int = 1, max_frames: int | None = None, start: int = 0
) -> Iterator[Frame]:
    """Decode frames from an open capture: every ``every``-th one, at most ``max_frames`` of them.

    ``start``: the source index of the capture's next frame (after ``seek_frame``); indices,
    timestamps and ``every`` count from the source's first frame. A file's timestamp is ``index / fps``; a live source's is the stream's own clock
    (``CAP_PROP_POS_MSEC``) when it has one, else seconds since the first frame.
    Ends when the source ends (end of file, stream closed or silent for 10 s).
    """
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}.")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}.")
    index, taken, began = start - 1, 0, time.monotonic()
    while max_frames is None or taken < max_frames:
        if not cap.grab():
            return
        index += 1
        if index % every:
            continue  # grab() without retrieve() skips the colour conversion of unused frames
        ok, image = cap.retrieve()
        if not ok or image is None:
            return
        if live:
            pos = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
            stamp = pos / 1000.0 if pos > 0 else time.monotonic() - began
        else:
            stamp = index / fps
        yield Frame(index=index, timestamp=stamp, image=image)
        taken += 1
