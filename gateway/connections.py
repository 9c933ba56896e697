"""What the gateway accepts from the network: a cap on open connections, deadlines for a
request's header and body, and a cap on requests in flight, each separate.

uvicorn's own ``limit_concurrency`` counts open *connections* (idle and half-open ones
too) and answers 503 past it, and it never times out a connection that has sent half a
request header: anyone, with no key, could hold 256 sockets open and deny every client
(slowloris). So uvicorn gets no ``limit_concurrency`` here, and instead:

    connection cap     ``max_connections`` sockets; one more gets a 503 and is closed at
                       once (the cap guards file descriptors, never the requests)
    header deadline    a connection has ``header_timeout_s`` from when it opens (or from
                       its last response) to finish a request header, however slowly it
                       trickles bytes; then 408 and closed
    body deadline      a request has ``body_timeout_s`` from its header to its last byte
                       of body; then 408 (before any response) and closed
    requests in flight ``limit_concurrency`` HTTP requests being answered; one more gets
                       503 with Retry-After (only requests count, never connections)

The generations in flight have their own 429 limits in the app (``max_concurrent``, per
key). uvicorn's h11 protocol is subclassed for the first three (``guarded_protocol``);
the fourth is ASGI middleware (``RequestLimit``).
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .auth import presented_key

FD_HEADROOM = 64  # file descriptors kept for Triton connections, logs and the like


def _raw_response(status: str, body: str, retry_after: bool = False) -> bytes:
    data = body.encode()
    headers = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(data)}",
        "connection: close",
    ]
    if retry_after:
        headers.append("retry-after: 1")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data


TOO_MANY_CONNECTIONS = _raw_response(
    "503 Service Unavailable", "Too many open connections; retry shortly.\n", retry_after=True
)
HEADER_TIMEOUT = _raw_response("408 Request Timeout", "The request header took too long.\n")
BODY_TIMEOUT = _raw_response("408 Request Timeout", "The request body took too long.\n")


def usable_connections(wanted: int) -> int:
    """``wanted`` connections, or as many as this process's file descriptors allow (the
    soft limit is raised to the hard one first): past it ``accept`` fails for everyone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + FD_HEADROOM)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_HEADROOM))


def guarded_protocol(
    max_connections: int, header_timeout_s: float, body_timeout_s: float
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the connection cap and the two deadlines (0 turns the
    cap off; the deadlines are always on)."""

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _waiting_for: str = ""  # "header", "body" or "" (a response is being written)
        _seen_cycle: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if max_connections and len(self.connections) > max_connections:
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._arm("header")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.cycle is self._seen_cycle:
                self._arm("header")  # idle, or part-way through the next header
            self._track()

        def _track(self) -> None:
            """Move the deadline on: a new request's header is complete (the body clock
            starts while its body is still coming), or its body is complete."""
            if self.cycle is not None and self.cycle is not self._seen_cycle:
                self._seen_cycle = self.cycle
                if self.conn.their_state is h11.SEND_BODY:
                    self._arm("body")
                else:
                    self._disarm()
            elif self._waiting_for == "body" and self.conn.their_state is not h11.SEND_BODY:
                self._disarm()

        def _arm(self, phase: str) -> None:
            self._disarm()
            seconds = header_timeout_s if phase == "header" else body_timeout_s
            self._waiting_for = phase
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline, self._waiting_for = None, ""

        def _expired(self) -> None:
            phase = self._waiting_for
            self._deadline, self._waiting_for = None, ""
            if self.transport.is_closing():
                return
            if phase == "header":
                self.transport.write(HEADER_TIMEOUT)
            elif self.cycle is not None and not self.cycle.response_started:
                self.transport.write(BODY_TIMEOUT)
            self.transport.close()  # a request part-way through sees its client gone

    return GuardedH11Protocol


class RequestLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in flight (0: no limit); one more
    gets 503 with Retry-After. Idle or half-open connections hold no slot, and neither do
    ``EXEMPT`` paths (probes must answer while the gateway is busy) or, when the gateway
    has API keys, requests without a valid one (the app answers them 401 at once; they
    must not hold slots while trickling a body)."""

    EXEMPT = ("/health", "/metrics")

    def __init__(self, app: Any, limit: int, keys: Any = None) -> None:
        self.app = app
        self.limit = limit
        self.keys = keys  # a KeyChecker, or None: every request counts
        self.in_flight = 0

    def _counts(self, scope: Any) -> bool:
        if scope["type"] != "http" or not self.limit or scope.get("path") in self.EXEMPT:
            return False
        if self.keys is None or not self.keys.enabled:
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return bool(self.keys.allows(presented_key(headers)))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self._counts(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            body = b"Too many requests in flight; retry shortly.\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", b"1"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
