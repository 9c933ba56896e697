"""The client's errors (defined in ``tritonkit.errors``) and the mapping onto them.

    ClientError                  base: talking to a running Triton server failed
    ├── ConnectionFailed         the server is down or unreachable (refused, DNS, TLS)
    │   └── APIRestricted        the server restricts this API to callers with its admin key
    ├── Timeout                  no answer within the client's ``timeout``
    ├── ModelNotFound            the server has no such model, or it is not loaded
    ├── InvalidRequest           the server or the model rejected the request (its message verbatim)
    └── ServerStreamError        a response stream broke off or could not be read

gRPC (``grpc.RpcError``, sync and aio alike), httpx and Triton's own error responses are
mapped here, at the boundary, to the most specific class, and chained
(``raise mapped from exc``): both twins raise the same class for the same failure.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import httpx

from tritonkit.core.interface import (
    ERROR_ENGINE_FAILED,
    ERROR_SERVER_BUSY,
    error_code,
)
from tritonkit.errors import (
    APIRestricted,
    ClientError,
    ConnectionFailed,
    EngineFailed,
    InvalidRequest,
    ModelNotFound,
    ServerBusy,
    ServerStreamError,
    Timeout,
)

__all__ = [
    "APIRestricted",
    "ClientError",
    "ConnectionFailed",
    "EngineFailed",
    "InvalidRequest",
    "ModelNotFound",
    "ServerBusy",
    "ServerStreamError",
    "Timeout",
    "error_message",
    "from_grpc",
    "from_http",
    "from_httpx",
    "from_os_error",
    "from_triton",
]


# Triton's words for a model it does not serve, over every protocol: at the start of its
# message (after a transport's "[StatusCode.X]"), never anywhere in it, since a model's
# error may quote what the request sent (a stop word "unknown model", say).
_NOT_FOUND = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:Request for )?unknown model\b|^[^:]*has no available versions",
    re.I,
)

# gRPC's own words for a connection that failed, and Triton's for a server going away.
# Triton also answers UNAVAILABLE (HTTP 503) when it refuses an operation (a load without
# explicit model control): that is the server's answer, an InvalidRequest.
_UNAVAILABLE = re.compile(
    r"failed to connect|connection (refused|reset)|socket closed|dns resolution"
    r"|end of tcp stream|broken pipe|goaway|keepalive|no route to host"
    r"|stopping|shutting down|exiting|not ready|unavailable",
    re.I,
)

# Triton's refusal of a restricted API (--grpc-restricted-protocol / --http-restricted-api).
_RESTRICTED = re.compile(r"(protocol|API) is restricted", re.I)

# asyncio's is its own class before Python 3.11.
_TIMEOUTS = (socket.timeout, TimeoutError, asyncio.TimeoutError)

_GRPC_CODES: dict[str, type[ClientError]] = {
    "UNAVAILABLE": ConnectionFailed,
    "DEADLINE_EXCEEDED": Timeout,
    "NOT_FOUND": ModelNotFound,
    "CANCELLED": ServerStreamError,
    "INTERNAL": InvalidRequest,
}


def from_triton(status: object, message: str, url: str) -> ClientError:
    """Map a tritonclient / gRPC status and message to a ``ClientError``.

    ``status`` is a gRPC code ("StatusCode.NOT_FOUND", a ``grpc.StatusCode``), an HTTP
    status (404), or None for an error response inside a stream.
    """
    code = str(status or "").rsplit(".", 1)[-1].upper()
    coded = error_code(message)  # the entry model's own codes, never the request's words
    if coded == ERROR_SERVER_BUSY:
        return ServerBusy(message)
    if coded == ERROR_ENGINE_FAILED:
        return EngineFailed(message)
    if _RESTRICTED.search(message):
        return APIRestricted(f"{url} refused the call: {_first_line(message)}")
    if code.isdigit():
        return from_http(int(code), message, url)
    cls = _GRPC_CODES.get(code)
    if cls is ConnectionFailed and not _UNAVAILABLE.search(message):
        cls = InvalidRequest
    if cls is ConnectionFailed:
        return ConnectionFailed(
            f"cannot reach Triton at {url} (is it running there?): {_first_line(message)}"
        )
    if cls is Timeout:
        return Timeout(f"no answer from {url} within the timeout: {_first_line(message)}")
    if cls is None or cls is InvalidRequest:
        cls = ModelNotFound if _NOT_FOUND.match(message) else InvalidRequest
    return cls(message)


def from_grpc(exc: Any, url: str) -> ClientError:
    """Map a ``grpc.RpcError`` (a failed call of either the sync or the aio channel)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    return from_triton(code, details or str(exc), url)


def from_httpx(exc: httpx.HTTPError, url: str, *, reading: bool = False) -> ClientError:
    """Map an httpx failure; ``reading``: it broke a response that had begun to arrive."""
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"no answer from {url} within the timeout")
    if reading:
        return ServerStreamError(f"the response from {url} broke off: {_first_line(str(exc))}")
    return ConnectionFailed(
        f"cannot reach Triton at {url} (is it running there?): {_first_line(str(exc))}"
    )


def from_http(status: int, body: str | bytes, url: str) -> ClientError:
    """Map an HTTP error status and body (``{"error": ...}``, or an SSE ``data:`` line)."""
    triton = _triton_error(body)  # None: not Triton's JSON (a proxy, nothing behind it)
    message = triton or error_message(body) or f"HTTP {status} from {url}"
    coded = error_code(message)
    if coded == ERROR_SERVER_BUSY:
        return ServerBusy(message)
    if coded == ERROR_ENGINE_FAILED:
        return EngineFailed(message)
    if _RESTRICTED.search(message):
        return APIRestricted(f"{url} refused the call: {_first_line(message)}")
    if status == 404 or _NOT_FOUND.match(message):
        return ModelNotFound(message)
    if status in (502, 503, 504) and (triton is None or _UNAVAILABLE.search(message)):
        return ConnectionFailed(f"Triton at {url} is unavailable (HTTP {status}): {message}")
    return InvalidRequest(message)


def from_os_error(exc: BaseException, url: str) -> ClientError:
    """Map a socket-level failure (refused, reset, timed out, TLS) to a ``ClientError``."""
    if isinstance(exc, _TIMEOUTS):
        return Timeout(f"no answer from {url} within the timeout")
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, _TIMEOUTS):
        return Timeout(f"no answer from {url} within the timeout")
    return ConnectionFailed(f"cannot reach Triton at {url} (is it running there?): {reason}")


def error_message(body: str | bytes) -> str | None:
    """The ``error`` field of a Triton error body, plain JSON or SSE ``data: {...}``; else
    the body's text (None when empty)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return _triton_error(text) or text.strip() or None


def _triton_error(body: str | bytes) -> str | None:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for line in text.splitlines() or [text]:
        line = line.strip()
        if line.startswith("data:"):
            line = line[5:].strip()
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "error" in obj:
            return str(obj["error"])
    return None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "no details"
