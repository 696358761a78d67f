"""PNG decoding through libspng (imagecodecs) where it gives OpenCV's very pixels, faster.

At 1024x2048 (a Cityscapes frame) OpenCV's libpng decode is most of fastseg's pre-processing,
and at bf16 speed that is a fifth of a PP-LiteSeg-T run end to end. libspng decodes the same
PNG in about 0.75x the time (benchmarks/RESULTS.md, issue 17) and releases the GIL, so the
service's decoding threads and directory read-ahead still run in parallel (pyspng, measured
too, holds it).

Only the PNGs where the two decoders agree exactly take this path: 8-bit RGB or RGBA (alpha
dropped, as ``cv2.IMREAD_COLOR`` drops it), not interlaced (untested here), with no ``tRNS`` or ``eXIf`` chunk (OpenCV turns
the first into alpha and applies the second's orientation). Every other PNG, a file libspng
cannot decode, or an install without imagecodecs goes to OpenCV, which keeps its own error
messages and limits. tests/test_png_decode.py checks the two decoders agree.
"""

from __future__ import annotations

from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TO_BGR = {2: cv2.COLOR_RGB2BGR, 6: cv2.COLOR_RGBA2BGR}
"""IHDR colour type -> the conversion to OpenCV's BGR (2: RGB, 6: RGBA)."""
_CHANNELS = {2: 3, 6: 4}
MAX_PIXELS = 1 << 30
"""OpenCV's default decode limit (``OPENCV_IO_MAX_IMAGE_PIXELS``): larger images go to OpenCV,
which refuses them with its own message."""


def decode_png(data: bytes) -> npt.NDArray[np.uint8] | None:
    """``data`` (a whole PNG file) as BGR uint8 HxWx3, exactly as ``cv2.imdecode(...,
    cv2.IMREAD_COLOR)`` decodes it; None where OpenCV should decode it instead (not a PNG this
    path takes, libspng missing, or a decode error, so OpenCV reports it)."""
    header = _fast_header(data)
    if header is None:
        return None
    width, height, colour = header
    try:
        from imagecodecs import spng_decode
    except ImportError:
        return None
    try:
        pixels: Any = spng_decode(data)
    except Exception:  # noqa: BLE001 - any libspng failure: OpenCV decodes it and names the problem
        return None
    if pixels.dtype != np.uint8 or pixels.shape != (height, width, _CHANNELS[colour]):
        return None
    return cast("npt.NDArray[np.uint8]", cv2.cvtColor(pixels, _TO_BGR[colour]))


def _fast_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour type) from the IHDR of a PNG this path takes, else None."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour, interlace = data[24], data[25], data[28]
    if depth != 8 or colour not in _TO_BGR or interlace != 0 or not 0 < width * height <= MAX_PIXELS:
        return None
    if b"tRNS" in data or b"eXIf" in data:  # a false hit in compressed bytes only costs the fast path
        return None
    return width, height, colour
