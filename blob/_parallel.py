"""Run a function over items in a thread pool, stopping at the first failure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")


def run_all(fn: Callable[[T], object], items: Iterable[T], workers: int, name: str) -> None:
    """Call ``fn`` on every item with ``workers`` threads; the first exception cancels the
    items not started yet, waits for the running ones, and is raised."""
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
