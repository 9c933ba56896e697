"""What both twins send and read over HTTP, without I/O: paths, bodies, the SSE framing.

``LLMClient`` drives these with ``httpx.Client`` and ``AsyncLLMClient`` with
``httpx.AsyncClient``: one HTTP library, one line parser for Triton's generate
extension (``/generate`` answers one JSON, ``/generate_stream`` sends server-sent
events), one reading of every admin reply.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ._base import EndCheck, chunk_from_json, sse_data
from .errors import ServerStreamError, Timeout, from_http
from .results import StreamChunk


def model_path(name: str, version: str = "") -> str:
    path = f"/v2/models/{quote(name, safe='')}"
    return f"{path}/versions/{quote(version, safe='')}" if version else path


def generate_path(model: str, stream: bool) -> str:
    return f"{model_path(model)}/{'generate_stream' if stream else 'generate'}"


class StreamReader:
    """Turns a generate response (its status, then its body or its SSE lines) into chunks.

    ``timeout`` bounds the whole stream (httpx's timeout bounds each read).
    """

    def __init__(self, url: str, stream: bool, timeout: float | None, choices: int = 1) -> None:
        self.url = url
        self.choices = choices  # n: the stream ends when every choice has finished
        self._finished: set[int] = set()
        self.stream = stream
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.done = False  # the final chunk was read: nothing to cancel
        self._check = EndCheck(url)

    def body(self, data: bytes) -> StreamChunk:
        """The one chunk of a non-streamed generate.

        Raises:
            ServerStreamError: the body is not JSON. InvalidRequest: it is Triton's error.
        """
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ServerStreamError(f"unreadable response from {self.url}: {exc}") from exc
        self.done = True
        return chunk_from_json(obj, self.url, is_final=True)

    def line(self, line: str) -> StreamChunk | None:
        """The chunk of one SSE line; None for other lines and anything after the final one.

        Raises:
            Timeout: the stream ran past the timeout. ServerStreamError: unreadable event.
            InvalidRequest / ModelNotFound: the event is Triton's error.
        """
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise Timeout(f"the stream from {self.url} ran past {self.timeout}s")
        obj = sse_data(line)
        if obj is None or self.done:
            return None
        chunk = chunk_from_json(obj, self.url, is_final=False)
        self._check.saw("finish_reason" in obj)
        if chunk.finish_reason:
            self._finished.add(chunk.index)
        self.done = len(self._finished) >= self.choices
        return dataclasses.replace(chunk, is_final=self.done) if self.done else chunk

    def end(self) -> StreamChunk | None:
        """After the last line: the empty final chunk when the model ended with an empty
        final response (Triton then sends no event for it).

        Raises:
            ServerStreamError: the stream closed without the finish reason that was due
                (``EndCheck``): cut short, not finished.
        """
        if self.done:
            return None
        if self._check.is_cut(None):
            raise self._check.error()
        self.done = True
        return StreamChunk(text="", is_final=True)


@dataclass(frozen=True)
class Call:
    """One admin request and how to read its reply (status, body)."""

    method: str
    path: str
    body: Any  # JSON, or None for a GET
    decode: Callable[[int, bytes, str], Any]  # (status, body, url) -> value


def _ok(status: int, _body: bytes, _url: str) -> bool:
    return status == 200


def _json(status: int, body: bytes, url: str) -> Any:
    if status >= 400:
        raise from_http(status, body, url)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ServerStreamError(f"unreadable reply from {url}: {body[:200]!r}") from exc


def _none(status: int, body: bytes, url: str) -> None:
    if status >= 400:
        raise from_http(status, body, url)


def admin_call(op: str, *args: Any) -> Call:
    """The HTTP request of an admin operation (the names of the client's methods)."""
    if op in ("is_live", "is_ready"):
        return Call("GET", f"/v2/health/{op[3:]}", None, _ok)
    if op == "is_model_ready":
        return Call("GET", f"{model_path(*args)}/ready", None, _ok)
    if op == "models":
        return Call("POST", "/v2/repository/index", {}, _json)
    if op == "model_metadata":
        return Call("GET", model_path(*args), None, _json)
    if op == "model_config":
        return Call("GET", f"{model_path(*args)}/config", None, _json)
    if op == "load_model":
        name, config = args
        body = {} if config is None else {"parameters": {"config": config}}
        return Call("POST", f"/v2/repository/models/{quote(name, safe='')}/load", body, _none)
    if op == "unload_model":
        name, unload_dependents = args
        body = {"parameters": {"unload_dependents": unload_dependents}}
        return Call("POST", f"/v2/repository/models/{quote(name, safe='')}/unload", body, _none)
    raise ValueError(f"unknown admin operation {op!r}")
