"""Running the app on uvicorn with connection-level limits the ASGI app cannot set itself.

uvicorn (h11) starts no timer until a first response is sent, so a client that sends its
request line and headers at 1 byte/s held a connection for ever; and every connection was
accepted. ``LimitedH11Protocol`` adds two limits:

- ``header_timeout_s``: the request line and headers must arrive within this from the
  connection's start (and from the end of the previous response on a kept-alive connection);
  otherwise the connection is closed.
- ``max_connections``: a connection over the limit is answered 503 with Retry-After in
  PaddleX's body and closed at once, before a byte of its request is read.
"""

from __future__ import annotations

import asyncio
import copy
from functools import partial
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from fastseg.serving.config import ServingConfig
from fastseg.serving.guard import error_response


def _busy_answer(retry_after_s: int) -> bytes:
    """The raw HTTP 503 a connection over ``max_connections`` gets."""
    response = error_response(503, "too many open connections (max_connections); retry later.", retry_after=retry_after_s)
    head = [b"HTTP/1.1 503 Service Unavailable"]
    head += [k + b": " + v for k, v in response.raw_headers]
    head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a cap on open connections."""

    def __init__(self, *args: Any, header_timeout_s: float, max_connections: int, retry_after_s: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._max_connections = max_connections
        self._retry_after_s = retry_after_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            transport.write(_busy_answer(self._retry_after_s))
            transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(
    app: FastAPI, config: ServingConfig, *, host: str, port: int, log_level: str = "info", with_fastseg_logs: bool = False
) -> uvicorn.Config:
    """A ``uvicorn.Config`` for ``app`` with ``config``'s connection limits and header deadline;
    ``with_fastseg_logs``: fastseg's loggers print at ``log_level`` too (the command's own process)."""
    protocol = partial(
        LimitedH11Protocol,
        header_timeout_s=config.header_timeout_s,
        max_connections=config.max_connections,
        retry_after_s=config.retry_after_s,
    )
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,  # type: ignore[arg-type]
                          log_config=log_config(log_level) if with_fastseg_logs else LOGGING_CONFIG)


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging set-up plus fastseg's own loggers at ``log_level`` through uvicorn's
    console handler: without a handler Python drops fastseg's INFO lines (client hang-ups,
    cancelled batches) whatever ``--log-level`` says."""
    from uvicorn.config import LOG_LEVELS

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["fastseg"] = {"handlers": ["default"], "level": LOG_LEVELS[log_level.lower()]}
    return config


def run_server(app: FastAPI, config: ServingConfig, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (what ``fastseg serve`` runs)."""
    uvicorn.Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level, with_fastseg_logs=True)).run()
