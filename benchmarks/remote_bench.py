"""Speed figures on another machine that cannot take the weights: graphs travel, weights are re-drawn.

The device machine (issue 17's AMX rows) takes 64 MiB a call and reaches no registry, so the
reference builds (30-300 MB each) cannot go as they are. For speed only, their weights do not
matter, so:

    python benchmarks/remote_bench.py strip MODEL_DIR OUT_DIR     # here: graph + statistics, ~100 KB
    python benchmarks/remote_bench.py fill  OUT_DIR               # there: weights re-drawn, same shapes
    python benchmarks/remote_bench.py image SKIMAGE_DATA OUT.png  # a 1024x2048 photo mosaic, no resizing of the canvas
    python benchmarks/remote_bench.py run   --models DIR --image IMG --jobs JOBS --out OUT.json [--cpus 0,2] [--budget S]
    python benchmarks/remote_bench.py cpus                          # the two CPUs run pins to, for taskset -c

``strip`` keeps every initializer of at most 1,024 elements (BatchNorm statistics, biases,
quantization scales and zero points) and empties the larger ones, recording their mean, standard
deviation, minimum and maximum; ``fill`` draws each again (normal for floats, clipped to the
recorded range; uniform integers for int8/uint8). ``image`` tiles scikit-image's bundled photos
(BSD licensed) at native resolution, so its PNG compresses like a photo. ``run`` times each
``MODEL/VARIANT:ENGINE[@DEVICE]`` job in its own ``fastseg bench`` worker process (``run_worker``), pinned
to two CPUs on different physical cores, and writes medians of pre / infer / post /
end to end. Figures from re-drawn weights are speed only, like every reference build's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SMALL = 1024
"""Initializers with at most this many elements travel as they are."""
STATS_FILE = "weightless.json"
MOSAIC = (
    ("motorcycle_left.png", "motorcycle_right.png", "astronaut.png"),
    ("coffee.png", "rocket.jpg", "ihc.png"),
)


def _weights(model: Any) -> list[tuple[str, Any]]:
    """(key, TensorProto) for each initializer and each Constant node's value (paddle2onnx keeps
    weights in Constant nodes); keys are initializer names and Constant outputs."""
    found = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            found += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
    return found


def strip(model_dir: Path, out_dir: Path) -> None:
    """Copy ``model_dir``'s small files, and its model.onnx without the large initializers' values."""
    import onnx
    from onnx import numpy_helper

    out_dir.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != "model.onnx" and f.stat().st_size < 1 << 20:
            shutil.copy2(f, out_dir / f.name)
    model = onnx.load(str(model_dir / "model.onnx"))
    stats: dict[str, dict[str, float]] = {}
    for key, tensor in _weights(model):
        if int(np.prod(tensor.dims)) <= SMALL:
            continue
        values = numpy_helper.to_array(tensor).astype(np.float64)
        stats[key] = {"mean": float(values.mean()), "std": float(values.std()),
                              "min": float(values.min()), "max": float(values.max())}
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(field)
    onnx.save(model, str(out_dir / "model.onnx"))
    (out_dir / STATS_FILE).write_text(json.dumps(stats))


def fill(out_dir: Path, *, seed: int = 0) -> None:
    """Re-draw the initializers ``strip`` emptied, with their recorded statistics."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    stats = json.loads((out_dir / STATS_FILE).read_text())
    model = onnx.load(str(out_dir / "model.onnx"))
    for key, tensor in _weights(model):
        if key not in stats:
            continue
        s, shape = stats[key], tuple(int(d) for d in tensor.dims)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        if np.issubdtype(dtype, np.integer):
            values = rng.integers(int(s["min"]), int(s["max"]) + 1, size=shape).astype(dtype)
        else:
            drawn = rng.normal(s["mean"], max(s["std"], 1e-6), size=shape)
            values = np.clip(drawn, s["min"], s["max"]).astype(dtype)
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, str(out_dir / "model.onnx"))
    (out_dir / STATS_FILE).unlink()


def image(data_dir: Path, out: Path) -> None:
    """A 1024x2048 PNG of six photos at native size, two rows of 512 (edges mirrored to fill)."""
    import cv2

    rows = []
    for names in MOSAIC:
        tiles = []
        for name in names:
            img = cv2.imread(str(data_dir / name), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"cannot read {data_dir / name}")
            h, w = img.shape[:2]
            img = img[:512] if h >= 512 else cv2.copyMakeBorder(img, 0, 512 - h, 0, 0, cv2.BORDER_REFLECT)
            tiles.append(img)
        row = np.concatenate(tiles, axis=1)[:, :2048]
        rows.append(cv2.copyMakeBorder(row, 0, 0, 0, 2048 - row.shape[1], cv2.BORDER_REFLECT))
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, axis=0))


def two_cores(wanted: str | None) -> list[int]:
    """Two CPUs on different physical cores (``lscpu -p``), or the ones asked for."""
    if wanted:
        return [int(c) for c in wanted.split(",")]
    seen: dict[tuple[str, str], int] = {}
    for line in subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET"], capture_output=True, text=True).stdout.splitlines():
        if line and not line.startswith("#"):
            cpu, core, socket = line.split(",")
            seen.setdefault((socket, core), int(cpu))
    return sorted(seen.values())[:2]


def run(models: Path, img: Path, jobs: list[str], out: Path, *, cpus: list[int], runs: int, warmup: int,
        timeout_s: float, budget_s: float) -> None:
    """Each job ``MODEL/VARIANT:ENGINE[@DEVICE]`` in its own ``fastseg bench`` worker
    (``run_worker``), pinned to ``cpus``; results appended to ``out``. Jobs not started within
    ``budget_s`` are recorded as skipped."""
    from fastseg.bench.runner import run_worker

    os.sched_setaffinity(0, cpus)  # the workers inherit the two CPUs
    results: list[dict[str, Any]] = json.loads(out.read_text()) if out.exists() else []
    start = time.time()
    for job in jobs:
        if time.time() - start > budget_s:
            results.append({"job": job, "status": f"skipped: past the {budget_s:.0f} s budget"})
            continue
        variant, _, rest = job.partition(":")
        engine, _, device = rest.partition("@")
        spec: dict[str, Any] = {"backend": "fastseg", "model_name": variant.split("/")[0], "onnx_dir": str(models / variant),
                "paddle_dir": None, "image": str(img), "batch": 1, "runs": runs, "warmup": warmup, "threads": 2,
                "device": device or "cpu", "engine": engine, "ort_options": {}, "segmenter_options": {}}
        t0 = time.time()
        res = run_worker(spec, python=sys.executable, timeout_s=timeout_s)
        row: dict[str, Any] = {"job": job, "status": res.status, "detail": res.detail, "engine": res.engine,
                               "versions": dict(res.versions), "load_ms": res.load_ms, "peak_rss_mb": res.peak_rss_mb,
                               "wall_s": round(time.time() - t0, 1), "samples_ms": dict(res.samples_ms)}
        if res.status == "ok":
            m = {k: round(v.median, 1) for k, v in res.stats.items()}
            m["pre+post share"] = round((m["pre"] + m["post"]) / m["e2e"], 3)
            row["median_ms"] = m
        results.append(row)
        out.write_text(json.dumps(results, indent=1))
        print(f"{job:45s} {row['status']} {row.get('median_ms', row['detail'])} ({row['wall_s']} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("strip")
    p.add_argument("model_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p = sub.add_parser("fill")
    p.add_argument("out_dir", type=Path)
    p = sub.add_parser("image")
    p.add_argument("data_dir", type=Path)
    p.add_argument("out", type=Path)
    sub.add_parser("cpus", help="print the two CPUs run pins to (for taskset -c)")
    p = sub.add_parser("run")
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--jobs", required=True, help="comma-separated MODEL/VARIANT:ENGINE, e.g. PP-LiteSeg-T/bf16:openvino")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cpus", help="two CPU numbers (default: two physical cores from lscpu)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=240, help="seconds per job")
    p.add_argument("--budget", type=float, default=1e9, help="seconds after which no job starts")
    a = parser.parse_args()
    if a.command == "strip":
        strip(a.model_dir, a.out_dir)
    elif a.command == "fill":
        fill(a.out_dir)
    elif a.command == "image":
        image(a.data_dir, a.out)
    elif a.command == "cpus":
        print(",".join(map(str, two_cores(None))))
    else:
        cpus = two_cores(a.cpus)
        print(f"pinned to CPUs {cpus}; {os.cpu_count()} online", flush=True)
        run(a.models, a.image, a.jobs.split(","), a.out, cpus=cpus, runs=a.runs, warmup=a.warmup, timeout_s=a.timeout,
            budget_s=a.budget)


if __name__ == "__main__":
    main()
