"""End to end: a model's own Resize->ArgMax head vs fastseg.head's banded head (Segmenter).

    python benchmarks/head_e2e.py --model-dir /work/models/SeaFormer_tiny --size 1024x2048 --runs 10
    python benchmarks/head_e2e.py --model-dir BF16_DIR --engine openvino --image IMG   # a bf16 directory
    python benchmarks/head_e2e.py --model-dir INT8_DIR --engine ort --image IMG        # int8, int8-bf16 too

Both Segmenters live in one process and run alternately on the same image (a real photo
resized to --size when --image is given, else random pixels), so machine load hits both
alike; prints median/min end-to-end ms (decode excluded: the image is in memory). fp32 and
int8 (whose QDQ graph keeps its head float): the label maps must be identical on every run.
bf16 and int8-bf16: the graph computes its Resize and ArgMax in bf16 and the banded head in
float32, so it prints their label agreement instead. Quiet
machine only for real figures.
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
    parser.add_argument("--engine", default="auto", help="Segmenter's engine: auto, ort, openvino")
    args = parser.parse_args(argv)
    h, w = parse_hw(args.size, name="--size")
    if args.image:
        photo = cv2.imread(str(args.image))
        if photo is None:
            parser.error(f"cannot read --image {args.image}")
        image = np.asarray(cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    else:
        image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as home:
        segs = {head: Segmenter(args.model_dir, head=head, engine=args.engine, home=Path(home)) for head in ("graph", "banded")}
        exact = segs["graph"].precision in ("fp32", "int8")
        engine = f"{segs['graph'].engine_name} {segs['graph'].precision}"
        agreement: list[float] = []
        times: dict[str, list[float]] = {head: [] for head in segs}
        for seg in segs.values():  # warm-up: first-run allocations, thread pools
            seg.predict_images([image])
        for _ in range(args.runs):
            preds = {}
            for head, seg in segs.items():
                start = time.perf_counter()
                preds[head] = seg.predict_images([image])[0].pred
                times[head].append((time.perf_counter() - start) * 1e3)
            agreement.append(100.0 * float(np.mean(preds["graph"] == preds["banded"])))
            if exact and agreement[-1] < 100.0:
                print("MISMATCH: the banded head's labels differ from the graph's", file=sys.stderr)
                return 1
        for seg in segs.values():
            seg.close()
    same = "labels identical on every run" if exact else f"labels {min(agreement):.4f}% equal (worst run)"
    print(f"{args.model_dir.name} @ {h}x{w} on {engine}, {args.runs} runs, {same}")
    for head, ts in times.items():
        print(f"  head={head:7s} median {statistics.median(ts):8.1f} ms   min {min(ts):8.1f} ms")
    print(f"  banded/graph {statistics.median(times['banded']) / statistics.median(times['graph']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
