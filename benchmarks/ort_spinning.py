"""ONNX Runtime's intra-op spinning against the next image's decode: one Segmenter, one mode per process.

    python benchmarks/ort_spinning.py MODEL_DIR IMAGE --mode stop|spin|nospin [--runs 9]

Each run decodes IMAGE, prepares it, runs the network with the banded head, and restores the
labels to the source size, timed as pre / infer / e2e (medians after 2 warm-ups; 2 threads).
``stop``: ``session.force_spinning_stop=1``, what fastseg sets (the threads spin inside a run
and stop when it returns); ``spin``: ORT's default (they keep spinning after it, beside the next
decode); ``nospin``: ``session.intra_op.allow_spinning=0`` (no spinning at all). Alternate the
modes in separate processes on a quiet machine (benchmarks/RESULTS.md, session 16).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import fastseg.engines.ort as ort_engine
from fastseg.engines.ort import RuntimeOptions

_ENTRIES = {
    "stop": {"session.force_spinning_stop": "1"},
    "spin": {"session.force_spinning_stop": "0"},
    "nospin": {"session.intra_op.allow_spinning": "0"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--mode", choices=sorted(_ENTRIES), required=True)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    built = ort_engine.session_options

    def with_mode(options: RuntimeOptions) -> Any:
        so = built(options)
        for key, value in _ENTRIES[args.mode].items():
            so.add_session_config_entry(key, value)
        return so

    ort_engine.session_options = with_mode  # create_session looks it up at call time
    from fastseg.head.fused import warm_up
    from fastseg.png_decode import preload
    from fastseg.processing import decode_image, labels_from_output, restore_size
    from fastseg.segmenter import Segmenter

    seg = Segmenter(args.model_dir, device="cpu", options=RuntimeOptions(intra_op_threads=2), engine="ort")
    for started in (warm_up, preload):
        if started.cache_info().currsize:
            started().join(timeout=120)
    pre: list[float] = []
    infer: list[float] = []
    e2e: list[float] = []
    for i in range(args.runs + 2):
        t0 = time.perf_counter()
        image = decode_image(args.image.read_bytes(), source=str(args.image))
        batch = seg.prepare([image], seg.resize)
        t1 = time.perf_counter()
        output = seg.infer(batch)
        t2 = time.perf_counter()
        labels, _ = labels_from_output(output, seg.meta.output_kind)
        restore_size(labels[0], (int(image.shape[0]), int(image.shape[1])))
        t3 = time.perf_counter()
        if i >= 2:
            pre.append((t1 - t0) * 1e3)
            infer.append((t2 - t1) * 1e3)
            e2e.append((t3 - t0) * 1e3)
    m = statistics.median
    print(f"{args.mode} {args.model_dir.name} {args.image.name}: pre {m(pre):.1f}  infer {m(infer):.1f}  e2e {m(e2e):.1f} ms")


if __name__ == "__main__":
    main()
