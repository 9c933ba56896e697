"""Errors of ``tritonkit bench``, under ``tritonkit.errors.TritonkitError``.

    BenchError          base: a profiling run that could not be done
    ├── ToolNotFound    perf_analyzer or genai-perf missing or not starting (says what to install)
    └── ToolFailed      the tool ran and failed (its own last error lines, and where its log is)

A server that is down or a model it does not serve raise the client's errors
(``tritonkit.client.errors.ConnectionFailed`` / ``ModelNotFound``); bad arguments raise
``tritonkit.errors.UsageError``.
"""

from __future__ import annotations

from tritonkit.errors import TritonkitError


class BenchError(TritonkitError):
    """A profiling run that could not be done."""


class ToolNotFound(BenchError):
    """perf_analyzer or genai-perf is not installed, or cannot start here."""


class ToolFailed(BenchError):
    """perf_analyzer or genai-perf ran and exited with an error."""
