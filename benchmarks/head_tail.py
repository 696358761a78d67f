"""The tail alone: ONNX Runtime's Resize->ArgMax vs the banded head's compiled pass and numpy paths.

    python benchmarks/head_tail.py --classes 2,4,8,19,150 --size 1024x2048 --runs 5

For each class count: logits at 1/8 of --size, random N(0,1) ("noise", near-tied like a
random-weight network) and smooth class fields with a clear winner per region ("trained-like");
ORT's graph with 2 intra-op threads, ``resize_argmax`` with 2 band threads, compiled
(``head/fused.py``: the every-class pass and the candidate pass, each forced at every count)
and numpy; medians in ms, and whether all four label maps are identical.
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

from fastseg.head import TailResize, fused, resize_argmax
from fastseg.slide import parse_hw
from tail_graph import ort_tail_session


def _logits(kind: str, c: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return rng.standard_normal((1, c, h, w)).astype(np.float32)
    coarse = rng.standard_normal((c, max(2, h // 8), max(2, w // 8))).astype(np.float32) * 4
    fields = np.stack([cv2.resize(coarse[i], (w, h), interpolation=cv2.INTER_CUBIC) for i in range(c)])
    fields += 10.0 * (np.arange(c)[:, None, None] == fields.argmax(axis=0)[None])  # one confident class per region
    return np.ascontiguousarray(fields[None], dtype=np.float32)


def _share(logits: np.ndarray, out_hw: tuple[int, int]) -> float:
    """``candidate_share`` of these logits: the share of classes a span compares (the choice's input)."""
    from fastseg.head import _fused_kernels
    from fastseg.head.banded import _ROUND_ULPS
    from fastseg.head.interp import linear_axis, size_scale

    x = np.ascontiguousarray(logits[0])
    c, h, w = x.shape
    ay = linear_axis("half_pixel", out_hw[0], h, size_scale(h, out_hw[0]))
    ax = linear_axis("half_pixel", out_hw[1], w, size_scale(w, out_hw[1]))
    tol = np.float32(_ROUND_ULPS * float(np.abs(x).max()))
    return float(_fused_kernels.candidate_share(x, tol, ay.i1, ay.i2, ax.i1, ax.i2, 8))


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
    print(f"{'classes':>7} {'logits':12} {'ORT':>8} {'every class':>12} {'candidates':>11} {'numpy':>8} {'share':>6}  identical")
    automatic, fused.CANDIDATES_MIN_CLASSES = fused.CANDIDATE_SHARE_MAX, 1
    for c in (int(v) for v in args.classes.split(",")):
        for kind in ("noise", "trained-like"):
            logits = _logits(kind, c, out_h // 8, out_w // 8, rng)
            feed = {"L": logits, "sizes": np.array([1, c, out_h, out_w], np.int64)}
            t_ort, want = _median_ms(lambda: graph.run(None, feed)[0], args.runs)
            compiled = {}
            for name, share_max in (("every", -1.0), ("candidates", 1.0)):  # each pass forced
                fused.CANDIDATE_SHARE_MAX = share_max
                compiled[name] = _median_ms(lambda: resize_argmax(logits, (out_h, out_w), spec, threads=2), args.runs)
            fused.CANDIDATE_SHARE_MAX = automatic
            share = _share(logits, (out_h, out_w))
            t_numpy, plain = _median_ms(lambda: resize_argmax(logits, (out_h, out_w), spec, threads=2, use_fused=False), args.runs)
            same = all(np.array_equal(want, labels) for labels in (compiled["every"][1], compiled["candidates"][1], plain))
            print(f"{c:7d} {kind:12} {t_ort:8.1f} {compiled['every'][0]:12.1f} {compiled['candidates'][0]:11.1f} "
                  f"{t_numpy:8.1f} {share:6.3f}  {same}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
