"""Measure ONNX Runtime CPU session options on converted models, one worker process per variant.

    python benchmarks/ort_options.py --model-dir DIR [--model-dir DIR ...] --size 512x1024 \
        --runs 10 --threads 2 [--variants all|name,name] [--json OUT.json]

Each variant runs in a fresh ``python -m fastseg.bench --worker`` process (the same worker as
``fastseg bench``), so options never leak between variants. Reports median/min inference and
end-to-end ms. On a shared machine, interleave repeats (--repeat 2) and read minima too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastseg import bench
from fastseg.slide import parse_hw

VARIANTS: dict[str, dict[str, Any]] = {
    # RuntimeOptions fields go through Segmenter/create_session; the other keys are experiments
    # the worker applies to a raw ORT session (see fastseg.bench.workers._EXPERIMENT_KEYS).
    "all": {"graph_optimization": "all"},
    "extended": {"graph_optimization": "extended"},
    "basic": {"graph_optimization": "basic"},
    "all+iobinding": {"graph_optimization": "all", "io_binding": "iobinding"},
    "all+nospin": {"allow_spinning": False},
    "all+spin": {"allow_spinning": True},
    "all+parallel": {"execution_mode": "parallel", "inter_op_num_threads": 2},
    "all+1thread": {"intra_op_num_threads": 1},
    "all+affinity": {"affinity": "2"},
    "all+cached": {"use_optimized_model": "{optimized}"},
    # memory switches (docs/runtime.md, "Memory: SegFormer at 1024x2048"): the default has the
    # memory pattern off; these put it back on, or also drop the CPU arena
    "all+mempattern": {"enable_mem_pattern": True},
    "all+noarena": {"enable_cpu_mem_arena": False},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", action="append", type=Path, required=True)
    p.add_argument("--size", default="512x1024")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="interleaved repeats of the whole variant list")
    p.add_argument("--variants", default="all")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    h, w = parse_hw(args.size, name="--size")
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        image = bench.make_image(Path(tmp) / "img.png", size=(h, w))
        for model_dir in args.model_dir:
            optimized = Path(tmp) / f"{_model_name(model_dir)}_opt.onnx"
            # Write the ALL-optimised model once, for the "cached" variant: the plain graph (the
            # raw session an experiment builds takes the numpy path's float32 batch).
            writer = _spec(model_dir, image, args, {"optimized_model_path": str(optimized)}, runs=1)
            bench.run_worker({**writer, "segmenter_options": {"preprocess": "numpy"}}, python=sys.executable, timeout_s=3600)
            for rep in range(args.repeat):
                for name in names:
                    opts = {k: (str(optimized) if v == "{optimized}" else v) for k, v in VARIANTS[name].items()}
                    res = bench.run_worker(_spec(model_dir, image, args, opts), python=sys.executable, timeout_s=3600)
                    row = {"model": _model_name(model_dir), "variant": name, "repeat": rep, "status": res.status,
                           "detail": res.detail}
                    for stage in ("infer", "e2e"):
                        s = res.stats.get(stage)
                        row[f"{stage}_median"] = None if s is None else round(s.median, 1)
                        row[f"{stage}_min"] = None if s is None else round(s.min, 1)
                    row["load_ms"] = None if res.load_ms is None else round(res.load_ms, 1)
                    row["peak_rss_mb"] = None if res.peak_rss_mb is None else round(res.peak_rss_mb)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": bench.machine_info(), "versions": bench.versions(), "rows": rows}, indent=1))
    return 0


def _model_name(model_dir: Path) -> str:
    """``.../SegFormer-B2`` or the bench cache's ``.../SegFormer-B2/onnx`` -> ``SegFormer-B2``."""
    return model_dir.parent.name if model_dir.name == "onnx" else model_dir.name


def _spec(model_dir: Path, image: Path, args: argparse.Namespace, opts: dict[str, Any], runs: int | None = None) -> dict[str, Any]:
    return {"backend": "fastseg", "model_name": _model_name(model_dir), "onnx_dir": str(model_dir), "paddle_dir": None,
            "image": str(image), "batch": 1, "runs": runs or args.runs, "warmup": 0 if runs else args.warmup,
            "threads": args.threads, "device": "cpu", "ort_options": opts}


if __name__ == "__main__":
    sys.exit(main())
