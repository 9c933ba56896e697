"""Progress for long steps: one tqdm bar of named stages, on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def stages(total: int, desc: str, enabled: bool = True) -> Iterator[Any]:
    """A callable ``say(message)`` that advances one stage and shows ``message``."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        disable=None if enabled else True,  # None: off when stderr is not a terminal
        bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}| {elapsed} {postfix}",
    )
    first = [True]

    def say(message: str) -> None:
        if not first[0]:
            bar.update(1)
        first[0] = False
        bar.set_postfix_str(message)

    try:
        yield say
        bar.update((bar.total or 0) - bar.n)
    finally:
        bar.close()
