"""The tail alone: ONNX Runtime's Resize->ArgMax vs the banded head's compiled pass and numpy paths.

    python benchmarks/head_tail.py --classes 2,4,8,19,150 --size 1024x2048 --runs 5

For each class count: logits at 1/8 of --size, random N(0,1) ("noise", near-tied like a
random-weight network) and smooth class fields with a clear winner per region ("trained-like");
ORT's graph with 2 intra-op threads, ``resize_argmax`` with 2 band threads, compiled
(``head/fused.py``) and numpy; medians in ms, and whether all three label maps are identical.
One process, alternating; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from fastseg.head import TailResize, resize_argmax
from fastseg.slide import parse_hw
from tail_graph import ort_tail_session


def _logits(kind: str, c: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return rng.standard_normal((1, c, h, w)).astype(np.float32)
    coarse = rng.standard_normal((c, max(2, h // 8), max(2, w // 8))).astype(np.float32) * 4
    fields = np.stack([cv2.resize(coarse[i], (w, h), interpolation=cv2.INTER_CUBIC) for i in range(c)])
    fields += 10.0 * (np.arange(c)[:, None, None] == fields.argmax(axis=0)[None])  # one confident class per region
    return np.ascontiguousarray(fields[None], dtype=np.float32)


def _median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="2,4,8,19,150")
    parser.add_argument("--size", default="1024x2048", help="HxW of the labels")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    out_h, out_w = parse_hw(args.size, name="--size")
    graph, spec, rng = ort_tail_session(2), TailResize("linear", "half_pixel"), np.random.default_rng(0)
    resize_argmax(np.zeros((1, 2, 4, 4), np.float32), (32, 32), spec)  # compile outside the timings
    print(f"tail {out_h}x{out_w} from 1/8 logits, {args.runs} runs, medians (ms)")
    print(f"{'classes':>7} {'logits':12} {'ORT':>8} {'compiled':>9} {'numpy':>8}  identical")
    for c in (int(v) for v in args.classes.split(",")):
        for kind in ("noise", "trained-like"):
            logits = _logits(kind, c, out_h // 8, out_w // 8, rng)
            feed = {"L": logits, "sizes": np.array([1, c, out_h, out_w], np.int64)}
            t_ort, want = _median_ms(lambda: graph.run(None, feed)[0], args.runs)
            t_fused, fused = _median_ms(lambda: resize_argmax(logits, (out_h, out_w), spec, threads=2), args.runs)
            t_numpy, plain = _median_ms(lambda: resize_argmax(logits, (out_h, out_w), spec, threads=2, use_fused=False), args.runs)
            same = bool(np.array_equal(want, fused) and np.array_equal(want, plain))
            print(f"{c:7d} {kind:12} {t_ort:8.1f} {t_fused:9.1f} {t_numpy:8.1f}  {same}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
