"""OpenVINO f32 vs bf16 (and bf16 with the dilated-tap rewrite) in one process, alternating.

    python benchmarks/openvino_precision_ab.py MODEL_ONNX_DIR [--rounds 2] [--runs 2] \
        [--variants f32,bf16,taps] [--size 1024x2048] [--int8 INT8_DIR --variants f32,bf16,int8,int8-bf16] [--profile]

Each variant is compiled for one fixed shape, as fastseg's sessions specialise, with fastseg's
settings (LATENCY hint, 2 threads); ``taps`` is bf16 on the graph that
``fastseg.engines.dilated_conv.dilated_convs_as_shifted_taps`` rewrites (fastseg applies it on AMX
only; this measures it anywhere). Rounds alternate the variants so drift hits all of them; the
ratios to f32 come from the same process. Inference only, on a seeded random input: speed, not
accuracy. With ``--int8 DIR`` (a QDQ int8 ``model.onnx`` of the same model, e.g. bench's
``onnx-int8-bench``), ``int8`` is that graph with f32 as the precision of its unquantized layers
and ``int8-bf16`` with bf16 (OpenVINO's mixed precision: int8 where the graph quantizes, bf16
elsewhere). ``--profile`` turns on OpenVINO's per-layer counters and prints, per variant, the
time of its last run by layer type and its slowest layers (the counters cost a little time).
Run it on a quiet machine, one benchmark at a time. Unlike
``openvino_bf16_probe.py speed`` (kept as it is: earlier figures were taken with it), it compiles
for one fixed shape and can time the tap rewrite.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def _compile(core: Any, onnx_path: Path, variant: str, shape: list[int], *, profile: bool = False) -> Any:
    import onnx
    import openvino as ov

    from fastseg.engines.dilated_conv import dilated_convs_as_shifted_taps

    source: str | bytes = str(onnx_path)
    if variant == "taps":
        model = onnx.load(str(onnx_path))
        if dilated_convs_as_shifted_taps(model):
            source = model.SerializeToString()
    ov_model = core.read_model(source)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape(shape)})
    hint = "f32" if variant in ("f32", "int8") else "bf16"
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2,
              **({"PERF_COUNT": True} if profile else {})}
    return core.compile_model(ov_model, "CPU", config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a directory holding model.onnx")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per variant per round")
    parser.add_argument("--variants", default="f32,bf16,taps")
    parser.add_argument("--size", default="1024x2048", help="HxW")
    parser.add_argument("--int8", type=Path, help="a directory holding the QDQ int8 model.onnx (variants int8, int8-bf16)")
    parser.add_argument("--profile", action="store_true", help="print OpenVINO's per-layer counters of each variant's last run")
    args = parser.parse_args()
    import openvino as ov

    height, width = (int(v) for v in args.size.split("x"))
    batch = np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32)
    core = ov.Core()
    variants = args.variants.split(",")
    if any(v.startswith("int8") for v in variants) and args.int8 is None:
        parser.error("variants int8 and int8-bf16 need --int8 DIR")

    def source(variant: str) -> Path:
        return Path(args.int8 if variant.startswith("int8") else args.model_dir) / "model.onnx"

    requests = {}
    for variant in variants:
        try:
            requests[variant] = _compile(core, source(variant), variant, [1, 3, height, width],
                                         profile=args.profile).create_infer_request()
        except RuntimeError as exc:  # OpenVINO 2026.4 cannot compile some int8 graphs with bf16 (SeaFormer_tiny)
            print(f"{variant}: OpenVINO cannot compile it: {' '.join(str(exc).split())[:300]}")
    variants = list(requests)
    for request in requests.values():
        request.infer({0: batch})  # warm-up
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant, request in requests.items():
            for _ in range(args.runs):
                start = time.perf_counter()
                request.infer({0: batch})
                times[variant].append((time.perf_counter() - start) * 1000)
    name = args.model_dir.resolve().parent.name
    for variant in variants:
        t = times[variant]
        print(f"{name} {variant}: median {statistics.median(t):.1f} min {min(t):.1f} n={len(t)} {[round(x) for x in t]}")
    if args.profile:
        for variant, request in requests.items():
            by_type: dict[str, float] = {}
            layers = []
            for info in request.profiling_info:
                ms = info.real_time.total_seconds() * 1000
                by_type[info.node_type] = by_type.get(info.node_type, 0.0) + ms
                layers.append((ms, info.node_name, info.node_type, info.exec_type))
            ranked = sorted(by_type.items(), key=lambda kv: -kv[1])
            print(f"{variant} layers, last run: {sum(by_type.values()):.1f} ms; "
                  + ", ".join(f"{k} {v:.1f}" for k, v in ranked[:8]))
            for ms, node, kind, exec_type in sorted(layers, reverse=True)[:5]:
                print(f"    {ms:8.1f} ms  {node} ({kind}, {exec_type})")
    for base_name in ("f32", "bf16"):
        if base_name in times:
            base = statistics.median(times[base_name])
            for variant in variants:
                if variant != base_name:
                    print(f"  {variant}/{base_name} = {statistics.median(times[variant]) / base:.3f}")


if __name__ == "__main__":
    main()
