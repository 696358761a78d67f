"""Fetch an image URL under one deadline for the whole download, not per socket read.

A per-read timeout lets a source that drips a byte every few seconds hold a worker thread for
as long as it likes (the request's client was answered long before). Here every socket
operation (connect, TLS, each read and write) gets only the time left before ``deadline``,
so the fetch ends by the deadline whatever the source does. httpcore (httpx's transport)
takes a network backend, which is where the deadline is applied; proxies from the
environment are never used.
"""

from __future__ import annotations

import ssl
import time
import typing

import httpcore

from fastseg.errors import InputError

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


def fetch_bytes(url: str, *, deadline: float, max_bytes: int) -> bytes:
    """GET ``url`` (no redirects, no proxies) and return its body, all before ``deadline``.

    Args:
        url: an http(s) URL whose host the caller already checked (allow-list, addresses).
        deadline: ``time.monotonic()`` value by which the whole download must end.
        max_bytes: refuse bodies larger than this (counted while reading).

    Raises:
        InputError: not HTTP 200, larger than ``max_bytes``, empty, a network or protocol
            error, or the deadline passed.
    """
    started = time.monotonic()
    try:
        with httpcore.ConnectionPool(network_backend=_DeadlineBackend(deadline), max_connections=1) as pool:
            with pool.stream("GET", url, headers=[(b"User-Agent", b"fastseg"), (b"Accept", b"image/*")]) as response:
                if response.status != 200:
                    raise InputError(f"fetching {url!r} answered HTTP {response.status} (redirects are not followed).")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_stream():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputError(f"the image at {url!r} is larger than {max_bytes} bytes.")
                    chunks.append(chunk)
    except httpcore.TimeoutException as exc:
        raise InputError(
            f"fetching {url!r} did not finish within {deadline - started:.1f}s "
            "(url_inputs.timeout_s or the request deadline); the source is too slow."
        ) from exc
    except _ERRORS as exc:
        raise InputError(f"cannot fetch {url!r}: {exc.__class__.__name__}: {exc}.") from exc
    data = b"".join(chunks)
    if not data:
        raise InputError(f"the resource at {url!r} is empty.")
    return data
