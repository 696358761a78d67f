"""The floor of one PNG's decode: how fast its zlib stream inflates, by every inflater at hand.

    python benchmarks/inflate_floor.py IMAGE.png [IMAGE.png ...] [--runs 15]

A PNG's pixels are one deflate stream, and ``fastseg.png_decode`` cannot decode faster than that
stream inflates (the unfilter runs beside it on a second thread). Where the image's rows copy
window bytes from far back (Paeth rows, libpng's best compression), the stream cannot be split
(``png_split``), so this is the least a single image's ``pre`` can take on this CPU. Timed per
image, medians of ``--runs``, the inflaters alternating so drift hits all of them:

- ``isal whole``: ``isal_zlib.decompress`` in one call (a fresh bytes object the image's size:
  its page faults count, as they would);
- ``isal streamed``: ``decompressobj`` fed 64 KiB at a time, as ``png_decode``'s helper feeds it;
- ``libdeflate``: imagecodecs' ``deflate_decode`` into a preallocated buffer;
- ``zlib``: the standard library's;
- ``rapidgzip``: its parallel inflate (2 threads; it decodes past unknown window bytes with
  markers and resolves them after), only where the package is installed;
- ``decode_png``: fastseg's whole decode (inflate, unfilter, BGR), for comparison.
Speed only; each result's length is checked against the image's size. ``--pipeline`` then times
``png_decode``'s pipelined path alone, back to back: when its helper thread starts, how long its
inflate takes beside the unfilter, and the whole decode (where the time above the inflate goes).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pipeline", action="store_true", help="also time the pipelined decode's parts")
    args = parser.parse_args()

    from imagecodecs import deflate_decode
    from isal import isal_zlib

    from fastseg import png_decode

    png_decode.compiled_unfilter()  # load the kernels first: decode_png then takes its fastest path
    for path in args.images:
        data = path.read_bytes()
        header = png_decode._fast_header(data)
        stream = None if header is None else png_decode._image_stream(data)
        if stream is None or header is None:
            print(f"{path.name}: not an 8-bit RGB(A) PNG that fastseg decodes itself; skipped")
            continue
        width, height, colour = header
        size = height * (width * png_decode._CHANNELS[colour] + 1)
        whole = b"".join(stream)
        buffer = bytearray(size)

        def streamed() -> int:
            inflater, done = isal_zlib.decompressobj(), 0
            for at in range(0, len(whole), 1 << 16):
                pending: bytes = whole[at : at + (1 << 16)]
                while pending:
                    done += len(inflater.decompress(pending, 1 << 20))
                    pending = inflater.unconsumed_tail
            return done

        inflaters: dict[str, Callable[[], int]] = {
            "isal whole": lambda: len(isal_zlib.decompress(whole)),
            "isal streamed": streamed,
            "libdeflate": lambda: len(deflate_decode(whole, out=buffer)),
            "zlib": lambda: len(zlib.decompress(whole)),
        }
        try:
            import rapidgzip

            inflaters["rapidgzip, 2 threads"] = lambda: len(
                rapidgzip.RapidgzipFile(io.BytesIO(whole), parallelization=2).read()
            )
        except ImportError:
            pass
        inflaters["decode_png"] = lambda: size if png_decode.decode_png(data) is not None else -1
        times: dict[str, list[float]] = {name: [] for name in inflaters}
        for _ in range(args.runs):
            for name, inflate in inflaters.items():
                start = time.perf_counter()
                got = inflate()
                times[name].append((time.perf_counter() - start) * 1e3)
                if got != size:
                    raise SystemExit(f"{path.name}: {name} gave {got} bytes, not {size}")
        print(f"{path.name} ({width}x{height}, stream {len(whole):,} bytes -> {size:,}), {args.runs} alternating rounds:")
        for name, samples in times.items():
            print(f"  {name:22s} {statistics.median(samples):7.2f} ms (min {min(samples):.2f})")
        if args.pipeline:
            _pipeline_parts(stream, width, height, args.runs)


def _pipeline_parts(stream: list[memoryview], width: int, height: int, runs: int) -> None:
    """The pipelined decode (``png_decode._pipelined``) run back to back, its helper's inflate timed."""
    import numpy as np

    from fastseg import png_decode
    from fastseg._png_kernels import new_work

    unfilter = png_decode.compiled_unfilter()
    assert unfilter is not None
    inflate = png_decode._inflate_pieces
    marks: dict[str, float] = {}

    def timed_inflate(*args: object) -> None:
        marks["start"] = time.perf_counter()
        inflate(*args)  # type: ignore[arg-type]
        marks["end"] = time.perf_counter()

    parts: dict[str, list[float]] = {"helper starts after": [], "helper inflates for": [], "decode": []}
    png_decode._inflate_pieces = timed_inflate  # type: ignore[assignment]
    try:
        for _ in range(runs):
            out, work = np.empty((height, width, 3), np.uint8), new_work(width)
            start = time.perf_counter()
            if not png_decode._pipelined(stream, height, width, unfilter, out, work):
                raise SystemExit("the pipelined decode failed")
            parts["decode"].append((time.perf_counter() - start) * 1e3)
            parts["helper starts after"].append((marks["start"] - start) * 1e3)
            parts["helper inflates for"].append((marks["end"] - marks["start"]) * 1e3)
    finally:
        png_decode._inflate_pieces = inflate
    print(f"  pipelined decode, {runs} runs back to back:")
    for name, samples in parts.items():
        print(f"    {name:22s} {statistics.median(samples):7.2f} ms")


if __name__ == "__main__":
    main()
