"""The gateway's own Prometheus metrics (``GET /metrics``), in a registry per app.

    tritonkit_gateway_requests_total{path, status}       every HTTP request, by route
    tritonkit_gateway_request_duration_seconds{path}     until the last byte (streams included)
    tritonkit_gateway_time_to_first_token_seconds{kind}  request received -> first text sent
    tritonkit_gateway_prompt_tokens_total                the model's counts, summed
    tritonkit_gateway_completion_tokens_total
    tritonkit_gateway_in_flight_requests                 generations running now
    tritonkit_gateway_client_disconnects_total           generations cancelled by a client leaving
    tritonkit_gateway_replica_up{replica}                1 while a Triton replica takes requests
    tritonkit_gateway_replica_in_flight_requests{replica}  its generations running now
    tritonkit_gateway_replica_requests_total{replica}    generations started there (retries too)
    tritonkit_gateway_replica_failures_total{replica}    of those, failed by the replica's fault

Triton's own metrics (``tritonkit_*`` of the entry model) stay on Triton's metrics port.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """The counters above, registered in their own ``CollectorRegistry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tritonkit_gateway_requests", "HTTP requests", ["path", "status"], registry=r
        )
        self.duration = Histogram(
            "tritonkit_gateway_request_duration_seconds",
            "Time to the last byte of the response",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tritonkit_gateway_time_to_first_token_seconds",
            "Request received to first text sent",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tritonkit_gateway_prompt_tokens", "Prompt tokens (the model's count)", registry=r
        )
        self.completion_tokens = Counter(
            "tritonkit_gateway_completion_tokens",
            "Generated tokens (the model's count)",
            registry=r,
        )
        self.in_flight = Gauge(
            "tritonkit_gateway_in_flight_requests", "Generations running now", registry=r
        )
        self.disconnects = Counter(
            "tritonkit_gateway_client_disconnects",
            "Generations cancelled because the client left",
            registry=r,
        )

        self.replica_up = Gauge(
            "tritonkit_gateway_replica_up",
            "1 while the Triton replica takes new requests, 0 while it is down",
            ["replica"],
            registry=r,
        )
        self.replica_in_flight = Gauge(
            "tritonkit_gateway_replica_in_flight_requests",
            "Generations running on the Triton replica",
            ["replica"],
            registry=r,
        )
        self.replica_requests = Counter(
            "tritonkit_gateway_replica_requests",
            "Generations started on the Triton replica (each retry counts)",
            ["replica"],
            registry=r,
        )
        self.replica_failures = Counter(
            "tritonkit_gateway_replica_failures",
            "Generations that failed on the Triton replica: unreachable, broken stream, timeout",
            ["replica"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by route and status, and times it."""

    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route(scope["path"])
        status = 500  # what the client sees if the app raises before answering
        start = time.perf_counter()

        async def send_and_record(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.duration.labels(path).observe(time.perf_counter() - start)


def _route(path: str) -> str:
    """The route label: known paths as is, one model's card as a template, else "other"."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"  # never the raw path: a scanner must not grow the label set
