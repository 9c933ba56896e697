"""Custom metrics gathered in memory and flushed by a thread.

Each update of a Triton custom metric is an IPC round trip to the server (profiled:
four per decode step took a quarter of the loop), so updates are added up here and a
thread flushes them every ``flush_s`` seconds. The metric objects are made by a
``factory(name, description, kind)`` that returns something with ``increment(value)``
and ``set(value)``: Triton's ``pb_utils.MetricFamily(...).Metric(labels=...)`` inside
the server, anything with those two methods in a test.

Pure: standard library only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

COUNTERS: dict[str, tuple[str, str]] = {
    "requests": ("tritonkit_requests_total", "Requests accepted"),
    "failures": ("tritonkit_request_failures_total", "Requests rejected"),
    "cancelled": ("tritonkit_cancelled_requests_total", "Requests cancelled"),
    "prompt_tokens": ("tritonkit_prompt_tokens_total", "Prompt tokens"),
    "generated": ("tritonkit_generated_tokens_total", "Generated tokens"),
    "ttft_sum": ("tritonkit_time_to_first_token_seconds_sum", "Sum of time to first token"),
    "ttft_count": ("tritonkit_time_to_first_token_seconds_count", "Requests with a token"),
    "itl_sum": ("tritonkit_inter_token_latency_seconds_sum", "Sum of inter-token latencies"),
    "itl_count": ("tritonkit_inter_token_latency_seconds_count", "Inter-token intervals"),
    "steps": ("tritonkit_decode_steps_total", "Batched decode steps"),
    "rows": ("tritonkit_decode_rows_total", "Sequences advanced by decode steps (sum)"),
    "prefill_tokens": ("tritonkit_prefill_tokens_total", "Prompt tokens prefilled in chunks"),
    "prefix_hits": ("tritonkit_prefix_cache_hits_total", "Requests that reused a kept prefix"),
    "prefix_misses": ("tritonkit_prefix_cache_misses_total", "Requests prefilled from nothing"),
    "prefix_evictions": ("tritonkit_prefix_cache_evictions_total", "Kept prefixes overwritten"),
    "cached_tokens": ("tritonkit_prefix_cached_tokens_total", "Prompt tokens not prefilled"),
}
GAUGES: dict[str, tuple[str, str]] = {
    "batch": ("tritonkit_running_batch_size", "Sequences in the running batch"),
    "waiting": ("tritonkit_waiting_requests", "Requests waiting for a row or being prefilled"),
    # 1 once the scheduler gave up: Triton still reports the model ready, so probes
    # (`tritonkit probe`) and the gateway read this instead.
    "broken": ("tritonkit_engine_broken", "1 when the model instance cannot generate any more"),
    "kept_rows": ("tritonkit_prefix_cache_kept_rows", "Free KV rows holding a kept prefix"),
}
ENGINE_BROKEN_METRIC = GAUGES["broken"][0]

MetricFactory = Callable[[str, str, str], Any]  # (name, description, "counter"|"gauge")


class BufferedMetrics:
    """``add`` to counters and ``set`` gauges from any thread; a thread flushes them."""

    def __init__(self, factory: MetricFactory, flush_s: float = 0.25) -> None:
        self._metrics: dict[str, Any] = {}
        for kind, table in (("counter", COUNTERS), ("gauge", GAUGES)):
            for key, (name, description) in table.items():
                self._metrics[key] = factory(name, description, kind)
        self._lock = threading.Lock()
        self._deltas: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self._flush_s = flush_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritonkit-metrics", daemon=True)
        self._thread.start()

    def add(self, key: str, value: float = 1.0) -> None:
        """Increment counter ``key`` by ``value`` (flushed later)."""
        with self._lock:
            self._deltas[key] = self._deltas.get(key, 0.0) + value

    def set(self, key: str, value: float) -> None:
        """Set gauge ``key`` (flushed later)."""
        with self._lock:
            self._gauges[key] = value

    def flush(self) -> None:
        """Send what was gathered: one update per metric that changed."""
        with self._lock:
            deltas, gauges = self._deltas, self._gauges
            self._deltas, self._gauges = {}, {}
        for key, value in deltas.items():
            self._metrics[key].increment(value)
        for key, value in gauges.items():
            self._metrics[key].set(value)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the thread and flush the rest."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
