"""Peak RSS of ``video_to_dir`` on a short and a 10x longer clip (the pipeline's queues are bounded,
so the difference should be a few MB).

Usage: python benchmarks/video_memory.py [--frames 40] [--tmp DIR]
Each length runs in its own process (ru_maxrss is per process); tiny model from tests/tiny_models.py.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np


def make_clip(path: Path, n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (640, 360))
    base = np.random.default_rng(0).integers(0, 255, (400, 680, 3), dtype=np.uint8)
    for i in range(n):
        writer.write(np.ascontiguousarray(base[i % 40 : i % 40 + 360, i % 40 : i % 40 + 640]))
    writer.release()


def run_one(clip: Path, tmp: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import random_conv_model_dir

    from fastseg.segmenter import Segmenter
    from fastseg.video import RenderOptions, video_to_dir

    model = random_conv_model_dir(tmp / "model", kind="logits", classes=5)
    with Segmenter(model) as seg:
        out = video_to_dir(seg, clip, tmp / f"out-{clip.stem}", render=RenderOptions(save_labels=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{out.frames} frames 640x360 in {out.seconds:.1f} s: peak RSS {peak:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, default=None)
    args = ap.parse_args()
    if args.one is not None:
        run_one(args.one, args.tmp)
        return
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = args.tmp or Path(tmp_s)
        for n in (args.frames, 10 * args.frames):
            clip = tmp / f"clip{n}.mp4"
            make_clip(clip, n)
            subprocess.run([sys.executable, __file__, "--one", str(clip), "--tmp", str(tmp)], check=True)


if __name__ == "__main__":
    main()
