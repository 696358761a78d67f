"""Fuzz fastseg's PNG decoders with numba's bounds checks on: every answer must be OpenCV's.

``decode_png`` takes untrusted bytes (the service's requests) into compiled kernels that run
without bounds checks, so a crafted file must never reach memory outside its buffers. This
recompiles those kernels with ``boundscheck=True`` (an out-of-range index raises IndexError
instead of reading or writing past a buffer), mutates OpenCV- and libpng-written PNGs (flipped
bits, near the stream's middle too, cuts, splices, wrong dimensions, streams re-compressed
with sync flushes, too little or far too much data) with their CRCs made valid, and decodes
each on one of the three compiled paths (libdeflate whole, the isal pipeline, the two-thread
split; forced at any size). Each answer must be None (OpenCV decides) or OpenCV's very pixels.

Seeded (``--seed``) and bounded (``--seconds``); prints one JSON report and exits 1 on any
exception or mismatch, writing the file that caused it to ``--failures``:

    python benchmarks/fuzz_png.py --seed 1 --seconds 120
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PATHS = {"whole": (1 << 40, 1 << 40), "pipeline": (0, 1 << 40), "split": (0, 0)}
"""Path -> (PIPELINE_MIN_BYTES, SPLIT_MIN_BYTES) that forces it."""


def bounds_checked_kernels() -> None:
    """Make ``fastseg.jit.kernel`` compile with bounds checks (and no disk cache, so no
    unchecked build is loaded); must run before a kernel module is imported."""
    import numba

    import fastseg.jit

    def kernel(fn: Callable[..., Any]) -> Any:
        return numba.njit(nogil=True, cache=False, boundscheck=True)(fn)

    fastseg.jit.kernel = kernel
    assert "fastseg._png_kernels" not in sys.modules, "a kernel module was imported before the bounds checks"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    pos, found = 8, []
    while pos + 12 <= len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        found.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


def seeds(cv2: Any) -> list[bytes]:
    """OpenCV-written PNGs (every row Sub, level 1, RLE) and libpng's adaptive filters (Paeth on
    photos), from 40x33 to 1024x1024, of a smooth noisy synthetic photo."""
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    photo = np.clip(smooth.astype(np.int16) + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)
    found = []
    for h, w in [(40, 33), (97, 130), (300, 400), (640, 480), (1024, 1024)]:
        image = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        found.append(cv2.imencode(".png", image)[1].tobytes())
        found.append(cv2.imencode(".png", image, [cv2.IMWRITE_PNG_STRATEGY, 0, cv2.IMWRITE_PNG_COMPRESSION, 6])[1].tobytes())
    return found


def mutate(png: bytes, rng: random.Random) -> bytes:
    """``png`` damaged one way (chosen by ``rng``), its chunks' CRCs made valid again, its
    stream cut into 1-3 IDATs."""
    chunks = [list(c) for c in _chunks(png)]
    body = bytearray(b"".join(b for k, b in chunks if k == b"IDAT"))
    ihdr = next(c for c in chunks if c[0] == b"IHDR")
    width, height = struct.unpack(">II", ihdr[1][:8])
    kind = rng.randrange(9)
    if kind == 0:  # flipped bits anywhere
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # flipped bits just past the middle, where the split looks for a block
        for _ in range(rng.randint(1, 4)):
            body[min(len(body) - 1, len(body) // 2 + rng.randrange(-200, 2000))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        body = body[: rng.randrange(2, len(body))]
    elif kind == 3:  # a piece of itself spliced in
        a, b = sorted(rng.randrange(len(body)) for _ in range(2))
        at = rng.randrange(len(body))
        body = body[:at] + body[a:b] + body[at:]
    elif kind == 4:
        at = rng.randrange(len(body))
        body = body[:at] + bytearray(rng.randbytes(rng.randint(1, 64))) + body[at:]
    elif kind == 5:
        ihdr[1] = struct.pack(">II", max(1, width + rng.randint(-3, 3)), max(1, height + rng.randint(-40, 40))) + ihdr[1][8:]
    elif kind == 6:  # the same byte count, another shape
        ihdr[1] = struct.pack(">II", max(1, width // 2), height * 2) + ihdr[1][8:]
    elif kind == 7:  # re-compressed with flushes: intact, or a little too much or too little
        raw = zlib.decompress(bytes(body))
        cut = rng.choice([0, 0, rng.randint(-5000, 5000)])
        raw = raw[:cut] if cut < 0 else raw + rng.randbytes(cut)
        deflate = zlib.compressobj(rng.choice([1, 6, 9]), strategy=rng.choice([0, 3]))
        step, parts = rng.randint(1000, 200000), []
        for at in range(0, len(raw), step):
            flush = rng.choice([zlib.Z_SYNC_FLUSH, zlib.Z_FULL_FLUSH, zlib.Z_NO_FLUSH])
            parts.append(deflate.compress(raw[at : at + step]) + deflate.flush(flush))
        body = bytearray(b"".join(parts) + deflate.flush())
    else:  # far too much: the rows again, or noise, after the image
        raw = zlib.decompress(bytes(body))
        more = raw * rng.randint(1, 4) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, len(raw)))
        body = bytearray(zlib.compress(raw + more, rng.choice([1, 6])))
    pieces = rng.choice([1, 1, 3])
    bounds = [0, *sorted(rng.randrange(1, max(2, len(body))) for _ in range(pieces - 1)), len(body)]
    others = [(bytes(k), bytes(b)) for k, b in chunks if k != b"IDAT"]
    idats = [(b"IDAT", bytes(body[bounds[i] : bounds[i + 1]])) for i in range(pieces)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(k, b) for k, b in [others[0], *idats, *others[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--failures", type=Path, default=Path("fuzz-png-failures"), help="where failing files go")
    args = parser.parse_args()
    bounds_checked_kernels()
    import cv2

    from fastseg import png_decode

    assert png_decode.compiled_unfilter() is not None, "numba and imagecodecs are needed"
    rng, originals = random.Random(args.seed), seeds(cv2)
    report: dict[str, Any] = {"seed": args.seed, "paths": {p: {"files": 0, "decoded": 0} for p in PATHS}, "failures": []}
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        data = mutate(rng.choice(originals), rng)
        path = rng.choice(list(PATHS))
        png_decode.PIPELINE_MIN_BYTES, png_decode.SPLIT_MIN_BYTES = PATHS[path]
        try:
            got, problem = png_decode.decode_png(data), ""
        except Exception as exc:  # noqa: BLE001 - any exception is a finding
            got, problem = None, f"{type(exc).__name__}: {exc}"
        want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if not problem and got is not None and (want is None or want.shape != got.shape or not np.array_equal(want, got)):
            problem = f"decoded {got.shape}, OpenCV {None if want is None else want.shape}"
        counts = report["paths"][path]
        counts["files"] += 1
        counts["decoded"] += got is not None
        if problem:
            args.failures.mkdir(parents=True, exist_ok=True)
            saved = args.failures / f"seed{args.seed}-{sum(c['files'] for c in report['paths'].values())}.png"
            saved.write_bytes(data)
            report["failures"].append({"path": path, "problem": problem, "file": str(saved)})
    print(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
