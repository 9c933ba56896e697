"""Streaming load for version-switch tests: threads send the same greedy request in a loop
and keep every outcome (its text, or the exception) with its start and end times."""

from __future__ import annotations

import threading
import time
from typing import Any

from tritonkit.client import LLMClient


class Load:
    """Threads streaming the same request in a loop; every outcome is kept with its times."""

    def __init__(
        self, url: str, prompt: str, params: dict[str, Any], threads: int, model: str = "llm"
    ) -> None:
        self.url, self.prompt, self.params, self.model = url, prompt, params, model
        self.results: list[tuple[float, float, str | BaseException]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def _loop(self) -> None:
        with LLMClient(self.url, model=self.model, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                outcome: str | BaseException
                try:
                    pieces: list[str] = []
                    client.generate(self.prompt, on_text=pieces.append, **self.params)
                    outcome = "".join(pieces)
                except Exception as exc:
                    outcome = exc
                with self._lock:
                    self.results.append((started, time.monotonic(), outcome))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def wait_for(
        self, text: str, started_after: float, count: int = 4, timeout: float = 60
    ) -> None:
        """Until ``count`` responses that started after ``started_after`` read ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                n = sum(1 for s, _, o in self.results if s > started_after and o == text)
            if n >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"no {count} responses of the expected version within {timeout}s")

    def first_text(self, started_after: float, timeout: float = 180) -> str:
        """The text of the first answer of a request started after ``started_after``.

        Raises:
            AssertionError: none came within ``timeout`` seconds, or it was an error.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = [o for s, _, o in self.results if s > started_after]
            if done:
                assert isinstance(done[0], str), done[0]
                return done[0]
            time.sleep(0.05)
        raise AssertionError(f"no answer started after {started_after} within {timeout}s")
