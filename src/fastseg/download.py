"""Download official inference tarballs: streamed, resumable, checksummed, atomic.

``fetch`` writes into ``<dest>.part`` and renames it to ``<dest>`` only once the byte count
(Content-Length) and, when given, the sha256 are right, so ``<dest>`` is never half written.
An interrupted download keeps its ``.part`` (plus a ``.part.json`` naming the URL and the
server's validators) and the next call resumes it with an HTTP ``Range`` request.
``fetch_model_tarball`` tries a zoo entry's URLs in order into the cache's ``downloads/``.

Only the standard library's urllib is used for HTTP(S); it honours the usual ``*_proxy``
environment variables. Image URLs go through ``fastseg.fetch`` instead, a different concern:
small bodies held in memory under one deadline and a byte cap, no proxies, no resume; a
tarball is hundreds of megabytes streamed to disk, resumed across runs, checked by sha256. Errors raised here are all
``DownloadError``s::

    DownloadError
    ├── UnreachableError   no answer at all: DNS failure, connection refused, timeout
    ├── HTTPStatusError    the server answered with an HTTP error status (e.g. 404)
    └── ChecksumError      the downloaded bytes do not have the expected sha256
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from tqdm import tqdm

from fastseg.errors import DownloadError
from fastseg.files import write_text_atomic
from fastseg.zoo import ModelSpec, downloads_dir

__all__ = [
    "ChecksumError",
    "FetchResult",
    "HTTPStatusError",
    "UnreachableError",
    "fetch",
    "fetch_model_tarball",
    "file_sha256",
    "recorded_sha256",
    "tarball_name",
]

USER_AGENT = "fastseg-download/1"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class UnreachableError(DownloadError):
    """The server could not be reached: DNS failure, connection refused or timed out."""


class ChecksumError(DownloadError):
    """The downloaded file's sha256 is not the expected one (nothing was kept)."""


class HTTPStatusError(DownloadError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FetchResult:
    """A completed download: where it is, its sha256 (hex), its size, and whether it resumed."""

    path: Path
    sha256: str
    bytes: int
    resumed: bool


def part_path(dest: Path) -> Path:
    """The in-progress file of ``dest``: ``<dest>.part``."""
    return dest.with_name(dest.name + ".part")


def _state_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def file_sha256(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """The sha256 (lowercase hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
) -> FetchResult:
    """Download ``url`` to ``dest``, resuming an earlier partial download of the same URL.

    Args:
        url: ``http://``, ``https://`` or ``file://`` URL.
        dest: final path; its parent is created. An existing ``dest`` is replaced.
        sha256: expected sha256 (hex, any case); ``None`` only records it.
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
        timeout: seconds for connecting and for each socket read.
        chunk_size: bytes per read.

    Returns:
        The final path, its sha256, its size and whether a ``.part`` was resumed.

    Raises:
        UnreachableError: DNS failure, connection refused or timeout before any answer.
        HTTPStatusError: an HTTP error status (e.g. 404).
        ChecksumError: the sha256 is not ``sha256`` (the ``.part`` is removed and ``dest``
            is not written).
        DownloadError: unsupported scheme, a missing ``file://`` source, or an interrupted
            transfer (the ``.part`` is kept; calling again resumes).
    """
    if chunk_size <= 0:
        raise DownloadError(f"chunk_size must be positive, got {chunk_size}.")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        size, resumed = _copy_file(url, dest, chunk_size=chunk_size)
    elif scheme in ("http", "https"):
        size, resumed = _download_http(
            url, dest, progress=progress, timeout=timeout, chunk_size=chunk_size
        )
    else:
        raise DownloadError(
            f"Cannot download {url!r}: unsupported URL scheme {scheme or '(none)'!r}; "
            "use http://, https:// or file://, or pass a local path with --from."
        )
    return _finish(url, dest, size=size, resumed=resumed, sha256=sha256, chunk_size=chunk_size)


def _finish(
    url: str, dest: Path, *, size: int, resumed: bool, sha256: str | None, chunk_size: int
) -> FetchResult:
    """Check the complete ``.part`` against ``sha256`` and rename it to ``dest``."""
    part = part_path(dest)
    actual = file_sha256(part, chunk_size=chunk_size)
    if sha256 is not None and actual != sha256.strip().lower():
        _discard(dest)
        raise ChecksumError(
            f"Checksum mismatch for {url}: expected sha256 {sha256.strip().lower()}, "
            f"got {actual} ({size} bytes); the download was deleted. Try again, or check "
            "the pinned checksum."
        )
    os.replace(part, dest)
    _state_path(dest).unlink(missing_ok=True)
    return FetchResult(path=dest, sha256=actual, bytes=size, resumed=resumed)


def _discard(dest: Path) -> None:
    part_path(dest).unlink(missing_ok=True)
    _state_path(dest).unlink(missing_ok=True)


def _copy_file(url: str, dest: Path, *, chunk_size: int) -> tuple[int, bool]:
    """Copy a ``file://`` source into ``<dest>.part`` (never resumed: a local copy is cheap)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"Cannot read {url!r}: file:// URLs must name a local path.")
    source = Path(urllib.request.url2pathname(parts.path))
    if not source.is_file():
        raise DownloadError(f"Cannot read {url!r}: {source} is not a file.")
    _discard(dest)
    part = part_path(dest)
    try:
        with source.open("rb") as src, part.open("wb") as out:
            shutil.copyfileobj(src, out, chunk_size)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"Cannot copy {source} to {part}: {exc}") from exc
    return part.stat().st_size, False


def _read_state(dest: Path) -> dict[str, str]:
    try:
        raw = json.loads(_state_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _write_state(dest: Path, url: str, headers: Message) -> None:
    """Record which URL (and which version of it) the ``.part`` holds, for a later resume."""
    state = {"url": url}
    for key in ("ETag", "Last-Modified"):
        if headers.get(key):
            state[key] = headers[key]
    write_text_atomic(_state_path(dest), json.dumps(state))


def _open(url: str, *, offset: int, validator: str | None, timeout: float) -> HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator  # the server sends 200 (all of it) if it changed
    request = urllib.request.Request(url, headers=headers)
    try:
        response: HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:
            raise  # handled by the caller
        raise HTTPStatusError(
            f"Cannot download {url}: HTTP {exc.code} {exc.reason}.", status=exc.code
        ) from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLError):  # reachable, but TLS failed: not "offline"
            raise DownloadError(
                f"Cannot download {url}: TLS error ({reason}). Check the system's CA "
                "certificates or proxy, or download the file elsewhere and use --from."
            ) from exc
        raise UnreachableError(f"Cannot reach {url}: {reason}.") from exc
    return response


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _content_length(response: HTTPResponse, offset: int) -> int | None:
    """The size the file will have once this response is appended at ``offset``, if known."""
    length = response.headers.get("Content-Length", "").strip()
    return offset + int(length) if length.isdigit() else None


def _download_http(
    url: str, dest: Path, *, progress: bool, timeout: float, chunk_size: int
) -> tuple[int, bool]:
    """Fill ``<dest>.part`` from ``url``; return (size, resumed). At most two requests."""
    part = part_path(dest)
    state = _read_state(dest)
    if part.exists() and state.get("url") != url:
        _discard(dest)  # a .part from another URL (or of unknown origin) cannot be continued
    for _attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        validator = state.get("ETag") or state.get("Last-Modified")
        try:
            response = _open(url, offset=offset, validator=validator, timeout=timeout)
        except urllib.error.HTTPError as exc:  # 416: our .part is not a prefix it can extend
            _, total = _parse_content_range(exc.headers.get("Content-Range"))
            if total is not None and total == offset:
                return offset, True  # the .part already holds the whole file
            _discard(dest)
            state = {}
            continue
        with response:
            if response.status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != offset:
                    _discard(dest)  # not the range we asked for: start again from zero
                    state = {}
                    continue
                if total is None:  # "bytes a-b/*": the length of this part is all we know
                    total = _content_length(response, offset)
                mode, resumed = "ab", True
            else:  # 200: the server ignored Range (or If-Range said it changed): start over
                offset, mode, resumed = 0, "wb", False
                total = _content_length(response, 0)
            _write_state(dest, url, response.headers)
            size = _stream(
                response,
                part,
                mode=mode,
                offset=offset,
                total=total,
                progress=progress,
                chunk_size=chunk_size,
                label=dest.name,
            )
        if total is not None and size != total:
            raise DownloadError(
                f"Download of {url} was interrupted at {size} of {total} bytes; "
                f"the partial file {part} is kept: run the same command again to resume."
            )
        return size, resumed
    raise DownloadError(
        f"Cannot download {url}: the server rejected resuming twice; delete {part} and retry."
    )


def _stream(
    response: HTTPResponse,
    part: Path,
    *,
    mode: str,
    offset: int,
    total: int | None,
    progress: bool,
    chunk_size: int,
    label: str,
) -> int:
    """Append the response body to ``part``; return the ``.part`` size (also when cut short)."""
    size = offset
    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=None if progress else True,  # None: only on a terminal
        leave=True,
    )
    with bar, part.open(mode) as out:
        try:
            while chunk := response.read(chunk_size):
                out.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
        except (OSError, HTTPException) as exc:  # connection reset, timeout mid-transfer
            out.flush()
            raise DownloadError(
                f"Download into {part} was interrupted at {size}"
                f"{f' of {total}' if total is not None else ''} bytes ({exc}); the partial "
                "file is kept: run the same command again to resume."
            ) from exc
        out.flush()
        os.fsync(out.fileno())
    return size


def tarball_name(spec: ModelSpec) -> str:
    """The official tarball's file name, ``<NAME>_infer.tar``."""
    return f"{spec.name}_infer.tar"


def _sha256_sidecar(tarball: Path) -> Path:
    return tarball.with_name(tarball.name + ".sha256")


def recorded_sha256(tarball: Path) -> str | None:
    """The sha256 recorded next to a downloaded tarball (``<file>.sha256``), if any."""
    try:
        text = _sha256_sidecar(tarball).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return text[0].lower() if text and re.fullmatch(r"[0-9a-fA-F]{64}", text[0]) else None


def _record_sha256(tarball: Path, digest: str) -> None:
    """Write ``<file>.sha256`` in ``sha256sum`` format (temp file then rename)."""
    write_text_atomic(_sha256_sidecar(tarball), f"{digest}  {tarball.name}\n")


def fetch_model_tarball(
    spec: ModelSpec, *, home: Path | None = None, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Download a zoo model's official inference tarball into ``<home>/downloads/``.

    Tries ``spec.inference_urls`` in order; an unreachable host, an HTTP error status or a
    checksum mismatch moves on to the next URL. An existing tarball is a cache hit (checked against
    ``spec.inference_sha256`` when pinned). The sha256 seen is written next to the tarball as
    ``<NAME>_infer.tar.sha256`` (read it back with ``recorded_sha256``).

    Args:
        spec: the zoo entry.
        home: cache home; ``fastseg.zoo.cache_home()`` when None.
        progress: show a progress bar (only on a terminal).
        timeout: seconds for connecting and for each socket read.

    Returns:
        The tarball's path.

    Raises:
        DownloadError: every URL failed; when none could be reached the one-line message
            says how to download elsewhere and convert with ``--from``. An interrupted
            transfer is raised at once (the ``.part`` is kept for the next call to resume),
            and so is a TLS failure.
    """
    dest = downloads_dir(home) / tarball_name(spec)
    pinned = spec.inference_sha256.lower() if spec.inference_sha256 else None
    if dest.is_file():
        # unpinned: trust the recorded sha256; pinned: re-hash, a stale file is fetched again
        seen = (pinned is None and recorded_sha256(dest)) or file_sha256(dest)
        if pinned is None or seen == pinned:
            if recorded_sha256(dest) != seen:
                _record_sha256(dest, seen)
            return dest
    if not spec.inference_urls:
        raise DownloadError(
            f"{spec.name} has no download URL in model_zoo.yaml; "
            f"run: fastseg convert {spec.name} --from ./{tarball_name(spec)}"
        )
    failures: list[tuple[str, DownloadError]] = []
    for url in spec.inference_urls:
        try:
            result = fetch(url, dest, sha256=pinned, progress=progress, timeout=timeout)
        except (UnreachableError, HTTPStatusError, ChecksumError) as exc:
            failures.append((url, exc))
            continue
        # any other DownloadError (an interrupted transfer) propagates: the .part is kept
        # and the next call resumes it from this same URL.
        _record_sha256(dest, result.sha256)
        return dest
    raise DownloadError(_failure_message(spec, failures, dest.parent))


def _failure_message(spec: ModelSpec, failures: list[tuple[str, DownloadError]], downloads: Path) -> str:
    """One line, the ways forward said once: a tarball fetched elsewhere (into the download
    cache, where predict, convert, tune and bench all look, or converted with ``--from``), or the
    reference build. The URLs are listed by ``fastseg models --format json`` (``inference_urls``).
    """
    name, tar = spec.name, tarball_name(spec)
    ways = (  # Python's spelling: the command line shows weights='reference' as --weights reference
        f"copy {tar} from a machine online into {downloads}/ (or 'fastseg convert {name} --from {tar}'), "
        "or use untrained reference weights (weights='reference')."
    )
    if all(isinstance(exc, UnreachableError) for _, exc in failures):
        return f"Cannot download {name} (offline?): {ways}"
    reasons = "; ".join(f"{url}: {_reason(exc)}" for url, exc in failures)
    return f"Cannot download {name} ({reasons}): {ways}"


def _reason(exc: DownloadError) -> str:
    if isinstance(exc, HTTPStatusError):
        return f"HTTP {exc.status}"
    if isinstance(exc, UnreachableError):
        return "unreachable"
    return "checksum mismatch"
