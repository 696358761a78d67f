"""Measure plain ``session.run`` against IO binding on the CPU (the numbers in docs/runtime.md).

    python benchmarks/iobinding_vs_plain.py [CONVERTED_MODEL_DIR[:N,H,W] ...]

Always measures the tiny test models (tests/tiny_models.py); each extra converted model dir is
measured at the given input shape (default 1,3,512,1024). Runs alternate between the two
sessions on the same input so machine load hits both alike; prints medians as a table.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import colour_model, conv_stack_model  # noqa: E402

from fastseg.engines.ort import RuntimeOptions, create_session  # noqa: E402


def measure(name: str, onnx_path: Path, shape: tuple[int, ...], reps: int) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sessions = {m: create_session(onnx_path, "cpu", RuntimeOptions(io_binding=m)) for m in ("plain", "iobinding")}
    times: dict[str, list[float]] = {m: [] for m in sessions}
    for s in sessions.values():
        for _ in range(2):
            s.run(x)
    for _ in range(reps):
        for m, s in sessions.items():
            t = time.perf_counter()
            s.run(x)
            times[m].append(time.perf_counter() - t)
    plain, bound = (float(np.median(times[m])) * 1000 for m in ("plain", "iobinding"))
    print(f"| {name}, {'x'.join(map(str, shape))} | {plain:.2f} | {bound:.2f} | {bound / plain:.2f} |", flush=True)
    for s in sessions.values():
        s.close()


def main(argv: list[str]) -> None:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return
    missing = [arg for arg in argv if not (Path(arg.partition(":")[0]) / "model.onnx").is_file()]
    if missing:
        raise SystemExit(f"no model.onnx in {', '.join(missing)}: give converted model directories (see --help)")
    print("| model, input | plain ms | IO binding ms | ratio |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        measure("tiny colour -> labels", colour_model(d / "l.onnx", "labels"), (1, 3, 512, 1024), 30)
        measure("tiny colour -> logits", colour_model(d / "g.onnx", "logits"), (1, 3, 512, 1024), 30)
        measure("tiny colour -> labels", colour_model(d / "l.onnx", "labels"), (8, 3, 128, 128), 30)
        measure("conv stack -> labels", conv_stack_model(d / "c.onnx"), (1, 3, 256, 512), 12)
        measure("conv stack -> 19-class logits", conv_stack_model(d / "cl.onnx", argmax=False), (1, 3, 256, 512), 12)
    for arg in argv:
        path, _, dims = arg.partition(":")
        shape = tuple(int(v) for v in dims.split(",")) if dims else (1, 3, 512, 1024)
        measure(Path(path).name, Path(path) / "model.onnx", shape, 10)


if __name__ == "__main__":
    main(sys.argv[1:])
