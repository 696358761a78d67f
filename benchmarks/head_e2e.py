"""End to end: a model's own Resize->ArgMax head vs fastseg.head's banded head (Segmenter).

    python benchmarks/head_e2e.py --model-dir /work/models/SeaFormer_tiny --size 1024x2048 --runs 10

Both Segmenters live in one process and run alternately on the same image (a real photo
resized to --size when --image is given, else random pixels), so machine load hits both
alike; prints median/min end-to-end ms (decode excluded: the image is in memory) and checks
that the label maps are identical on every run. Quiet machine only for real figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fastseg.segmenter import Segmenter
from fastseg.slide import parse_hw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--size", default="1024x2048", help="HxW of the input image")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", type=Path, help="a photo (resized to --size); default random pixels")
    args = parser.parse_args(argv)
    h, w = parse_hw(args.size, name="--size")
    if args.image:
        image = cv2.resize(cv2.imread(str(args.image)), (w, h), interpolation=cv2.INTER_AREA)
    else:
        image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as home:
        segs = {head: Segmenter(args.model_dir, head=head, home=Path(home)) for head in ("graph", "banded")}
        times: dict[str, list[float]] = {head: [] for head in segs}
        for seg in segs.values():  # warm-up: first-run allocations, thread pools
            seg.predict_images([image])
        for _ in range(args.runs):
            preds = {}
            for head, seg in segs.items():
                start = time.perf_counter()
                preds[head] = seg.predict_images([image])[0].pred
                times[head].append((time.perf_counter() - start) * 1e3)
            if not np.array_equal(preds["graph"], preds["banded"]):
                print("MISMATCH: the banded head's labels differ from the graph's", file=sys.stderr)
                return 1
        for seg in segs.values():
            seg.close()
    print(f"{args.model_dir.name} @ {h}x{w}, {args.runs} runs, labels identical on every run")
    for head, ts in times.items():
        print(f"  head={head:7s} median {statistics.median(ts):8.1f} ms   min {min(ts):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
