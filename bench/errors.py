"""Errors of ``tritonkit bench`` (defined in ``tritonkit.errors``, re-exported here).

    BenchError          base: a profiling run that could not be done
    ├── ToolNotFound    perf_analyzer or genai-perf missing or not starting (says what to install)
    └── ToolFailed      the tool ran and failed (its own last error lines, and where its log is)

A server that is down or a model it does not serve raise the client's errors
(``tritonkit.client.errors.ConnectionFailed`` / ``ModelNotFound``); bad arguments raise
``tritonkit.errors.UsageError``.
"""

from __future__ import annotations

from tritonkit.errors import BenchError, ToolFailed, ToolNotFound

__all__ = ["BenchError", "ToolFailed", "ToolNotFound"]
