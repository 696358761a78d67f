"""Writing segmented video: the colour (or overlay) video through ``cv2.VideoWriter`` and, on
request, one lossless label PNG per frame.

The pip ``opencv-python(-headless)`` wheels bundle an FFmpeg without H.264/H.265 encoders;
what they do write (checked with OpenCV 5.1): MPEG-4 Part 2 (``mp4v``) in .mp4/.mov/.m4v/.mkv,
Motion-JPEG (``MJPG``) in .avi, VP8 in .webm, and lossless FFV1 (``--fourcc FFV1``) in
.mkv/.avi. docs/video.md says how to get H.264.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".mkv": "mp4v", ".avi": "MJPG", ".webm": "VP80"}
DEFAULT_SUFFIX = ".mp4"

log = logging.getLogger(__name__)


def output_suffix(source_suffix: str) -> str:
    """The container a result is written in: the source's when OpenCV can write it, else .mp4."""
    low = source_suffix.lower()
    return low if low in FOURCC_BY_SUFFIX else DEFAULT_SUFFIX


class VideoOutput:
    """A ``cv2.VideoWriter`` for BGR frames of one size; a context manager that always releases,
    so an interrupted run still leaves a playable file (with the frames written so far).

    Raises:
        InputError: OpenCV cannot write this container/codec pair (the message lists what works).
    """

    def __init__(self, path: Path, *, fps: float, size: tuple[int, int], fourcc: str | None = None) -> None:
        self.path = Path(path)
        self.size = size
        self.frames = 0
        code = fourcc or FOURCC_BY_SUFFIX.get(self.path.suffix.lower(), "mp4v")
        if len(code) != 4:
            raise InputError(f"A FourCC code has 4 characters (mp4v, MJPG, FFV1, ...), got {code!r}.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        odd = bool(size[0] % 2 or size[1] % 2)
        if odd and code == "MJPG":  # OpenCV's own Motion-JPEG writer keeps odd sizes
            self._writer: Any = cv2.VideoWriter(str(self.path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*code),
                                                fps, size)
        else:
            if odd:
                log.warning(
                    "%s: OpenCV's FFmpeg writer stores %dx%d frames as %dx%d (even sizes only, whatever the codec); "
                    "MJPG in .avi keeps the full size.", self.path, size[0], size[1], size[0] & ~1, size[1] & ~1,
                )
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*code), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            self.path.unlink(missing_ok=True)
            raise InputError(
                f"OpenCV cannot write {self.path.suffix or 'this container'} with codec {code!r} here. "
                "This OpenCV build writes: .mp4/.mov/.mkv with mp4v, .avi with MJPG, .webm with VP80, "
                ".mkv/.avi with FFV1 (lossless). See docs/video.md for H.264."
            )

    def write(self, frame_bgr: npt.NDArray[np.uint8]) -> None:
        """Append one frame (its size must be the writer's)."""
        h, w = frame_bgr.shape[:2]
        if (w, h) != self.size:
            raise InputError(f"Frame {self.frames} is {w}x{h}, the video is {self.size[0]}x{self.size[1]}: "
                             "a source that changes size mid-stream cannot go in one video file.")
        self._writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (writes the container index, which makes it playable)."""
        self._writer.release()

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def full_size_path(path: Path, size: tuple[int, int], fourcc: str | None) -> Path:
    """Where a result video of ``size`` keeps that size: an odd width or height, which OpenCV's
    FFmpeg writer would crop to even, goes to ``.avi`` (Motion-JPEG, OpenCV's own writer) unless
    the caller chose a codec."""
    if fourcc is None and (size[0] % 2 or size[1] % 2) and path.suffix.lower() != ".avi":
        log.warning("%s: the source is %dx%d (odd); OpenCV's FFmpeg writer keeps only even sizes, so the result "
                    "is written full size as %s (Motion-JPEG) instead.", path.name, size[0], size[1], path.with_suffix(".avi").name)
        return path.with_suffix(".avi")
    return path


def label_png_dtype(num_classes: int) -> type[np.unsignedinteger[Any]]:
    """uint8 when labels fit (<= 256 classes), else uint16."""
    return np.uint8 if num_classes <= 256 else np.uint16


def write_label_png(path: Path, labels_hw: npt.NDArray[Any], dtype: type[np.unsignedinteger[Any]]) -> None:
    """One lossless label map: PNG of ``dtype`` (labels as pixel values, not colours)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(labels_hw.astype(dtype, copy=False)))
    if not ok:
        raise InputError(f"Cannot encode the label map for {path}.")
    path.write_bytes(buf.tobytes())
