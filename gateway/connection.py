"""The gateway's side of its HTTP clients: the concurrency limits, and clients that leave.

A client that disconnects must cancel its Triton request, streamed or not:

* ``EventStream`` watches for ``http.disconnect`` while it streams and, when the client is
  gone, closes the body generator at once; closing it closes the ``AsyncLLMClient``
  stream inside, which cancels the gRPC call, and Triton's ``is_cancelled()`` stops the
  generation at its next step.
* ``until_disconnected`` races a non-streamed generation against the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from prometheus_client import Gauge
from starlette.responses import StreamingResponse

from .http_errors import APIError

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client went away before its response was ready."""


class Slot:
    """One generation's place under the limits; ``release`` may be called more than once."""

    def __init__(self, *releases: Callable[[], None]) -> None:
        self._releases: list[Callable[[], None]] | None = list(releases)

    def release(self) -> None:
        releases, self._releases = self._releases, None
        for release in releases or ():
            release()


class Limiter:
    """At most ``limit`` generations in flight (0: no limit); one more gets a 429 at once.

    No queue: Triton already queues and batches what it is given; the limit protects the
    gateway and Triton from a flood, and a client told 429 can retry (the OpenAI SDKs do).
    """

    def __init__(self, limit: int, gauge: Gauge | None = None) -> None:
        self.limit = limit
        self.active = 0
        self._gauge = gauge

    def acquire(self) -> Slot:
        """Take a slot.

        Raises:
            APIError: 429 when ``limit`` generations are already running.
        """
        if self.limit and self.active >= self.limit:
            raise APIError(
                429,
                f"this gateway is running its limit of {self.limit} concurrent requests; "
                "retry shortly",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        self.active += 1
        if self._gauge is not None:
            self._gauge.inc()
        return Slot(self._release)

    def _release(self) -> None:
        self.active -= 1
        if self._gauge is not None:
            self._gauge.dec()


class KeyLimiter:
    """At most ``limit`` generations in flight per API key (0: no limit), then 429.

    Keys are told apart by their index in the configured list (``KeyChecker.match``), so
    no key is held here.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: dict[int, int] = {}

    def acquire(self, key: int | None) -> Slot:
        """Take a slot for ``key`` (None, no key: nothing to count).

        Raises:
            APIError: 429 when this key already has ``limit`` generations running.
        """
        if not self.limit or key is None:
            return Slot()
        if self.active.get(key, 0) >= self.limit:
            raise APIError(
                429,
                f"this API key already has {self.limit} concurrent requests running, the "
                "most one key may have on this gateway; retry when one has finished",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        self.active[key] = self.active.get(key, 0) + 1
        return Slot(lambda: self._release(key))

    def _release(self, key: int) -> None:
        left = self.active[key] - 1
        if left:
            self.active[key] = left
        else:
            del self.active[key]


async def until_disconnected(receive: Callable[[], Awaitable[Any]], work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it.

    ``receive`` is the request's ASGI receive, after its body has been read.

    Raises:
        ClientDisconnected: the client left first (``work`` has been cancelled).
        Whatever ``work`` raises.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        raise ClientDisconnected("the client disconnected")
    return task.result()


async def _wait_for_disconnect(receive: Callable[[], Awaitable[Any]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class EventStream(StreamingResponse):
    """``text/event-stream`` from ``body``; closes ``body`` as soon as the client leaves.

    ``on_close`` runs once the response is over, however it ended.
    """

    media_type = "text/event-stream"

    def __init__(self, body: AsyncGenerator[bytes, None], on_close: Callable[[], None]) -> None:
        super().__init__(body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client left mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await _wait_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()  # runs the body's finally: cancels Triton's request
            self._on_close()
