"""Label agreement: each model's full graph vs its body + fastseg.head's banded head.

    python benchmarks/head_agreement.py --model-dir /work/models/SeaFormer_tiny \
        --sizes 1024x2048,256x512,97x211 --images ../shared/data/images/street

Feeds the same network input (random N(0,1), and each photo resized and normalised with the
model's mean/std) to both and compares every pixel. Prints the count of differing pixels
(and the first ten with both labels). Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from fastseg.head import prepare_head
from fastseg.engines.ort import create_session
from fastseg.slide import parse_hw


def _inputs(model_dir: Path, hw: tuple[int, int], images: list[Path]) -> list[tuple[str, np.ndarray]]:
    h, w = hw
    pre = json.loads((model_dir / "fastseg.json").read_text())["preprocess"]
    mean, std = np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
    out = [("random", np.random.default_rng(1).standard_normal((1, 3, h, w)).astype(np.float32))]
    for path in images:
        rgb = cv2.resize(cv2.imread(str(path)), (w, h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        x = (rgb.astype(np.float32) * np.float32(pre["scale"]) - mean) / std
        out.append((path.name, np.ascontiguousarray(x.transpose(2, 0, 1)[None])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, action="append", required=True)
    parser.add_argument("--sizes", default="256x512,97x211")
    parser.add_argument("--images", type=Path, help="a folder of photos (first --max-images used)")
    parser.add_argument("--max-images", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = [parse_hw(s, name="--sizes") for s in args.sizes.split(",")]
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))[: args.max_images] if args.images else []
    failed = False
    with tempfile.TemporaryDirectory() as home:
        for model_dir in args.model_dir:
            model = model_dir / "model.onnx"
            head = prepare_head(model, head="banded", home=Path(home))
            full, body = create_session(model), create_session(head.model_path)
            print(f"== {model_dir.name}")
            for hw in sizes:
                for name, x in _inputs(model_dir, hw, images):  # type: ignore[arg-type]
                    want = full.run(x)
                    logits = body.run(x)
                    got = head.finish(logits, x.shape)
                    bad = np.argwhere(got != want)
                    failed = failed or len(bad) > 0
                    print(f"  {hw[0]}x{hw[1]} {name:14s} differing {len(bad)}/{want.size}")
                    for n, y, xx in bad[:10]:
                        print(f"    pixel ({y},{xx}): graph {want[n, y, xx]} banded {got[n, y, xx]}")
            full.close()
            body.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
