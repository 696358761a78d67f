"""Video in, video out: ``Segmenter.predict_video``, ``fastseg predict --input clip.mp4`` and the
bounded-queue pipeline, on tiny clips written with cv2.VideoWriter and tiny models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir, random_conv_model_dir

from fastseg.cli import main
from fastseg.cli.video import OVERLAY_ALPHA
from fastseg.errors import InputError
from fastseg.results import DEFAULT_OVERLAY_ALPHA
from fastseg.segmenter import Segmenter
from fastseg.video import RenderOptions, VideoSource, is_video_input, video_source, video_to_dir
from fastseg.video.pipeline import Drain, prefetch
from fastseg.video.writer import VideoOutput, label_png_dtype, write_label_png

W, H, N, FPS = 64, 48, 12, 12.0


def write_clip(path: Path, n: int = N, fourcc: str = "mp4v", fps: float = FPS) -> Path:
    """A clip of random-noise frames (every pixel's class differs from its neighbours')."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    writer.release()
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def video_props(path: Path) -> tuple[int, int, float, int]:
    """(width, height, fps, frames actually decoded)."""
    cap = cv2.VideoCapture(str(path))
    w, h, fps = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return w, h, fps, len(decoded_frames(path))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_conv_model_dir(tmp_path_factory.mktemp("models") / "rand", kind="logits", classes=5)


@pytest.fixture(scope="module")
def seg(model_dir: Path) -> Iterator[Segmenter]:
    with Segmenter(model_dir) as s:
        yield s


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


# ------------------------------------------------------------------ Python API
def test_predict_video_labels_equal_single_frame_predict(seg: Segmenter, clip: Path) -> None:
    results = list(seg.predict_video(clip))
    frames = decoded_frames(clip)
    assert [r.frame_index for r in results] == list(range(N))
    assert [r.timestamp for r in results] == pytest.approx([i / FPS for i in range(N)])
    assert results[0].input_path == str(clip) and results[0]["pred"].shape == (1, H, W)
    for res, frame in zip(results, frames, strict=True):
        alone = next(seg.predict(frame))
        np.testing.assert_array_equal(res.pred, alone.pred)
        np.testing.assert_array_equal(res.input_img, frame)
    assert len({int(x) for x in np.unique(results[0].pred)}) == 5  # the check is not vacuous


def test_predict_video_every_and_max_frames(seg: Segmenter, clip: Path) -> None:
    results = list(seg.predict_video(clip, every=5))
    assert [r.frame_index for r in results] == [0, 5, 10]
    assert [r.frame_index for r in seg.predict_video(clip, every=2, max_frames=4)] == [0, 2, 4, 6]
    with pytest.raises(InputError, match="every must be >= 1"):
        list(seg.predict_video(clip, every=0))


def test_frames_saved_into_one_directory_keep_their_own_files(seg: Segmenter, clip: Path, tmp_path: Path) -> None:
    """``res.save_to_img("out/")`` in a predict_video loop: one file per frame, not one overwritten."""
    written = [res.save_to_img(tmp_path / "out") for res in seg.predict_video(clip, every=5)]
    written += [res.save_to_json(tmp_path / "out") for res in seg.predict_video(clip, every=5, max_frames=1)]
    assert [p.name for p in written] == [f"{clip.stem}_{i:06d}_res.png" for i in (0, 5, 10)] + [
        f"{clip.stem}_000000_res.json"
    ]
    assert all(p.is_file() for p in written)


def test_predict_video_batch_size_keeps_labels(model_dir: Path, clip: Path, seg: Segmenter) -> None:
    with Segmenter(model_dir, batch_size=4) as batched:
        got = [r.pred for r in batched.predict_video(clip)]
    want = [r.pred for r in seg.predict_video(clip)]
    assert len(got) == N
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sources_are_recognised() -> None:
    assert is_video_input("a/clip.MP4") and is_video_input("camera:0") and is_video_input("rtsp://h/x")
    assert is_video_input("https://h/live/index.m3u8") and not is_video_input("https://h/photo.jpg")
    assert not is_video_input("a/photo.png")
    assert video_source("camera:2") == VideoSource("camera:2", "camera", "camera2")
    assert video_source("rtsp://cam.local:554/live/main").stem == "main"
    with pytest.raises(InputError, match="not a video"):
        video_source("photo.png")


def test_missing_and_unreadable_videos_are_clear_errors(seg: Segmenter, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list(seg.predict_video(tmp_path / "none.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match="Cannot open video"):
        list(seg.predict_video(bad))


# ------------------------------------------------------------------ files written
def test_cli_video_same_size_fps_frames_and_label_pngs(model_dir: Path, seg: Segmenter, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--input", str(clip), "--model", str(model_dir),
                                       "--save_path", str(out), "--save_labels", "--legend"])
    assert result.exit_code == 0, result.output
    assert f"{N} frame(s)" in result.output and "frames/s" in result.output
    assert video_props(out / "clip_res.mp4") == (W, H, FPS, N)
    pngs = sorted((out / "clip_res").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(N)]
    for png, frame in zip(pngs, decoded_frames(clip), strict=True):
        labels = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint8 and labels.shape == (H, W)
        np.testing.assert_array_equal(labels, next(seg.predict(frame)).labels_hw)
    legend = cv2.imread(str(out / "clip_res_legend.png"))
    assert legend is not None and legend.shape[0] >= 5 * 20  # one row per class present (all 5)


def test_cli_every_max_frames_overlay_and_avi(model_dir: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", fourcc="MJPG")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--input", str(clip), "--model", str(model_dir), "--save_path",
                                       str(out), "--every", "3", "--max-frames", "3", "--save_labels", "--overlay", "0.5"])
    assert result.exit_code == 0, result.output
    assert video_props(out / "clip_res.avi") == (W, H, FPS / 3, 3)
    assert sorted(p.name for p in (out / "clip_res").iterdir()) == ["000000.png", "000003.png", "000006.png"]


def test_overlay_alpha_blends_over_the_frame(seg: Segmenter, clip: Path, tmp_path: Path) -> None:
    plain = video_to_dir(seg, clip, tmp_path / "a", max_frames=1, render=RenderOptions(fourcc="FFV1"))
    over = video_to_dir(seg, clip, tmp_path / "b", max_frames=1, render=RenderOptions(overlay=1.0, fourcc="FFV1"))
    frame_only = video_to_dir(seg, clip, tmp_path / "c", max_frames=1, render=RenderOptions(overlay=0.0, fourcc="FFV1"))
    frame = decoded_frames(clip)[0]
    assert plain.video.name == "clip_res.mp4"
    # FFV1 is lossless: alpha 1 is the colour map itself, alpha 0 the frame itself
    np.testing.assert_array_equal(decoded_frames(over.video)[0], decoded_frames(plain.video)[0])
    np.testing.assert_array_equal(decoded_frames(frame_only.video)[0], frame)


def test_directory_of_videos_and_images(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_clip(root / "one.mp4", n=3)
    write_clip(root / "two.avi", n=2, fourcc="MJPG")
    cv2.imwrite(str(root / "photo.png"), np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--input", str(root), "--model", str(model_dir),
                                       "--save_path", str(out), "--no-json"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["one_res.mp4", "photo_res.png", "two_res.avi"]
    assert video_props(out / "one_res.mp4")[3] == 3 and video_props(out / "two_res.avi")[3] == 2


class _InterruptingCapture:
    """A capture that yields ``n`` frames of the real clip, then raises Ctrl-C (as a user would)."""

    def __init__(self, real: Any, n: int) -> None:
        self._real, self._left = real, n

    def grab(self) -> bool:
        if self._left == 0:
            raise KeyboardInterrupt
        self._left -= 1
        return bool(self._real.grab())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_ctrl_c_leaves_a_playable_file(seg: Segmenter, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = VideoSource.open
    monkeypatch.setattr(VideoSource, "open", lambda self: _InterruptingCapture(real_open(self), 5))
    outcome = video_to_dir(seg, clip, tmp_path / "out", render=RenderOptions(save_labels=True))
    assert outcome.interrupted and outcome.frames == 5
    assert video_props(outcome.video) == (W, H, FPS, 5)
    assert len(list((tmp_path / "out" / "clip_res").iterdir())) == 5


def test_a_stream_that_ends_early_leaves_a_playable_file(seg: Segmenter, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "cut.avi", fourcc="MJPG")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 6 // 10])  # the connection dropped mid-file
    readable = len(decoded_frames(clip))
    assert 0 < readable < N
    outcome = video_to_dir(seg, clip, tmp_path / "out")
    assert not outcome.interrupted and outcome.frames == readable
    assert video_props(outcome.video)[3] == readable


def test_label_png_dtype_and_uint16_roundtrip(tmp_path: Path) -> None:
    assert label_png_dtype(19) is np.uint8 and label_png_dtype(256) is np.uint8 and label_png_dtype(300) is np.uint16
    labels = np.array([[0, 299], [256, 7]], np.int32)
    write_label_png(tmp_path / "l.png", labels, np.uint16)
    back = cv2.imread(str(tmp_path / "l.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.tolist() == labels.tolist()


def test_unwritable_codec_names_what_works(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="mp4v"):
        VideoOutput(tmp_path / "x.mp4", fps=10, size=(W, H), fourcc="avc1")
    assert not (tmp_path / "x.mp4").exists()


def test_colour_model_video_colours(tmp_path: Path) -> None:
    """A red clip through the colour classifier: every label 0, coloured PaddleX's (128, 0, 0)."""
    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5, (16, 8))
    for _ in range(3):
        writer.write(np.full((8, 16, 3), (0, 0, 255), np.uint8))
    writer.release()
    with Segmenter(colour_model_dir(tmp_path / "m")) as s:
        out = video_to_dir(s, path, tmp_path / "out", render=RenderOptions(fourcc="FFV1"))
    frames = decoded_frames(out.video)
    assert len(frames) == 3 and all((f == (0, 0, 128)).all() for f in frames)  # BGR of RGB (128, 0, 0)


# ------------------------------------------------------------------ the pipeline itself
def test_prefetch_is_bounded_and_stops_its_thread() -> None:
    produced = []

    def items() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetch(items(), maxsize=3)
    assert next(gen) == 0
    time.sleep(0.3)
    assert len(produced) <= 1 + 3 + 1  # the one consumed, a full queue, one waiting to be put
    gen.close()
    assert not any(t.name == "fastseg-decode" for t in threading.enumerate())


def test_prefetch_and_drain_carry_errors() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise InputError("decoder broke")

    with pytest.raises(InputError, match="decoder broke"):
        list(prefetch(broken(), maxsize=2))
    seen: list[int] = []

    def consume(x: int) -> None:
        if x == 2:
            raise OSError("disk full")
        seen.append(x)

    drain: Drain[int] = Drain(consume, maxsize=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            drain.put(i)
        drain.close()
    assert seen == [0, 1]


def test_cli_overlay_default_matches_results() -> None:
    assert OVERLAY_ALPHA == DEFAULT_OVERLAY_ALPHA


def test_unreachable_camera_and_stream_are_clear_errors(seg: Segmenter) -> None:
    with pytest.raises(InputError, match=r"Cannot open video 'camera:7': check the camera index"):
        list(seg.predict_video("camera:7"))
    with pytest.raises(InputError, match=r"Cannot open video 'rtsp://127.0.0.1:9/live': check the URL"):
        list(seg.predict_video("rtsp://127.0.0.1:9/live"))  # nothing listens on port 9: refused at once


def test_odd_frame_size_keeps_size_and_labels(model_dir: Path, seg: Segmenter, tmp_path: Path) -> None:
    """65x47: the result video is 65x47 (.avi, OpenCV's own Motion-JPEG writer: its FFmpeg writer
    keeps only even sizes), and every frame's labels are those of predicting it alone."""
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, (47, 65, 3), dtype=np.uint8) for _ in range(4)]
    writer = cv2.VideoWriter(str(tmp_path / "odd.avi"), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"), FPS, (65, 47))
    for frame in frames:
        writer.write(frame)
    writer.release()
    (tmp_path / "odd.mkv").write_bytes((tmp_path / "odd.avi").read_bytes())  # FFmpeg reads by content
    for name, result_name in (("odd.avi", "odd_res.avi"), ("odd.mkv", "odd_res.avi")):
        out = tmp_path / name.replace(".", "_")
        result = CliRunner().invoke(main, ["predict", "--input", str(tmp_path / name), "--model", str(model_dir),
                                           "--save_path", str(out), "--save_labels", "--overlay"])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == sorted([result_name, result_name.replace(".avi", "")])
        assert video_props(out / result_name) == (65, 47, FPS, 4)
        for i, frame in enumerate(decoded_frames(tmp_path / name)):
            labels = cv2.imread(str(out / "odd_res" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(labels, next(seg.predict(frame)).labels_hw)
    with VideoOutput(tmp_path / "crop.mp4", fps=FPS, size=(65, 47)) as cropped:  # the FFmpeg writer: even only
        cropped.write(frames[0])
    assert video_props(tmp_path / "crop.mp4")[:2] == (64, 46)


def test_an_http_mp4_the_server_cannot_seek_in_is_one_error_naming_range_requests(tmp_path: Path) -> None:
    """OpenCV opens such a source at 0x0; the error must say why here, not later as a writer failing."""
    import functools
    import http.server
    import threading

    import cv2

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(40):  # ~1 MB, its index written last: unreadable without seeking
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()

    class Quiet(http.server.SimpleHTTPRequestHandler):  # no Range support, as python -m http.server
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = video_source(f"http://127.0.0.1:{server.server_port}/clip.mp4")
        with pytest.raises(InputError, match=r"it opens but has no frame size; .*must answer Range requests"):
            source.open()
    finally:
        server.shutdown()
        server.server_close()
