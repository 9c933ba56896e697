"""What every HTTP request gets before the routes: an id, a body-size cap, and a last-resort 500.

``RequestContextMiddleware`` (ASGI):

* gives the request an id: the client's ``X-Request-ID`` when it is sane (1-128 of
  ``A-Z a-z 0-9 . _ : -``), else a fresh one; it is in ``request.state.request_id``,
  in the ``X-Request-ID`` response header, and in every line the gateway logs about
  the request;
* answers 413 at once to a ``Content-Length`` over ``max_body_bytes``, and makes reading
  a body without one (chunked) raise the same 413 ``APIError`` once it passes the limit;
* turns any exception no handler took into a generic 500 naming the id (the traceback
  goes to the log, never to the client).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from .http_errors import APIError, internal, too_large

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("tritonkit.gateway")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new random one."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """See the module docstring."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_body_bytes:
            await _send_error(send_with_id, too_large(self.max_body_bytes))
            return
        received = 0

        async def counted_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise too_large(self.max_body_bytes)
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except Exception as exc:
            if started:  # too late for an error response: uvicorn closes the connection
                log.exception("request %s failed after its response started", request_id)
                raise
            error = internal(500, "internal gateway error", request_id, repr(exc))
            log.error("request %s: unexpected error", request_id, exc_info=exc)
            await _send_error(send_with_id, error)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses such a request before it gets here
    return None


async def _send_error(send: Any, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
