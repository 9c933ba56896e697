"""Figures from perf_analyzer's per-request profile export (genai-perf writes the same file).

Each request in ``profile_export.json`` carries its start time, the arrival time of
every streamed response, and the response tensors. Token counts are the server's own
``num_output_tokens`` (cumulative over a stream), never a re-tokenization of the text:
the entry model may send several tokens in one response (its responder merges pieces
that queued up), and re-encoding decoded text does not give back the same tokens.

Definitions (per request; ``t0`` its start, ``t_k`` / ``n_k`` the k-th response's
arrival time and cumulative token count, last response ``K``):

    time to first token   t_1 - t0
    request latency       t_K - t0
    inter-token latency   (t_K - t_1) / (n_K - n_1)    time per token after the first response
    tokens/s per request  n_K / (t_K - t0)
    latency at position p (t_k - t_{k-1}) / (n_k - n_{k-1})  for n_{k-1} < p <= n_k

Aggregates over the measurement window (first start to last response):
output tokens/s = sum n_K / window, requests/s = requests / window.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.errors import ToolFailed


@dataclass
class RequestRecord:
    """One profiled request: times in ns, cumulative server token counts per response."""

    start_ns: int
    response_ns: list[int]
    output_tokens: list[int]  # cumulative num_output_tokens at each response
    input_tokens: int | None
    text: str  # the streamed text, joined


@dataclass
class Stat:
    """Summary of one per-request quantity."""

    p50: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            return cls(*(float("nan"),) * 5)
        return cls(
            float(np.percentile(a, 50)),
            float(np.percentile(a, 99)),
            float(a.mean()),
            float(a.min()),
            float(a.max()),
        )


@dataclass
class ProfileFigures:
    """What one concurrency level measured, from the client's side."""

    requests: int
    window_s: float
    time_to_first_token_ms: Stat
    inter_token_latency_ms: Stat
    request_latency_ms: Stat
    output_tokens_per_s_per_request: Stat
    output_tokens_per_s: float  # aggregate over the window
    requests_per_s: float  # aggregate over the window
    output_tokens: Stat  # server's num_output_tokens per request
    input_tokens: Stat  # server's num_input_tokens per request
    position_latency_ms: list[float] = field(default_factory=list)  # median, index 0 = token 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_profile_export(path: str | Path) -> list[RequestRecord]:
    """The requests of every experiment in a perf_analyzer profile export.

    A response without ``num_output_tokens`` (a model that does not report it) counts
    as one token more than the one before, as a token-per-response stream would.

    Raises:
        ToolFailed: the file is missing, not JSON, or holds no request.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        experiments = data["experiments"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ToolFailed(f"no readable profile export at {path}: {exc}") from exc
    records = []
    for experiment in experiments:
        for request in experiment.get("requests", []):
            times: list[int] = []
            counts: list[int] = []
            texts: list[str] = []
            input_tokens = None
            for t, out in zip(
                request.get("response_timestamps", []), request.get("response_outputs", [])
            ):
                if not out:  # an empty final response (end of stream): no data
                    continue
                n = out.get("num_output_tokens")
                n = int(n) if n is not None else (counts[-1] + 1 if counts else 1)
                if counts and n <= counts[-1] and not out.get("text_output"):
                    continue  # a final response that repeats the count, with no text
                times.append(int(t))
                counts.append(n)
                texts.append(str(out.get("text_output", "")))
                if out.get("num_input_tokens") is not None:
                    input_tokens = int(out["num_input_tokens"])
            if times:
                records.append(
                    RequestRecord(
                        int(request["timestamp"]), times, counts, input_tokens, "".join(texts)
                    )
                )
    if not records:
        raise ToolFailed(f"the profile export {path} holds no completed request")
    return records


def position_latencies(record: RequestRecord) -> list[float]:
    """Seconds each output token took to arrive, by position (index 0 = the first token)."""
    out: list[float] = []
    prev_t, prev_n = record.start_ns, 0
    for t, n in zip(record.response_ns, record.output_tokens):
        if n > prev_n:
            out.extend([(t - prev_t) / 1e9 / (n - prev_n)] * (n - prev_n))
            prev_t, prev_n = t, n
    return out


def figures(records: list[RequestRecord]) -> ProfileFigures:
    """The client-side figures of one run (see the module docstring for definitions)."""
    ttft, itl, latency, tps, out_n, in_n = [], [], [], [], [], []
    for r in records:
        first, last = r.response_ns[0], r.response_ns[-1]
        ttft.append((first - r.start_ns) / 1e6)
        latency.append((last - r.start_ns) / 1e6)
        n = r.output_tokens[-1]
        out_n.append(float(n))
        if r.input_tokens is not None:
            in_n.append(float(r.input_tokens))
        if last > r.start_ns:
            tps.append(n / ((last - r.start_ns) / 1e9))
        if n > r.output_tokens[0]:
            itl.append((last - first) / 1e6 / (n - r.output_tokens[0]))
    window_s = (max(r.response_ns[-1] for r in records) - min(r.start_ns for r in records)) / 1e9
    by_position: list[list[float]] = []
    for r in records:
        for i, seconds in enumerate(position_latencies(r)):
            if i == len(by_position):
                by_position.append([])
            by_position[i].append(seconds * 1e3)
    return ProfileFigures(
        requests=len(records),
        window_s=window_s,
        time_to_first_token_ms=Stat.of(ttft),
        inter_token_latency_ms=Stat.of(itl),
        request_latency_ms=Stat.of(latency),
        output_tokens_per_s_per_request=Stat.of(tps),
        output_tokens_per_s=sum(out_n) / window_s if window_s > 0 else float("nan"),
        requests_per_s=len(records) / window_s if window_s > 0 else float("nan"),
        output_tokens=Stat.of(out_n),
        input_tokens=Stat.of(in_n),
        position_latency_ms=[float(np.median(v)) for v in by_position],
    )


def retokenized_counts(records: list[RequestRecord], tokenizer: Any) -> list[int]:
    """Output lengths as genai-perf counts them: the streamed text encoded again
    (without special tokens). Compare with the server's ``num_output_tokens``."""
    return [len(tokenizer.encode(r.text, add_special_tokens=False).ids) for r in records]
