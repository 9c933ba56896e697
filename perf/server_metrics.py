"""The server's side of a run: Triton's Prometheus counters read before and after.

Triton's own ``nv_inference_*`` counters give, per model, the successful requests and
the time they spent queued in Triton's scheduler and in the model's ``execute``
(compute input / infer / output). The entry model hands each request to its own
generation loop from ``execute``, so the generation itself shows in tritonkit's
counters: the server-side time to first token (waiting for a batch slot plus prefill),
the inter-token latency, tokens, and the decode steps with their batch rows.

The counters cover everything the server did between the two reads, warm-up
requests included.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from tritonkit.errors import BenchError

Samples = dict[tuple[str, str], float]  # (metric name, model label) -> value, summed over versions

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_MODEL = re.compile(r'model="([^"]*)"')


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition -> {(name, model): value}, summed over the other labels."""
    samples: Samples = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        model = _MODEL.search(labels or "")
        key = (name, model.group(1) if model else "")
        try:
            samples[key] = samples.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return samples


def scrape(metrics_url: str, timeout: float = 10.0) -> Samples:
    """Read ``http://METRICS_URL/metrics`` (``metrics_url`` is ``host:port`` or a full URL).

    Raises:
        BenchError: the endpoint does not answer.
    """
    url = metrics_url if "://" in metrics_url else f"http://{metrics_url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metrics(response.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(
            f"cannot read Triton's metrics at {url} ({exc}); pass --metrics-url HOST:PORT "
            "(the server's --metrics-port, 8002 by default)"
        ) from exc


@dataclass
class ServerFigures:
    """Deltas of the server's counters over one run, per request where it says so."""

    requests: int  # nv_inference_request_success
    failures: int  # nv_inference_request_failure (all reasons)
    queue_ms: float  # per request: waiting in Triton's scheduler before execute
    compute_input_ms: float  # per request
    compute_infer_ms: float  # per request: the model's execute()
    compute_output_ms: float  # per request
    server_ttft_ms: float | None  # tritonkit: submit -> first token (slot wait + prefill)
    server_itl_ms: float | None  # tritonkit: mean time between two tokens of a sequence
    generated_tokens: int | None  # tritonkit_generated_tokens_total
    prompt_tokens: int | None  # tritonkit_prompt_tokens_total
    mean_decode_batch: float | None  # decode rows / decode steps: sequences per step

    @property
    def compute_ms(self) -> float:
        return self.compute_input_ms + self.compute_infer_ms + self.compute_output_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compute_ms": self.compute_ms}


def server_figures(before: Samples, after: Samples, model: str) -> ServerFigures:
    """What the server did for ``model`` between two scrapes."""

    def delta(name: str) -> float:
        return after.get((name, model), 0.0) - before.get((name, model), 0.0)

    def has(name: str) -> bool:
        return (name, model) in after

    requests = delta("nv_inference_request_success")
    per = max(requests, 1.0)

    def ratio(num: str, den: str, scale: float = 1e3) -> float | None:
        d = delta(den)
        return delta(num) * scale / d if has(num) and d > 0 else None

    return ServerFigures(
        requests=int(requests),
        failures=int(delta("nv_inference_request_failure")),
        queue_ms=delta("nv_inference_queue_duration_us") / 1e3 / per,
        compute_input_ms=delta("nv_inference_compute_input_duration_us") / 1e3 / per,
        compute_infer_ms=delta("nv_inference_compute_infer_duration_us") / 1e3 / per,
        compute_output_ms=delta("nv_inference_compute_output_duration_us") / 1e3 / per,
        server_ttft_ms=ratio(
            "tritonkit_time_to_first_token_seconds_sum",
            "tritonkit_time_to_first_token_seconds_count",
        ),
        server_itl_ms=ratio(
            "tritonkit_inter_token_latency_seconds_sum",
            "tritonkit_inter_token_latency_seconds_count",
        ),
        generated_tokens=int(delta("tritonkit_generated_tokens_total"))
        if has("tritonkit_generated_tokens_total")
        else None,
        prompt_tokens=int(delta("tritonkit_prompt_tokens_total"))
        if has("tritonkit_prompt_tokens_total")
        else None,
        mean_decode_batch=ratio("tritonkit_decode_rows_total", "tritonkit_decode_steps_total", 1),
    )
