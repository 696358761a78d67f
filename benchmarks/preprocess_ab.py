"""Pre-processing inside the engine vs numpy, and directory read-ahead vs sequential decoding.

    python benchmarks/preprocess_ab.py pre   --model-dir DIR [--engine ort|openvino] --image IMG --runs 6
    python benchmarks/preprocess_ab.py ahead --model-dir DIR --images DIR --passes 3
    python benchmarks/preprocess_ab.py decode --images DIR --runs 7

``pre``: two Segmenters in one process (``preprocess="engine"`` and ``"numpy"``) run alternately
on the same decoded image, end to end (labels at source size); prints medians, their ratio and
the share of equal labels. ``ahead``: ``Segmenter.predict`` over the directory's images with the
next image decoded on a thread (``fastseg.inputs.read_ahead``) and without, and the network alone
on the same images decoded beforehand, alternating passes; prints ms per image and the share of a
directory run spent outside the network (issue 17's pre+post target, for directory runs).
``decode``: each of ``fastseg.png_decode``'s paths (the default, which splits OpenCV-written
PNGs over two inflates; isal beside the compiled unfilter; libdeflate then the unfilter;
libspng) against ``cv2.imdecode`` on the directory's PNGs, alternating per file in one process;
prints medians, their ratio to OpenCV, how many PNGs each path took and whether its pixels equal
OpenCV's. Quiet machine only for real figures (benchmarks/RESULTS.md, issue 17).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

import fastseg.segmenter as segmenter_module
from fastseg.engines.ort import RuntimeOptions
from fastseg.processing import decode_image
from fastseg.segmenter import Segmenter


def engine_vs_numpy(model_dir: Path, engine: str, image: Path, runs: int, threads: int) -> str:
    img = cv2.imread(str(image))
    options = RuntimeOptions(intra_op_threads=threads)
    segs = {mode: Segmenter(model_dir, engine=engine, preprocess=mode, options=options) for mode in ("engine", "numpy")}
    times: dict[str, list[float]] = {mode: [] for mode in segs}
    for seg in segs.values():
        next(seg.predict(img))
    for _ in range(runs):
        for mode, seg in segs.items():
            start = time.perf_counter()
            next(seg.predict(img))
            times[mode].append((time.perf_counter() - start) * 1e3)
    a, b = (next(segs[m].predict(img)).pred for m in ("engine", "numpy"))
    med = {m: statistics.median(v) for m, v in times.items()}
    return (f"{model_dir.name} {segs['engine'].engine_name} {segs['engine'].precision}: engine {med['engine']:.1f} ms "
            f"(min {min(times['engine']):.1f}), numpy {med['numpy']:.1f} ms (min {min(times['numpy']):.1f}); "
            f"engine/numpy {med['engine'] / med['numpy']:.3f}; labels equal {100 * float((a == b).mean()):.4f}%")


def _sequential(chunks: Sequence[Sequence[Any]]) -> Iterator[tuple[Sequence[Any], list[Any]]]:
    for chunk in chunks:
        yield chunk, [item.load() for item in chunk]


def read_ahead_vs_sequential(model_dir: Path, images: Path, passes: int, threads: int) -> str:
    paths = sorted(str(p) for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    seg = Segmenter(model_dir, options=RuntimeOptions(intra_op_threads=threads))
    real = getattr(segmenter_module, "read_ahead")  # the name Segmenter.predict looks up
    per_image: dict[str, list[float]] = {"read-ahead": [], "sequential": [], "network": []}
    list(seg.predict(paths[:1]))
    # The network alone on the same images, decoded and prepared before the clock starts: what a
    # directory run would take per image if reading, decoding, preparing and labelling cost nothing.
    prepared = [seg.prepare([decode_image(Path(p).read_bytes(), source=p)], seg.resize) for p in paths]
    try:
        for _ in range(passes):
            for mode in per_image:
                setattr(segmenter_module, "read_ahead", real if mode == "read-ahead" else _sequential)
                start = time.perf_counter()
                if mode == "network":
                    count = sum(1 for x in prepared if seg.infer(x) is not None)
                else:
                    count = sum(1 for _ in seg.predict(paths))
                per_image[mode].append((time.perf_counter() - start) * 1e3 / count)
    finally:
        setattr(segmenter_module, "read_ahead", real)
    med = {m: statistics.median(v) for m, v in per_image.items()}
    share = {m: 100 * (1 - med["network"] / med[m]) for m in ("read-ahead", "sequential")}
    return (f"{seg.meta.model_name} {seg.engine_name} {seg.precision}, {len(paths)} images, {passes} passes: "
            + "; ".join(f"{m} {t:.1f} ms/image" for m, t in med.items())
            + "; outside the network (read, decode, pre, post): "
            + ", ".join(f"{m} {s:.1f}%" for m, s in share.items()))


def decoders_vs_opencv(images: Path, runs: int) -> str:
    """Each of fastseg's PNG paths, then OpenCV, on every PNG in turn, ``runs`` rounds."""
    import numpy as np

    from fastseg import png_decode

    datas = [p.read_bytes() for p in sorted(images.rglob("*.png"))]
    if not datas:
        raise SystemExit(f"no PNG under {images}")
    unfilter = png_decode.compiled_unfilter()
    pipelined = png_decode._isal_zlib() is not None

    def opencv(data: bytes) -> Any:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def path(min_bytes: int, unfilter_ready: bool, split_bytes: int = 1 << 62) -> Any:
        def decode(data: bytes) -> Any:
            saved = png_decode.PIPELINE_MIN_BYTES, png_decode.SPLIT_MIN_BYTES, png_decode.ready_unfilter
            png_decode.PIPELINE_MIN_BYTES, png_decode.SPLIT_MIN_BYTES = min_bytes, split_bytes
            png_decode.ready_unfilter = (lambda: unfilter) if unfilter_ready else (lambda: None)
            try:
                return png_decode.decode_png(data)
            finally:
                png_decode.PIPELINE_MIN_BYTES, png_decode.SPLIT_MIN_BYTES, png_decode.ready_unfilter = saved
        return decode

    decoders: dict[str, Any] = {"libspng": path(1 << 62, False), "opencv": opencv}
    if unfilter is not None:
        decoders = {"whole (libdeflate, then the kernel)": path(1 << 62, True), **decoders}
        if pipelined:
            decoders = {"default (split where it applies, else pipelined)": path(png_decode.PIPELINE_MIN_BYTES, True, png_decode.SPLIT_MIN_BYTES),
                        "pipelined (isal beside the kernel)": path(png_decode.PIPELINE_MIN_BYTES, True), **decoders}
    taken = {name: sum(decode(d) is not None for d in datas) for name, decode in decoders.items()}
    equal = {name: all(decode(d) is None or np.array_equal(decode(d), opencv(d)) for d in datas)
             for name, decode in decoders.items()}
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(runs):
        for data in datas:
            for name, decode in decoders.items():
                start = time.perf_counter()
                decode(data)
                times[name].append((time.perf_counter() - start) * 1e3)
    shape = opencv(datas[0]).shape
    lines = [f"{len(datas)} PNGs (first {shape[1]}x{shape[0]}), {runs} rounds, medians over all decodes:"]
    opencv_ms = statistics.median(times["opencv"])
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(f"  {name}: {med:.1f} ms (min {min(values):.1f}), x{med / opencv_ms:.3f} of OpenCV; "
                     f"took {taken[name]}/{len(datas)}, pixels equal to OpenCV's: {equal[name]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["pre", "ahead", "decode"])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--image", type=Path, help="pre: the image")
    parser.add_argument("--images", type=Path, help="ahead, decode: a directory of images")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.what == "decode":
        if args.images is None:
            parser.error("decode needs --images")
        print(decoders_vs_opencv(args.images, args.runs))
        return 0
    if args.model_dir is None:
        parser.error(f"{args.what} needs --model-dir")
    if args.what == "pre":
        if args.image is None:
            parser.error("pre needs --image")
        print(engine_vs_numpy(args.model_dir, args.engine, args.image, args.runs, args.threads))
    else:
        if args.images is None:
            parser.error("ahead needs --images")
        print(read_ahead_vs_sequential(args.model_dir, args.images, args.passes, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
