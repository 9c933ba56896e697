"""Responses leave through their own thread: the decode loop never waits for a send.

A send is an IPC round trip to the Triton server; made from the decode loop, it would
stall every running stream (measured: streaming 2x faster with this thread). Pieces
that queue up while the responder is behind are merged per request (``coalesce``), so
under load each request gets fewer, longer responses instead of falling further behind.

Pure: standard library only; ``send(key, output)`` is whatever delivers one response.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from .generation import Output, coalesce


class Responder:
    """``put(key, output)`` from any thread; ``send`` runs on the responder thread."""

    def __init__(
        self,
        send: Callable[[Any, Output], None],
        on_error: Callable[[Exception], None] = lambda exc: None,
    ) -> None:
        self._send = send
        self._on_error = on_error  # a failed send (a vanished client) is reported, not raised
        self._queue: queue.Queue[tuple[Any, Output] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tritonkit-responder")
        self._thread.start()

    def put(self, key: Any, output: Output) -> None:
        """Queue ``output`` for the request ``key`` (its response sender)."""
        self._queue.put((key, output))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while True:  # take whatever else waits, to merge each request's pieces
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in items:
                stopping = True
            for key, output in coalesce([i for i in items if i is not None]):
                try:
                    self._send(key, output)
                except Exception as exc:  # a vanished client must not stop the responder
                    self._on_error(exc)
