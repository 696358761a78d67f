"""ONNX Runtime's intra-op spinning against the next image's decode: one Segmenter, one mode per process.

    python benchmarks/ort_spinning.py MODEL_DIR IMAGE --mode stop|spin|nospin [--runs 9]

Each run is a ``fastseg bench`` row's (``bench.workers``): read and decode IMAGE, prepare it,
run the network with the banded head, restore the labels to the source size; pre / infer / e2e
medians after 2 warm-ups, 2 threads.
``stop``: ``session.force_spinning_stop=1``, what fastseg sets (the threads spin inside a run
and stop when it returns); ``spin``: ORT's default (they keep spinning after it, beside the next
decode); ``nospin``: ``session.intra_op.allow_spinning=0`` (no spinning at all). Alternate the
modes in separate processes on a quiet machine (benchmarks/RESULTS.md, session 16).
"""

from __future__ import annotations

import argparse
import statistics
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
    from fastseg.bench.workers import _fastseg_stages, _time_loop, _wait_for_background_loads

    spec = {"onnx_dir": str(args.model_dir), "image": str(args.image), "device": "cpu", "engine": "ort",
            "threads": 2, "batch": 1, "runs": args.runs, "warmup": 2}
    pre, infer, post, _ = _fastseg_stages(spec)  # exactly what a fastseg bench row times
    _wait_for_background_loads()
    m = {stage: statistics.median(v) for stage, v in _time_loop(spec, pre, infer, post).items()}
    print(f"{args.mode} {args.model_dir.name} {args.image.name}: pre {m['pre']:.1f}  infer {m['infer']:.1f}  "
          f"e2e {m['e2e']:.1f} ms")


if __name__ == "__main__":
    main()
