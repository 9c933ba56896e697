"""One test body for both client twins: ``AsyncLLMClient`` behind ``LLMClient``'s blocking
interface, so a test written against ``LLMClient`` runs unchanged against either.

    @pytest.fixture(params=TWINS)          # ("sync", "grpc"), ("async", "http"), ...
    def client(request, server): ...
        with open_twin(request.param, server) as c: yield c
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

from tritonkit.client import AsyncLLMClient, LLMClient

TWINS = [(kind, protocol) for kind in ("sync", "async") for protocol in ("grpc", "http")]
TWIN_IDS = [f"{kind}-{protocol}" for kind, protocol in TWINS]


class AsyncTwin:
    """An ``AsyncLLMClient`` driven from blocking code on its own event loop: coroutines
    are run to their end, async generators become generators (closing one closes the
    async one, which cancels the request as ``aclosing`` would)."""

    def __init__(self, client: AsyncLLMClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.isasyncgen(result):
                return self._iterate(result)
            if inspect.isawaitable(result):
                return self.loop.run_until_complete(result)
            return result

        return call

    def _iterate(self, agen: AsyncGenerator[Any, None]) -> Generator[Any, None, None]:
        try:
            while True:
                try:
                    yield self.loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.loop.run_until_complete(agen.aclose())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@contextlib.contextmanager
def open_twin(kind: str, url: str, protocol: str, **kwargs: Any) -> Iterator[Any]:
    """``LLMClient`` (kind "sync") or an ``AsyncTwin`` of ``AsyncLLMClient`` ("async")."""
    if kind == "sync":
        with LLMClient(url, protocol=protocol, **kwargs) as client:  # type: ignore[arg-type]
            yield client
        return
    twin = AsyncTwin(AsyncLLMClient(url, protocol=protocol, **kwargs))  # type: ignore[arg-type]
    try:
        yield twin
    finally:
        twin.close()
