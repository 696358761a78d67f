"""Video frames/s beside single-image images/s, and how much of decode + encode the pipeline hides.

Usage: python benchmarks/video_throughput.py MODEL_DIR IMAGE [--frames 60] [--engine ort]

Makes a 1280x720 clip (mp4v) of IMAGE with small shifts, then times, on the same frames:
  decode alone (cv2.VideoCapture), encode alone (colour map -> cv2.VideoWriter, labels given),
  inference alone (Segmenter.predict_images, one frame per call: the single-image images/s),
  and the whole ``video_to_dir`` pipeline. Hidden share = 1 - (pipeline - inference) / (decode + encode).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fastseg.results import colorize
from fastseg.segmenter import Segmenter
from fastseg.video import RenderOptions, video_to_dir

SIZE = (1280, 720)


def make_clip(image: Path, path: Path, frames: int) -> list[np.ndarray]:
    base = cv2.resize(cv2.imread(str(image)), (SIZE[0] + 64, SIZE[1] + 32))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, SIZE)
    for i in range(frames):
        dx, dy = i % 64, (i // 2) % 32
        writer.write(np.ascontiguousarray(base[dy : dy + SIZE[1], dx : dx + SIZE[0]]))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    return decoded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("image", type=Path)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--engine", default="ort")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        clip = tmp / "clip.mp4"
        frames = make_clip(args.image, clip, args.frames)
        n = len(frames)
        t = time.perf_counter()
        cap = cv2.VideoCapture(str(clip))
        while cap.read()[0]:
            pass
        decode_s = time.perf_counter() - t
        with Segmenter(args.model, engine=args.engine) as seg:
            seg.predict_images(frames[:2])  # warm-up
            t = time.perf_counter()
            labels = [seg.predict_images([f])[0].labels_hw for f in frames]
            infer_s = time.perf_counter() - t
            t = time.perf_counter()
            writer = cv2.VideoWriter(str(tmp / "enc.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 30, SIZE)
            for lab in labels:
                writer.write(colorize(lab, bgr=True))
            writer.release()
            encode_s = time.perf_counter() - t
            t = time.perf_counter()
            out = video_to_dir(seg, clip, tmp / "out", render=RenderOptions())
            pipe_s = time.perf_counter() - t
            engine = f"{seg.engine_name} {seg.precision}, head {seg.head}"
    hidden = 1.0 - (pipe_s - infer_s) / (decode_s + encode_s)
    print(f"{n} frames 1280x720, {engine}")
    print(f"decode alone {n / decode_s:.1f} frames/s ({1000 * decode_s / n:.1f} ms/frame)")
    print(f"encode alone {n / encode_s:.1f} frames/s ({1000 * encode_s / n:.1f} ms/frame, colour map + mp4v)")
    print(f"single-image inference {n / infer_s:.2f} images/s ({1000 * infer_s / n:.1f} ms/image)")
    print(f"video pipeline {out.frames / pipe_s:.2f} frames/s ({1000 * pipe_s / out.frames:.1f} ms/frame)")
    print(f"decode + encode hidden behind inference: {100 * hidden:.0f}%")


if __name__ == "__main__":
    main()
