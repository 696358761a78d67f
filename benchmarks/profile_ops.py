"""Where inference time goes: ONNX Runtime's profiler, summed per operator type.

    python benchmarks/profile_ops.py MODEL_DIR [--size 512x1024] [--threads 2] [--runs 3]

Uses ``RuntimeOptions(enable_profiling=True)`` through ``create_session`` (the session fastseg
really runs: optimisation ALL, so fused ops such as FusedConv and NCHWc reorders show up as
ONNX Runtime names them), then aggregates the profile's kernel events.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastseg.model_dir import ONNX_FILE
from fastseg.engines.ort import RuntimeOptions, create_session
from fastseg.slide import parse_hw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--size", default="512x1024")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    h, w = parse_hw(args.size, name="--size")
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # ORT writes the profile into the working directory
        try:
            session = create_session(
                args.model_dir / ONNX_FILE, "cpu", RuntimeOptions(intra_op_threads=args.threads, enable_profiling=True)
            )
            session.run(x)  # warm-up
            start = time.perf_counter()
            for _ in range(args.runs):
                session.run(x)
            per_run = (time.perf_counter() - start) / args.runs * 1e3
            logging.disable(logging.INFO)
            session.close()
            (profile,) = Path(tmp).glob("onnxruntime_profile_*.json")
            events = json.loads(profile.read_text())
        finally:
            os.chdir(cwd)
    total: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            total[ev["args"]["op_name"]] += ev["dur"]
            count[ev["args"]["op_name"]] += 1
    runs = args.runs + 1
    all_us = sum(total.values())
    print(f"{args.model_dir}: {per_run:.1f} ms per run at {args.size}, {args.threads} threads (wall, profiler on)")
    for op, us in total.most_common(args.top):
        print(f"  {op:26s} {us / 1e3 / runs:9.1f} ms/run {100 * us / all_us:5.1f}%  x{count[op] // runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
