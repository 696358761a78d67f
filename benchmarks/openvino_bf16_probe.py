"""How much OpenVINO's bf16 inference (AVX512-BF16 / AMX CPUs) would buy, and what it costs in labels.

fastseg pins OpenVINO to f32 (its CPU default on such CPUs is bf16, which moves labels). This
measures the lever that pin gives up, for a possible gated bf16 precision:

    python benchmarks/openvino_bf16_probe.py speed MODEL_DIR            # f32 vs bf16, 1024x2048, 2 threads
    python benchmarks/openvino_bf16_probe.py agree MODEL_DIR IMAGES_DIR # bf16 vs f32 labels on real images

``speed`` alternates f32, bf16, f32, bf16 compiled models (3 timed runs after 1 warm-up each)
on a seeded random input; ``agree`` preprocesses each image as fastseg does and pools label
agreement over all pixels. One mode per process; run ``speed`` on a quiet machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _compiled(model_dir: Path, precision: str) -> Any:
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2}
    return core.compile_model(core.read_model(str(model_dir / "model.onnx")), "CPU", config)


def _first_output(compiled: Any, batch: np.ndarray) -> np.ndarray:
    return np.asarray(next(iter(compiled.create_infer_request().infer({0: batch}).values())))


def speed(model_dir: Path) -> None:
    batch = np.random.default_rng(0).standard_normal((1, 3, 1024, 2048), dtype=np.float32)
    medians: dict[str, list[float]] = {}
    for precision in ("f32", "bf16", "f32", "bf16"):
        request = _compiled(model_dir, precision).create_infer_request()
        request.infer({0: batch})
        times = []
        for _ in range(3):
            start = time.perf_counter()
            request.infer({0: batch})
            times.append((time.perf_counter() - start) * 1000)
        medians.setdefault(precision, []).append(statistics.median(times))
        print(f"{precision}: median {statistics.median(times):.1f} ms {[round(t) for t in times]}", flush=True)
    ratio = statistics.median(medians["bf16"]) / statistics.median(medians["f32"])
    print(f"bf16 / f32 time: {ratio:.3f}")


def agree(model_dir: Path, images: Path) -> None:
    from fastseg.model_dir import read_meta
    from fastseg.processing import preprocess_batch
    from fastseg.precision.quantize import image_files, load_for_gate

    meta = read_meta(model_dir)
    f32, bf16 = _compiled(model_dir, "f32"), _compiled(model_dir, "bf16")
    same = total = 0
    for path in image_files(images):
        batch = preprocess_batch([load_for_gate(path, meta, 1024)], meta.preprocess, resize=meta.preprocess.resize)
        a, b = _first_output(f32, batch), _first_output(bf16, batch)
        if a.ndim == 4:  # a logits/probs head: compare labels
            a, b = a.argmax(1), b.argmax(1)
        same, total = same + int((a == b).sum()), total + a.size
        print(f"{path.name}: {100 * float(np.mean(a == b)):.2f}%")
    print(f"pooled bf16 vs f32 label agreement: {100 * same / total:.3f}% over {total} pixels")


if __name__ == "__main__":
    mode, model = sys.argv[1], Path(sys.argv[2])
    speed(model) if mode == "speed" else agree(model, Path(sys.argv[3]))
