"""End generation at the first stop string, which may arrive split across pieces.

Streamed text that could still turn into a stop string is held back: after "Hello\\nUs"
with stop "\\nUser:", "\\nUs" waits until the next piece either completes the match
(generation stops, the stop string is not emitted) or rules it out (the text is released).

Runs inside the Triton container: standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Filter one request's streamed text through its stop strings.

    Raises ValueError (from ``__init__``) on an empty stop string, which would match
    everywhere.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        if any(not s for s in stop):
            raise ValueError(f"stop strings must be non-empty, got {list(stop)!r}")
        self.stop = list(stop)
        self.held = ""  # tail that is a prefix of some stop string
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Add a piece; returns (text safe to emit now, whether a stop string matched).

        After a match the text before it is returned and every later call returns ("", True).
        """
        if self.stopped:
            return "", True
        if not self.stop:
            return text, False
        buf = self.held + text
        # A match cannot start in text already emitted: its start would have been held.
        hits = [i for i in (buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.held, self.stopped = "", True
            return buf[: min(hits)], True
        keep = max(_overlap(buf, s) for s in self.stop)
        self.held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The held-back tail, released when generation ends without a match."""
        held, self.held = self.held, ""
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of ``stop``."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
