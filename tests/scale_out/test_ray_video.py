"""A video on Ray: frame ranges segmented by workers, written back in order by the driver,
identical to the local run (label PNGs byte for byte, the video's size, frame rate and frame
count). The range logic (seek, digests, refetch) is tested without Ray; the end-to-end tests
start a local 2-CPU Ray (``-m "not ray"`` deselects them)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import random_conv_model_dir

from fastseg.cli import main
from fastseg.errors import FastSegError
from fastseg.segmenter import Segmenter
from fastseg.ray.video import FrameRange, RangeFeed, frame_digest, frame_ranges, segment_range

W, H, N, FPS = 64, 48, 24, 12.0


def write_clip(path: Path, n: int = N, size: tuple[int, int] = (W, H)) -> Path:
    """Random-noise frames in mp4v (a key frame every 12: seeking really decodes forward)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, size)
    rng = np.random.default_rng(3)
    for _ in range(n):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def video_props(path: Path) -> tuple[int, int, float, int]:
    cap = cv2.VideoCapture(str(path))
    props = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS))
    frames = 0
    while cap.grab():
        frames += 1
    cap.release()
    return (*props, frames)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_conv_model_dir(tmp_path_factory.mktemp("models") / "rand", kind="logits", classes=5)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_frame_ranges_cover_the_kept_frames_once() -> None:
    assert frame_ranges(24, 2, max_frames=None) == [FrameRange(0, 12), FrameRange(12, None)]
    ranges = frame_ranges(100, 2, max_frames=100)
    assert [r.start for r in ranges] == list(range(0, 100, 16)) and ranges[-1].stop == 100
    assert all(r.stop == r.start + 16 for r in ranges[:-1])
    assert frame_ranges(None, 4, max_frames=None) == [FrameRange(0, None)]  # unknown length: one range
    assert frame_ranges(0, 2, max_frames=None) == [FrameRange(0, None)]


def test_segment_range_seeks_to_the_exact_frames(model_dir: Path, clip: Path) -> None:
    with Segmenter(model_dir) as seg:
        whole = segment_range(seg, str(clip), FrameRange(0, None), every=1, target_size=None, exact=False)
        assert whole.indices == list(range(N))
        for rng in (FrameRange(5, 9), FrameRange(13, None), FrameRange(20, 24)):
            for exact in (False, True):
                part = segment_range(seg, str(clip), rng, every=1, target_size=None, exact=exact)
                want = slice(rng.start, rng.stop)
                assert part.indices == whole.indices[want] and part.digests == whole.digests[want]
                for a, b in zip(part.labels, whole.labels[want], strict=True):
                    np.testing.assert_array_equal(a, b)
        sparse = segment_range(seg, str(clip), FrameRange(2, 5), every=3, target_size=None, exact=False)
        assert sparse.indices == [6, 9, 12] and sparse.digests == [whole.digests[i] for i in (6, 9, 12)]
        assert whole.labels[0].dtype == np.uint8 and len(np.unique(whole.labels[0])) == 5


def test_feed_refetches_a_range_whose_frames_differ(model_dir: Path, clip: Path) -> None:
    """A seek that landed on the wrong frame is caught by the digest and redone exactly."""
    frames = []
    cap = cv2.VideoCapture(str(clip))
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    with Segmenter(model_dir) as seg:
        ranges = [FrameRange(0, 12), FrameRange(12, None)]
        good = [segment_range(seg, str(clip), r, every=1, target_size=None, exact=True) for r in ranges]
        shifted = segment_range(seg, str(clip), FrameRange(13, None), every=1, target_size=None, exact=True)
        calls: list[tuple[FrameRange, bool]] = []

        def fetch(rng: FrameRange, exact: bool) -> object:
            calls.append((rng, exact))
            return good[ranges.index(rng)]

        feed = RangeFeed(iter([good[0], shifted]), ranges, fetch)  # type: ignore[arg-type]
        results = feed.predict_images(frames)
        assert calls == [(ranges[1], True)] and feed.refetched == 1
        for res, frame in zip(results, frames, strict=True):
            np.testing.assert_array_equal(res.pred, next(seg.predict(frame)).pred)
        broken = RangeFeed(iter([shifted]), [FrameRange(0, None)], lambda r, e: shifted)
        with pytest.raises(FastSegError, match="decoded frame 0 of range 0 differently"):
            broken.predict_images(frames[:1])


def test_frame_digest_tells_frames_apart() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[3, 4, 2] = 1
    assert frame_digest(a) == frame_digest(a.copy()) != frame_digest(b) and len(frame_digest(a)) == 16


# ------------------------------------------------------------------ on a local Ray cluster
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray", reason="needs Ray (the [ray] extra)")
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _files(directory: Path) -> dict[str, bytes]:
    return {os.path.relpath(p, directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.ray
def test_ray_video_is_identical_to_the_local_run(ray_cluster: None, model_dir: Path, clip: Path, tmp_path: Path) -> None:
    common = ["predict", "--input", str(clip), "--model", str(model_dir), "--save_labels", "--overlay", "0.5", "--legend"]
    local = CliRunner().invoke(main, [*common, "--save_path", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    on_ray = CliRunner().invoke(main, [*common, "--save_path", str(tmp_path / "ray"), "--ray", "--workers", "2"])
    assert on_ray.exit_code == 0, on_ray.output
    assert f"{N} frame(s)" in on_ray.stdout and "on Ray: 2 worker(s) on cpu" in on_ray.stdout
    local_files, ray_files = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(ray_files) == sorted(local_files) and len(local_files) == N + 2  # video, legend, N label PNGs
    for name, data in local_files.items():
        if name.endswith(".png"):
            assert ray_files[name] == data, name  # labels and legend: byte for byte
    assert video_props(tmp_path / "ray" / "clip_res.mp4") == video_props(tmp_path / "local" / "clip_res.mp4") == (W, H, FPS, N)
    local_frames, ray_frames = cv2.VideoCapture(str(tmp_path / "local" / "clip_res.mp4")), cv2.VideoCapture(str(tmp_path / "ray" / "clip_res.mp4"))
    for _ in range(N):
        np.testing.assert_array_equal(local_frames.read()[1], ray_frames.read()[1])  # same frames in the same order


@pytest.mark.ray
def test_ray_video_every_and_max_frames(ray_cluster: None, model_dir: Path, clip: Path, tmp_path: Path) -> None:
    args = ["predict", "--input", str(clip), "--model", str(model_dir), "--save_labels", "--every", "2", "--max-frames", "7"]
    for where, extra in (("local", []), ("ray", ["--ray", "--workers", "2"])):
        result = CliRunner().invoke(main, [*args, *extra, "--save_path", str(tmp_path / where)])
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "ray" / "clip_res").iterdir())
    assert names == [f"{i:06d}.png" for i in range(0, 14, 2)]
    for name in names:
        assert (tmp_path / "ray" / "clip_res" / name).read_bytes() == (tmp_path / "local" / "clip_res" / name).read_bytes()
    assert video_props(tmp_path / "ray" / "clip_res.mp4")[2:] == (FPS / 2, 7)
