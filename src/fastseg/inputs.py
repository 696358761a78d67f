"""What ``Segmenter.predict`` accepts, flattened into ``InputItem``s.

Inputs follow PaddleX's predict(): BGR uint8 arrays, paths, http(s) URLs, directories
(recursive, image suffixes, sorted), ``{"img": ...}`` dicts, and lists of these. Files are
checked when expanded and read only when an item is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError
from fastseg.processing import IMAGE_SUFFIXES, as_bgr, decode_image

URL_TIMEOUT_S = 30.0
URL_MAX_BYTES = 128 * 2**20
"""The largest image predict downloads from a URL (a larger one: download it, pass the file)."""


@dataclass(frozen=True)
class InputItem:
    """One image to segment: in memory (``image``), a file (``path``) or a URL (``url``)."""

    source: str | None
    image: npt.NDArray[np.uint8] | None = None
    path: Path | None = None
    url: str | None = None

    def load(self) -> npt.NDArray[np.uint8]:
        """Read/decode the image as BGR uint8 HxWx3.

        Raises:
            InputError: unreadable/corrupt file, unreachable URL, wrong array.
        """
        if self.image is not None:
            return as_bgr(self.image)
        if self.path is not None:
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                raise InputError(f"Cannot read image {str(self.path)!r}: {exc.strerror or exc}.") from exc
            return decode_image(data, source=repr(str(self.path)))
        if self.url is not None:
            return decode_image(fetch_url(self.url), source=self.url)
        raise InputError("Empty input item.")


def fetch_url(url: str, *, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
    """GET ``url`` (http/https) with ``fastseg.fetch``: ``timeout`` seconds for the whole download
    (redirects included, up to 5; default ``URL_TIMEOUT_S``), at most ``max_bytes`` (default
    ``URL_MAX_BYTES``), no proxies. Private addresses are allowed: a local run may read from the
    user's own network (the service refuses them).

    Raises:
        InputError: malformed URL, network error, HTTP error, too large, or timeout (the message
            names the URL and the fix).
    """
    from fastseg.fetch import check_url, fetch_bytes

    timeout = URL_TIMEOUT_S if timeout is None else timeout
    max_bytes = URL_MAX_BYTES if max_bytes is None else max_bytes
    try:
        check_url(url)
        return fetch_bytes(
            url, deadline=time.monotonic() + timeout, max_bytes=max_bytes, timeout_hint=f"fastseg allows {timeout:g}s",
            max_redirects=5, check_redirect=check_url,
        )
    except InputError as exc:
        raise InputError(f"Cannot download image {url}: {exc} Check the URL or download it and pass the file.") from exc


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(inputs: Any) -> list[InputItem]:
    """Flatten what ``predict`` accepts into ``InputItem``s (files are checked, not read).

    Raises:
        InputError: missing path, empty directory, unsupported type.
    """
    items: list[InputItem] = []
    _expand(inputs, items)
    return items


def _expand(x: Any, items: list[InputItem]) -> None:
    if isinstance(x, InputItem):  # already expanded (the CLI counts items first)
        items.append(x)
    elif isinstance(x, np.ndarray):
        items.append(InputItem(source=None, image=x))
    elif isinstance(x, dict):
        if "img" not in x:
            raise InputError(f"A dict input needs an 'img' key (PaddleX style), got keys {sorted(x)}.")
        _expand(x["img"], items)
    elif isinstance(x, (list, tuple)):
        for sub in x:
            _expand(sub, items)
    elif isinstance(x, (str, Path)):
        text = str(x)
        if isinstance(x, str) and text.lower().startswith(("http://", "https://")):
            items.append(InputItem(source=text, url=text))
            return
        path = Path(text).expanduser()
        if path.is_dir():
            files = _image_files(path)
            if not files:
                raise InputError(
                    f"Directory {text!r} contains no images (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)."
                )
            items.extend(InputItem(source=str(f), path=f) for f in files)
        elif path.is_file():
            items.append(InputItem(source=str(path), path=path))
        else:
            raise InputError(f"Input {text!r} does not exist (not a file, directory or http(s) URL).")
    else:
        raise InputError(
            f"Unsupported input type {type(x).__name__}: pass a BGR uint8 numpy array, a path, a directory, "
            "an http(s) URL, a {'img': ...} dict, or a list of these."
        )


def read_ahead(chunks: Sequence[Sequence[InputItem]]) -> Iterator[tuple[Sequence[InputItem], list[npt.NDArray[np.uint8]]]]:
    """Each chunk with its loaded images, the next chunk read and decoded on a thread while the
    caller runs this one (OpenCV releases the GIL): decoding hides behind inference. At most
    one chunk ahead, so memory stays bounded; a load error surfaces in input order."""
    if len(chunks) < 2:
        for chunk in chunks:
            yield chunk, [item.load() for item in chunk]
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastseg-read") as pool:
        pending = pool.submit(lambda c: [item.load() for item in c], chunks[0])
        for index, chunk in enumerate(chunks):
            images = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(lambda c: [item.load() for item in c], chunks[index + 1])
            yield chunk, images
