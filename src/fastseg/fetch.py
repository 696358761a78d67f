"""The one safe fetcher of an image URL, for ``predict``'s URL inputs and the HTTP service's.

Every fetch has a byte cap (counted while reading) and one deadline for the whole download,
not per socket read: a per-read timeout lets a source that drips a byte every few seconds hold
a thread for as long as it likes. Here every socket operation (connect, TLS, each read and
write) gets only the time left before the deadline, so the fetch ends by then whatever the
source does. httpcore (httpx's transport) takes a network backend, which is where the deadline
is applied; proxies from the environment are never used; redirects are followed only when the
caller allows them, each target checked again.

``check_url`` refuses what is not a plain http(s) URL (length, characters, scheme, host) before
any connection; ``check_addresses`` refuses hosts that resolve to loopback/private addresses
(the service's policy; a local ``predict`` may fetch from the user's own network).
Model tarballs are not fetched here: ``fastseg.download`` streams large files to disk with
resume and mirrors, a different concern.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import typing
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpcore

from fastseg.errors import InputError

MAX_URL_CHARS = 8192  # longer URLs are refused (browsers and servers stop near here too)
_REDIRECTS = (301, 302, 303, 307, 308)
_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError)


class DeadlineExceeded(httpcore.ReadTimeout):
    """The whole-fetch deadline passed before the next socket operation."""


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation is bounded by the time left before ``deadline``."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the fetch deadline has passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._left(timeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend with every stream bounded by ``deadline``."""

    def __init__(self, deadline: float) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the fetch deadline has passed")
        stream = self._inner.connect_tcp(host, port, left, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def is_url(text: str) -> bool:
    """True when ``text`` starts with ``http://`` or ``https://`` (any case)."""
    return text[:8].lower().startswith(("http://", "https://"))


def check_url(url: str, *, what: str = "URL", fix: str = "give a valid http(s) URL") -> tuple[str, int]:
    """``url``'s lower-case host and port, or an InputError saying what is wrong with it.

    ``what`` names the URL in messages (the service says ``'image' URL``); ``fix`` ends the
    message of a malformed one. urllib's ValueError for ``http://[x]/`` and the like, and the
    TypeError httpcore raises for a non-ASCII URL, never reach the caller.
    """
    shown = repr(url if len(url) <= 200 else url[:200] + "...")
    if len(url) > MAX_URL_CHARS:
        raise InputError(f"{what} has {len(url)} characters; at most {MAX_URL_CHARS} are accepted.")
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        raise InputError(f"{what} {shown} holds a space, a control or a non-ASCII character; percent-encode it (RFC 3986).")
    if not is_url(url):
        raise InputError(f"{what} {shown} is not an http(s) URL; {fix}.")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise InputError(f"{what} {shown} is malformed ({exc}); {fix}.") from exc
    if not host:
        raise InputError(f"{what} {shown} has no host.")
    return host, port


def check_addresses(host: str, port: int, *, allow_private: bool) -> None:
    """Resolve ``host`` and refuse non-global addresses (loopback, private, link-local, ...).

    Every resolved address must pass, so a name with one public and one private record is
    refused. (DNS may change between this check and the fetch; see docs/serving.md.)
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"cannot resolve URL host {host!r}: {exc}.") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global and not allow_private:
            raise InputError(
                f"URL host {host!r} resolves to {address}, a loopback/private/link-local/reserved "
                "address; refused (url_inputs.allow_private_addresses is false)."
            )


def fetch_bytes(
    url: str,
    *,
    deadline: float,
    max_bytes: int,
    timeout_hint: str = "",
    max_redirects: int = 0,
    check_redirect: Callable[[str], object] | None = None,
) -> bytes:
    """GET ``url`` (no proxies) and return its body, all before ``deadline``.

    Args:
        url: an http(s) URL the caller already checked (``check_url``, its own host policy).
        deadline: ``time.monotonic()`` value by which the whole download, redirects included, must end.
        max_bytes: refuse bodies larger than this (counted while reading).
        timeout_hint: what sets the deadline, in the caller's words (added to the timeout message).
        max_redirects: redirects to follow (0: an HTTP 3xx is refused).
        check_redirect: called with each redirect target before it is fetched; raises to refuse it.

    Raises:
        InputError: not HTTP 200, larger than ``max_bytes``, empty, a network or protocol
            error, too many redirects, or the deadline passed.
    """
    started = time.monotonic()
    for _ in range(max_redirects + 1):
        try:
            status, location, data = _get(url, deadline=deadline, max_bytes=max_bytes)
        except httpcore.TimeoutException as exc:
            hint = f" ({timeout_hint})" if timeout_hint else ""
            raise InputError(
                f"fetching {url!r} did not finish within {deadline - started:.1f}s{hint}; the source is too slow."
            ) from exc
        except _ERRORS as exc:
            raise InputError(f"cannot fetch {url!r}: {exc.__class__.__name__}: {exc}.") from exc
        if status == 200:
            if not data:
                raise InputError(f"the resource at {url!r} is empty.")
            return data
        if status not in _REDIRECTS or not location or not max_redirects:
            followed = "" if max_redirects else " (redirects are not followed)"
            raise InputError(f"fetching {url!r} answered HTTP {status}{followed}.")
        url = urljoin(url, location)
        if check_redirect is not None:
            check_redirect(url)
    raise InputError(f"fetching stopped after {max_redirects} redirects (last: {url!r}).")


def _get(url: str, *, deadline: float, max_bytes: int) -> tuple[int, str, bytes]:
    """One GET: (status, Location header, body); the body is read only for a 200."""
    with httpcore.ConnectionPool(network_backend=_DeadlineBackend(deadline), max_connections=1) as pool:
        with pool.stream("GET", url, headers=[(b"User-Agent", b"fastseg"), (b"Accept", b"image/*")]) as response:
            location = next((v.decode("latin-1") for k, v in response.headers if k.lower() == b"location"), "")
            if response.status != 200:
                return response.status, location, b""
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_stream():
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"the image at {url!r} is larger than {max_bytes} bytes.")
                chunks.append(chunk)
    return 200, "", b"".join(chunks)
