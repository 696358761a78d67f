"""OpenVINO's fused pre-processing in its two layouts: uint8 transpose first, or NHWC with the transpose last.

    python benchmarks/openvino_prefix_ab.py MODEL_DIR IMAGE --precision f32|bf16 [--runs 15]

Both graphs (``fused_model_bytes(..., layout_last=False|True)`` of MODEL_DIR's model.onnx)
are compiled for IMAGE's size in one process, 2 threads, LATENCY hint, and run alternately;
prints the largest output difference (0 for a label output) and the median ms of each, and
their ratio. fastseg's OpenVINO sessions use ``layout_last=True`` (benchmarks/RESULTS.md,
session 16). Quiet machine only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.engines.preprocess_graph import fused_model_bytes, fused_preprocess
from fastseg.model_dir import read_meta
from fastseg.processing import decode_image


def _request(core: Any, graph: bytes, shape: tuple[int, ...], precision: str) -> Any:
    import openvino as ov

    model = core.read_model(graph)
    model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2}
    return core.compile_model(model, "CPU", config).create_infer_request()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--precision", choices=["f32", "bf16"], required=True)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    import openvino as ov

    pre = fused_preprocess(read_meta(args.model_dir).preprocess)
    batch = decode_image(args.image.read_bytes(), source=str(args.image))[None]
    core = ov.Core()
    requests = {last: _request(core, fused_model_bytes(args.model_dir / "model.onnx", pre, layout_last=last),
                               batch.shape, args.precision) for last in (False, True)}
    outputs = {}
    for last, request in requests.items():
        request.infer({0: batch})
        outputs[last] = np.asarray(next(iter(request.results.values()))).astype(np.float64)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.runs):
        for last in (False, True) if i % 2 == 0 else (True, False):
            start = time.perf_counter()
            requests[last].infer({0: batch})
            times[last].append((time.perf_counter() - start) * 1e3)
    first, last_ms = statistics.median(times[False]), statistics.median(times[True])
    print(f"{args.model_dir.parent.name}/{args.model_dir.name} {args.precision}: max |diff| "
          f"{float(np.abs(outputs[True] - outputs[False]).max()):.3g}; transpose first {first:.1f} ms, "
          f"layout last {last_ms:.1f} ms, ratio {last_ms / first:.3f}")


if __name__ == "__main__":
    main()
