"""Peak RSS of one SegFormer inference under ONNX Runtime session-option variants and OpenVINO.

Each configuration runs in its own fresh process (``--config NAME``), so its peak RSS (Linux
``VmHWM``) belongs to it alone. Without ``--config`` the script runs every configuration in
turn, compares each one's labels with the ``stock`` run (``np.array_equal``) and prints a
Markdown table (docs/runtime.md, "Memory: SegFormer at 1024x2048").

    python benchmarks/segformer_memory.py --model /work/models/SegFormer-B2 \\
        --image /work/shared/data/images/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000001_063045_leftImg8bit.png
    python benchmarks/segformer_memory.py --model /work/models/SegFormer-B2 --config no_mem_pattern

Memory only: peak RSS does not depend on machine load. Time each variant on a quiet machine
(``--runs 5`` prints per-run milliseconds; see docs/runtime.md for the quiet-timing command).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.slide import parse_hw

# name -> what it changes relative to ONNX Runtime's stock CPU session (arena on, memory
# pattern on, graph level all), which was fastseg's session before enable_mem_pattern=False.
CONFIGS: dict[str, str] = {
    "stock": "ORT defaults: arena on, memory pattern on, level all (fastseg before this change)",
    "no_mem_pattern": "enable_mem_pattern=False (fastseg's default now)",
    "no_cpu_arena": "enable_cpu_mem_arena=False",
    "no_mem_pattern_no_arena": "both off (fastseg RuntimeOptions(enable_cpu_mem_arena=False))",
    "arena_same_as_requested": "env-registered CPU arena, arena_extend_strategy kSameAsRequested, session.use_env_allocators=1",
    "opt_disable": "graph_optimization_level ORT_DISABLE_ALL",
    "opt_basic": "graph_optimization_level ORT_ENABLE_BASIC",
    "opt_extended": "graph_optimization_level ORT_ENABLE_EXTENDED",
    "fastseg_default": "fastseg create_session(RuntimeOptions()) as it is now",
    "openvino": "fastseg's OpenVINO engine (openvino.Core, LATENCY hint, f32)",
}
REFERENCE = "stock"


def vm_hwm_mb() -> float:
    """Peak resident set size of this process so far (Linux VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def load_batch(model_dir: Path, image: Path | None, size: tuple[int, int]) -> np.ndarray:
    """The network input: ``image`` preprocessed as fastseg does (no resize), or seeded noise."""
    if image is None:
        return np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    import cv2

    from fastseg.model_dir import read_meta
    from fastseg.processing import preprocess_batch

    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {image}")
    if bgr.shape[:2] != size:
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return preprocess_batch([bgr], read_meta(model_dir).preprocess, resize=None)


def make_runner(config: str, model_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Open the session for ``config``; returns ``batch -> first output``."""
    import onnxruntime as ort

    from fastseg.engines.ort import RuntimeOptions, create_session, session_options

    if config == "fastseg_default":
        return create_session(model_path, "cpu", RuntimeOptions(intra_op_threads=threads)).run
    # every other ORT row starts from the stock session and changes one thing
    options = RuntimeOptions(intra_op_threads=threads, enable_mem_pattern=True, enable_cpu_mem_arena=True)
    if config == "openvino":
        from fastseg.engines.openvino import create_openvino_session
        from fastseg.engines.device import parse_device

        ov = create_openvino_session(model_path, parse_device("cpu"), options)
        return ov.run
    so = session_options(options)
    if config in ("no_mem_pattern", "no_mem_pattern_no_arena"):
        so.enable_mem_pattern = False
    if config in ("no_cpu_arena", "no_mem_pattern_no_arena"):
        so.enable_cpu_mem_arena = False
    if config.startswith("opt_"):
        so.graph_optimization_level = {
            "opt_disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "opt_basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "opt_extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }[config]
    if config == "arena_same_as_requested":
        mem = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # 1 = kSameAsRequested
        ort.create_and_register_allocator(mem, cfg)
        so.add_session_config_entry("session.use_env_allocators", "1")
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda batch: sess.run(None, {name: batch})[0]


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this process: load, run ``--runs`` times, report peak RSS."""
    model_path = args.model / "model.onnx"
    batch = load_batch(args.model, args.image, args.size)
    before = vm_hwm_mb()
    run = make_runner(args.config, model_path, args.threads)
    after_load = vm_hwm_mb()
    times, peaks = [], []
    labels = None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        labels = np.asarray(run(batch))
        times.append(round((time.perf_counter() - t0) * 1000.0, 1))
        peaks.append(round(vm_hwm_mb()))
    assert labels is not None
    if args.labels_dir is not None:
        args.labels_dir.mkdir(parents=True, exist_ok=True)
        np.save(args.labels_dir / f"{args.config}.npy", labels)
    return {
        "config": args.config,
        "peak_rss_mb": round(vm_hwm_mb()),
        "after_load_mb": round(after_load),
        "before_session_mb": round(before),
        "peak_after_each_run_mb": peaks,
        "run_ms": times,
        "output": [list(labels.shape), str(labels.dtype)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="Converted model directory (model.onnx + fastseg.json).")
    ap.add_argument("--image", type=Path, help="Image to run (resized to --size); default seeded noise.")
    ap.add_argument("--size", type=parse_hw, default=(1024, 2048), help="Input HxW (default 1024x2048).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3,
                    help="Inferences per process (ORT's memory pattern takes effect from the 2nd run); "
                         "times are printed but mean something only on a quiet machine.")
    ap.add_argument("--config", choices=sorted(CONFIGS), help="Run only this configuration, in this process.")
    ap.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="Subset of configurations for the table.")
    ap.add_argument("--labels-dir", type=Path, default=Path("/tmp/segformer_memory_labels"))
    ap.add_argument("--out", type=Path, help="Append each JSON line to this file.")
    args = ap.parse_args(argv)
    if not (args.model / "model.onnx").is_file():
        ap.error(f"--model {args.model}: no model.onnx there; convert one first, e.g. "
                 "'fastseg convert SegFormer-B2 --weights reference -o DIR'")

    if args.config:
        print(json.dumps(run_one(args)), flush=True)
        return 0
    names = args.only or list(CONFIGS)
    if REFERENCE not in names:
        names = [REFERENCE, *names]
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--model", str(args.model), "--size", f"{args.size[0]}x{args.size[1]}",
               "--threads", str(args.threads), "--runs", str(args.runs), "--config", name,
               "--labels-dir", str(args.labels_dir)]
        if args.image is not None:
            cmd += ["--image", str(args.image)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed ({done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        reference = np.load(args.labels_dir / f"{REFERENCE}.npy")
        labels = np.load(args.labels_dir / f"{name}.npy")
        row["identical"] = bool(np.array_equal(labels, reference))
        row["differing_labels"] = int((labels != reference).sum()) if labels.shape == reference.shape else -1
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if args.out is not None:
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    print("| config | what changes | peak RSS MB after run 1 / 2 / 3 ... | labels identical to stock |")
    print("|---|---|---:|---|")
    for row in rows:
        peaks = " / ".join(str(p) for p in row["peak_after_each_run_mb"])
        same = "yes" if row["identical"] else f"no ({row['differing_labels']} px differ)"
        print(f"| `{row['config']}` | {CONFIGS[row['config']]} | {peaks} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
