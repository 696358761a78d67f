"""Turn the request's ``image`` field into a BGR array, refusing anything unsafe.

Runs in a worker thread (it decodes and may fetch). Every refusal is an ``InputError`` whose
message says what was wrong; the app answers it with 422. Order of checks, cheapest first:
base64 (or URL policy, DNS, and ``fastseg.fetch`` with a byte cap and a whole-fetch deadline) -> image header
(format, width, height, pixel limit, read without decoding pixels: decompression bombs stop
here) -> container sanity (PNG chunk lengths must fit in the file; a JPEG must end after its
last scan) -> full decode (truncated files fail here). ``probe_image_bytes`` does the checks up
to the decode, so the app can reserve the decoded size from its memory budget first.
"""

from __future__ import annotations

import binascii
import io
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from fastseg.errors import InputError
from fastseg.fetch import check_addresses, check_url, fetch_bytes, is_url
from fastseg.png_decode import PNG_SIGNATURE, decode_png
from fastseg.serving.config import UrlInputConfig
from fastseg.serving.decode_cost import MAX_PNG_CHUNKS, check_decode_cost

#: Formats the server decodes. Others (TIFF, PSD, ...) are refused to keep the decoder surface small.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "WEBP")
_PNG_MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk's length field


@dataclass(frozen=True)
class ImageHeader:
    """What the header says about an image, read before any pixel is decoded."""

    format: str
    width: int
    height: int

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded HxWx3 uint8 array (what the memory budget reserves)."""
        return self.width * self.height * 3


@dataclass(frozen=True)
class ImageDecoder:
    """Decodes request images under fixed limits. Stateless, safe to share between threads."""

    max_bytes: int
    max_pixels: int
    url_inputs: UrlInputConfig

    def decode(self, field: str) -> npt.NDArray[np.uint8]:
        """``field`` (base64 file bytes or an http(s) URL) -> HxWx3 uint8 BGR.

        Raises:
            InputError: bad base64, refused or failed URL, not an image, too many pixels,
                zero size, truncated or corrupt file.
        """
        data, header = self.load(field)
        return decode_pixels(data, header)

    def load(self, field: str, *, deadline: float | None = None) -> tuple[bytes, ImageHeader]:
        """``field`` -> (file bytes, checked header), decoding no pixels.

        Args:
            field: base64 file bytes or an http(s) URL.
            deadline: ``time.monotonic()`` by which a URL fetch must have finished (it is also
                bounded by ``url_inputs.timeout_s``).

        Raises:
            InputError: as ``decode``, except failures that only a full decode finds.
        """
        data = self._fetch(field, deadline) if is_url(field) else self._from_base64(field)
        return data, probe_image_bytes(data, max_pixels=self.max_pixels)

    def _from_base64(self, field: str) -> bytes:
        text = field.strip()
        if text.startswith("data:") and "," in text[:100]:
            text = text.split(",", 1)[1]  # tolerate data URLs from browsers
        if not text:
            raise InputError("'image' is empty: send the base64 of an image file, or an http(s) URL.")
        try:
            # Non-strict like PaddleX (base64.b64decode): 3x faster than validate=True, which runs a
            # regex over the whole string. Garbage that still decodes fails the image check below.
            data = binascii.a2b_base64(text)
        except (binascii.Error, ValueError) as exc:
            raise InputError(
                f"'image' is neither an http(s) URL nor valid base64 ({exc}); "
                "send base64.b64encode(file_bytes).decode('ascii')."
            ) from exc
        if not data:
            raise InputError("'image' decodes to zero bytes: send the base64 of an image file.")
        return data

    def _fetch(self, url: str, deadline: float | None) -> bytes:
        policy = self.url_inputs
        if not policy.allowed_hosts:  # before parsing: a server without URL inputs never parses one
            raise InputError(
                "URL inputs are disabled on this server: send the image as base64 "
                "(an operator can allow hosts with url_inputs.allowed_hosts)."
            )
        host, port = check_url(url, what="'image' URL", fix="send a valid http(s) URL or base64")
        if "*" not in policy.allowed_hosts and host not in policy.allowed_hosts:
            raise InputError(f"URL host {host!r} is not allowed; allowed hosts: {list(policy.allowed_hosts)}.")
        check_addresses(host, port, allow_private=policy.allow_private_addresses)
        own_deadline = time.monotonic() + policy.timeout_s
        return fetch_bytes(
            url,
            deadline=own_deadline if deadline is None else min(deadline, own_deadline),
            max_bytes=self.max_bytes,
            timeout_hint="url_inputs.timeout_s or the request deadline",
        )


def decode_image_bytes(data: bytes, *, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Image file bytes -> HxWx3 uint8 BGR: ``probe_image_bytes``, then ``decode_pixels``.

    Raises:
        InputError: not an accepted image format, zero or too many pixels, truncated/corrupt.
    """
    return decode_pixels(data, probe_image_bytes(data, max_pixels=max_pixels))


def probe_image_bytes(data: bytes, *, max_pixels: int) -> ImageHeader:
    """Check an image file without decoding its pixels: format, size, pixel limit, container.

    Memory stays bounded by the file size: the header is parsed by Pillow (lazy), PNG chunk
    lengths are checked against the bytes present (OpenCV would allocate whatever a chunk's
    length field claims: 4 GB for ``ff ff ff ff``), and a JPEG must end after its last scan.

    Raises:
        InputError: not an accepted image format, zero or too many pixels, corrupt container.
    """
    try:
        # Image.open reads only the header; the pixel check below runs before any decoding.
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(  # Pillow's own bomb check fired first; its message names Pillow's limit, not this server's
            f"image has too many pixels, over this server's limit of {max_pixels} (max_pixels); downscale it first."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(
            f"'image' is not a readable image (accepted formats: {', '.join(ACCEPTED_FORMATS)})."
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"'image' has a corrupt header: {exc}.") from exc
    with image:
        width, height = image.size
        fmt = str(image.format)
        frames = int(getattr(image, "n_frames", 1)) if fmt == "WEBP" else 1  # JPEG: MPO photos are fine
    if width <= 0 or height <= 0:
        raise InputError(f"image has zero size ({width}x{height}).")
    if width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height} pixels, over this server's limit of "
            f"{max_pixels} (max_pixels); downscale it first."
        )
    if fmt == "PNG":
        _check_png_chunks(data, width, height)
    if fmt == "JPEG" and not _jpeg_complete(data):
        raise InputError(f"JPEG image {width}x{height} is truncated (no end-of-image marker after its last scan).")
    check_decode_cost(data, fmt, width, height, frames)
    return ImageHeader(fmt, width, height)


def decode_pixels(data: bytes, header: ImageHeader) -> npt.NDArray[np.uint8]:
    """Decode a file that ``probe_image_bytes`` accepted into HxWx3 uint8 BGR.

    Raises:
        InputError: the pixel data is truncated or corrupt.
    """
    # OpenCV decodes as PaddleX's serving does (EXIF orientation applied, alpha dropped, BGR);
    # libspng gives the same pixels faster for the PNGs where the two agree (fastseg.png_decode).
    array: npt.NDArray[Any] | None = decode_png(data) if header.format == "PNG" else None
    if array is None:
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None or array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(
            f"{header.format} image {header.width}x{header.height} could not be decoded (truncated or corrupt)."
        )
    return np.asarray(array, dtype=np.uint8)  # already uint8: no copy


def _check_png_chunks(data: bytes, width: int, height: int) -> None:
    """Walk the PNG chunks: every length must fit in the bytes that follow, up to IEND."""
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("PNG image has no PNG signature.")
    pos, size = len(PNG_SIGNATURE), len(data)
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > size:
            break
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if length > _PNG_MAX_CHUNK or pos + 12 + length > size:
            raise InputError(
                f"PNG image {width}x{height} is truncated or corrupt: its {kind!r} chunk at byte {pos} "
                f"declares {length} bytes, but only {max(size - pos - 12, 0)} follow."
            )
        if kind == "IEND":
            return
        pos += 12 + length
    else:
        raise InputError(f"PNG image {width}x{height} has over {MAX_PNG_CHUNKS} chunks; re-encode it.")
    raise InputError(f"PNG image {width}x{height} is truncated (no IEND chunk).")


def _jpeg_complete(data: bytes) -> bool:
    """True when an EOI marker follows the last SOS marker. Entropy-coded data never contains
    0xFFD9 (0xFF is byte-stuffed), so a file cut inside its scan data has none; OpenCV would
    silently return a partly grey image for it."""
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.find(b"\xff\xd9", sos + 2) >= 0
