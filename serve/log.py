"""The server's log: read from its stdout by a thread, kept, forwarded, and searched for errors.

Triton writes lines like ``E1129 10:39:34.655595 4895 model_lifecycle.cc:642] "failed to
load 'm' version 1: Internal: RuntimeError: ...\\n\\nAt:..."``. ``failure_reason`` picks the
line that explains a failed start, so ``ServerError`` can quote the server's own words.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO, TextIO

# Severity, date, time, thread, file:line] message
_LINE = re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+\s+[^\]\s]+\]\s*(.*)$")

# Printed on every machine without a GPU: never the reason a start failed.
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "CUDA driver")

# Most specific first: a model that failed to load, a port the server could not bind, ...
_PRIORITY = ("failed to load '", "failed to start", "error: ")

LogSink = Callable[[str], None] | TextIO


def parse_line(line: str) -> tuple[str, str]:
    """``(severity, message)`` of one log line; severity "" for lines without Triton's prefix.

    A quoted message (Triton 2.4x quotes them, with ``\\n`` escapes) is unquoted.
    """
    match = _LINE.match(line)
    if not match:
        return "", line.strip()
    severity, message = match.groups()
    message = message.strip()
    if len(message) >= 2 and message[0] == message[-1] == '"':
        try:
            message = json.loads(message)
        except ValueError:
            message = message[1:-1]
    return severity, message


def failure_reason(lines: Iterable[str]) -> str | None:
    """The one line of a server log that best explains why the server failed, or None.

    A model load failure wins over a bind failure, which wins over other error lines;
    only the first line of a multi-line message (a Python traceback) is kept.
    """
    errors: list[str] = []
    for line in lines:
        severity, message = parse_line(line)
        if not message or any(h in message for h in _HARMLESS):
            continue
        if severity == "E" or message.startswith("error:"):
            errors.append(message.splitlines()[0].strip())
    for needle in _PRIORITY:
        for message in errors:
            if needle in message:
                return message
    return errors[0] if errors else None


class ServerLog:
    """Reads a server's output on a thread: keeps the last lines, forwards and writes them.

    ``forward`` gets every line without its newline (a callable, or a text stream such as
    ``sys.stderr``); ``log_file`` gets a copy of the whole log.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        forward: LogSink | None = None,
        log_file: str | os.PathLike[str] | None = None,
        keep: int = 5000,  # lines kept in memory for failure messages and tests
    ) -> None:
        self._stream = stream
        self._forward = forward
        self._file = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115
        self._lines: deque[str] = deque(maxlen=keep)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tritonserver-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
                if self._file:
                    self._file.write(line + "\n")
                    self._file.flush()
                self._emit(line)
        finally:
            self._stream.close()  # here, not elsewhere: closing blocks while a read is pending
            if self._file:
                self._file.close()
            with self._cond:
                self._cond.notify_all()  # wake wait_for: no more lines will come

    def _emit(self, line: str) -> None:
        if self._forward is None:
            return
        try:
            if callable(self._forward):
                self._forward(line)
            else:
                self._forward.write(line + "\n")
                self._forward.flush()
        except (OSError, ValueError):  # a closed terminal must not kill the reader
            self._forward = None

    def lines(self) -> list[str]:
        """The lines read so far (the last ``keep`` of them)."""
        with self._cond:
            return list(self._lines)

    def failure_reason(self) -> str | None:
        """The line that best explains a failure (see ``failure_reason``)."""
        return failure_reason(self.lines())

    def wait_for(self, text: str, timeout: float = 10.0) -> str | None:
        """Block until a line containing ``text`` appears (or already has); None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return None
                self._cond.wait(left)

    def is_reading(self) -> bool:
        """Whether the output is still open (the server, or a child of it, is alive)."""
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader to reach the end of the output (the server has exited)."""
        self._thread.join(timeout)
