"""Bounds on what one image may cost to decode, read from its bytes before any pixel is decoded.

The pixel limit bounds a decode's memory, not its time: a 2.5 MB progressive JPEG of 6000x6000
(under the 40 MP limit) with one AC scan repeated 100,000 times took 62 CPU-s in
``cv2.imdecode``, a C call no timeout can stop. Each scan is one pass over the whole image, so
the cost is pixels x scans; with the scan count capped, the worst decode is ``max_pixels`` x
``MAX_JPEG_SCANS`` passes of cheap entropy decoding. An encoder writes 1 scan (baseline) or
about 10 (progressive: libjpeg's default script has 10, mozjpeg's up to 16); 64 leaves room.
Animated WebP is refused: only the first frame would be used, and frames are a cost multiplier
of their own.
"""

from __future__ import annotations

from fastseg.errors import InputError

#: Most scans (SOS markers) a JPEG may have.
MAX_JPEG_SCANS = 64
#: Most chunks a PNG may have (a real encoder writes 8-64 KB IDAT chunks: 20 MB -> a few thousand).
MAX_PNG_CHUNKS = 65_536


def jpeg_scan_count(data: bytes) -> int:
    """Upper bound on a JPEG's scans: its 0xFFDA (SOS) markers. Entropy-coded data never holds
    0xFFDA (an 0xFF there is followed by 0x00 or a restart marker), so every scan is counted;
    a thumbnail inside an APP segment may add its own, which only errs on the safe side."""
    return data.count(b"\xff\xda")


def check_decode_cost(data: bytes, fmt: str, width: int, height: int, frames: int) -> None:
    """Refuse an image whose decode would cost far more than its pixel count suggests.

    Raises:
        InputError: a JPEG with more than ``MAX_JPEG_SCANS`` scans, or an animated image.
    """
    if frames > 1:
        raise InputError(
            f"{fmt} image {width}x{height} is animated ({frames} frames); send a single still image."
        )
    if fmt == "JPEG":
        scans = jpeg_scan_count(data)
        if scans > MAX_JPEG_SCANS:
            raise InputError(
                f"JPEG image {width}x{height} has {scans} scans, over the limit of {MAX_JPEG_SCANS} "
                "(a progressive JPEG has about 10; this one would cost one full decoding pass per scan); "
                "re-encode it as a baseline JPEG."
            )
