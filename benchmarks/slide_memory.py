"""Peak RSS and time of one Segmenter configuration (whole image or sliding windows).

One configuration per process, so the peak RSS (``ru_maxrss``) belongs to it alone. Prints one
JSON line; ``--out`` appends it to a JSON-lines file.

    # 8000x8000 aerial-size image, PP-LiteSeg-T, 1024x1024 windows (the issue's <= 2 GB target)
    python benchmarks/slide_memory.py --model /work/models/PP-LiteSeg-T --size 8000x8000 \\
        --slide 1024x1024 --stride 1024x1024 --save /tmp/slide-out
    # SegFormer-B2 on a Cityscapes-size frame: whole image vs PaddleSeg's published 1024x1024/768
    python benchmarks/slide_memory.py --model /work/models/SegFormer-B2 --size 1024x2048
    python benchmarks/slide_memory.py --model /work/models/SegFormer-B2 --size 1024x2048 \\
        --slide 1024x1024 --stride 768x768

Time is only meaningful on a quiet machine (``--runs`` > 1 reports each run).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from fastseg import Segmenter
from fastseg.engines.ort import RuntimeOptions
from fastseg.slide import parse_hw, window_layout


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def unbounded_check(seg: Segmenter, img: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """PaddleSeg's slide_inference with a full canvas (float64, as there) on the same logits model."""
    import onnxruntime as ort

    from fastseg.processing import preprocess_batch
    from fastseg.slide import slide_model_path

    path, _ = slide_model_path(seg.model_dir / "model.onnx", seg.meta, seg.slide, None, None)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = preprocess_batch([img], seg.meta.preprocess, resize=seg.meta.preprocess.resize)
    h, w = batch.shape[2:]
    canvas: np.ndarray | None = None
    count = np.zeros((h, w))
    assert seg.slide is not None
    for y0, y1, x0, x1 in window_layout((h, w), seg.slide):
        logit = sess.run(None, {seg.meta.input_name: np.ascontiguousarray(batch[:, :, y0:y1, x0:x1])})[0]
        if canvas is None:
            canvas = np.zeros((logit.shape[1], h, w))
        canvas[:, y0:y1, x0:x1] += logit[0]
        count[y0:y1, x0:x1] += 1
    assert canvas is not None
    expected = (canvas / count).argmax(axis=0)
    differ = int((expected != labels).sum())
    return {"canvas_mb": round(canvas.nbytes / 2**20), "differing_labels": differ, "identical": differ == 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Converted model directory or zoo name.")
    ap.add_argument("--size", default="8000x8000", help="Synthetic image HxW.")
    ap.add_argument("--image", type=Path, help="Use this image instead of a synthetic one (resized to --size).")
    ap.add_argument("--slide", default=None, help="Window HxW (default: whole-image inference).")
    ap.add_argument("--stride", default=None, help="Window step HxW (default: the window).")
    ap.add_argument("--batch", type=int, default=1, help="Windows per network call.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--save", type=Path, help="Also write the colour PNG here (checks large outputs).")
    ap.add_argument("--out", type=Path, help="Append the JSON line to this file.")
    ap.add_argument("--check", action="store_true",
                    help="Also compute PaddleSeg's unbounded formula (a full float64 canvas) and count differing labels.")
    args = ap.parse_args(argv)

    h, w = parse_hw(args.size, name="--size")
    if args.image is not None:
        import cv2

        img = cv2.resize(cv2.imread(str(args.image)), (w, h), interpolation=cv2.INTER_LINEAR)
    else:  # smooth gradients plus noise: content does not change the cost of a convolutional net
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    slide = parse_hw(args.slide, name="--slide") if args.slide else None
    stride = parse_hw(args.stride, name="--stride") if args.stride else None
    rss_image = rss_mb()
    seg = Segmenter(
        args.model, slide=slide, slide_stride=stride, batch_size=args.batch,
        options=RuntimeOptions(intra_op_threads=args.threads),
    )
    rss_loaded = rss_mb()
    seconds = []
    with seg:
        for _ in range(args.runs):
            start = time.perf_counter()
            res = next(seg.predict(img))
            seconds.append(time.perf_counter() - start)
        save_s = None
        if args.save is not None:
            start = time.perf_counter()
            target = res.save_to_img(args.save)
            save_s = time.perf_counter() - start
    check = unbounded_check(seg, img, res.pred[0]) if args.check and seg.slide else None
    row = {
        "model": seg.meta.model_name,
        "size": [h, w],
        "slide": list(slide) if slide else None,
        "stride": list(seg.slide.stride_hw) if seg.slide else None,
        "windows": len(window_layout((h, w), seg.slide)) if seg.slide else 1,
        "batch": args.batch,
        "threads": args.threads,
        "seconds": [round(s, 2) for s in seconds],
        "peak_rss_mb": round(rss_mb()),
        "rss_after_image_mb": round(rss_image),
        "rss_after_load_mb": round(rss_loaded),
        "pred_shape": list(res.pred.shape),
        "classes_seen": int(len(np.unique(res.pred[0, :: max(1, h // 512), :: max(1, w // 512)]))),
        "unbounded_check": check,
        "png": None if args.save is None else {"path": str(target), "bytes": target.stat().st_size, "seconds": round(save_s or 0, 2)},
    }
    line = json.dumps(row)
    print(line)
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
