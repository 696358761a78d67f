"""PaddleX's failure body, and the checks made before a request body is read (API key,
Content-Length limit; a chunked body is counted as it streams, by the handler)."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping

import orjson
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

INFER_ENDPOINT = "/semantic-segmentation"


def new_log_id() -> str:
    return str(uuid.uuid4())


def error_response(
    status: int, message: str, *, retry_after: int | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """PaddleX's failure body: errorCode is the HTTP status."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = orjson.dumps({"logId": new_log_id(), "errorCode": status, "errorMsg": message})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class Guard:
    """Pure ASGI middleware for the inference endpoint, run before the body is read:
    API key (constant-time compare) and a Content-Length limit. A body without Content-Length
    (``Transfer-Encoding: chunked``) passes: ``InferenceHandler`` counts it as it streams."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self._app = app
        self._key = None if api_key is None else api_key.encode()
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != INFER_ENDPOINT or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        refusal: Response | None = None
        if self._key is not None:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
                refusal = error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'.")
                refusal.headers["WWW-Authenticate"] = "Bearer"
        if refusal is None:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self._max):
                refusal = error_response(
                    413,
                    f"request body of {length.decode(errors='replace')} bytes is over the limit of {self._max} bytes "
                    "(max_body_bytes).",
                )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)
