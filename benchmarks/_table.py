"""Small helpers shared by the benchmark scripts: timing medians and plain tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tritonkit.table import render


def median_seconds(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table for the README: the first column left-aligned, the figures right."""
    return render(headers, rows, align="l" + "r" * (len(headers) - 1), markdown=True)


def smollm2_export(given: Path | None, work: Path) -> Path:
    """``given`` (an existing SmolLM2 export, ``--export``), else SmolLM2 exported into
    ``work`` now (about a minute: the wheel's GGUF, verified)."""
    if given is not None:
        return given
    from tritonkit.export import main_export

    return main_export("smollm2", work / "export").output
