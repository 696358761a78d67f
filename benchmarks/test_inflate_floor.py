"""``benchmarks/inflate_floor.py`` on a small PNG, once, so the script cannot rot (the smoke run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from fastseg import png_decode

SCRIPT = Path(__file__).with_name("inflate_floor.py")


def test_inflate_floor_times_every_inflater_and_the_pipeline_parts(tmp_path: Path) -> None:
    if png_decode.compiled_unfilter() is None:
        import pytest

        pytest.skip("needs numba and imagecodecs (fastseg's compiled PNG path)")
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (400, 300), interpolation=cv2.INTER_CUBIC)
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), image)  # 300 x (3 x 400 + 1) bytes inflated: the pipelined path's size
    (tmp_path / "notes.png").write_bytes(b"not a png")
    out = subprocess.run([sys.executable, str(SCRIPT), str(png), str(tmp_path / "notes.png"), "--runs", "1", "--pipeline"],
                         capture_output=True, text=True, check=True).stdout
    assert "frame.png (400x300, stream" in out and "-> 360,300)" in out
    for name in ("isal whole", "isal streamed", "libdeflate", "zlib", "decode_png", "helper inflates for"):
        assert name in out, out
    assert "notes.png: not an 8-bit RGB(A) PNG that fastseg decodes itself; skipped" in out
