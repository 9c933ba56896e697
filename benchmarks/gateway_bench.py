"""Time to first token and tokens/s through the gateway vs direct Triton gRPC streaming.

    .venv/bin/python benchmarks/gateway_bench.py [--tokens 64] [--rounds 6] [--repository REPO]

One real tritonserver serving tiny-llama (built here unless --repository names one with
an ``llm`` entry model) and the gateway as its own process (``tritonkit gateway``, as
deployed). Each round sends the same streamed requests, at concurrency 1 and 8, along
three paths, interleaved so that the machine's drift hits all of them alike:

  * direct: tritonkit's AsyncLLMClient, one gRPC stream per request (the baseline);
  * gateway, raw SSE: httpx streaming ``POST /v1/completions`` (the gateway's own cost);
  * gateway, openai SDK: ``AsyncOpenAI.completions.create(stream=True)`` (what users run).

Every request generates exactly ``--tokens`` tokens (``min_tokens`` = ``max_tokens``).
Reported: median TTFT, median tokens/s per request (tokens / latency), total tokens/s
(all tokens / wall time of the round), and each gateway path's ratio to direct.
Targets: TTFT ratio <= 1.10, tokens/s ratio >= 0.90.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent))
from _table import table

from tritonkit.client import AsyncLLMClient
from tritonkit.serve import TritonServer

PROMPT = "The quick brown fox jumps over the lazy dog"
PATHS = ("direct gRPC", "gateway, raw SSE", "gateway, openai SDK")

# One request: returns (ttft_s, latency_s, tokens).
Request = Callable[[str], Awaitable[tuple[float, float, int]]]


def direct_request(client: AsyncLLMClient, n: int) -> Request:
    async def run(prompt: str) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        ttft = None
        tokens = 0
        async for chunk in client.stream_events(prompt, max_tokens=n, min_tokens=n):
            if chunk.text and ttft is None:
                ttft = time.perf_counter() - t0
            tokens = chunk.num_output_tokens or tokens
        return ttft or 0.0, time.perf_counter() - t0, tokens

    return run


def sse_request(http: httpx.AsyncClient, url: str, n: int) -> Request:
    async def run(prompt: str) -> tuple[float, float, int]:
        body = {
            "model": "llm",
            "prompt": prompt,
            "max_tokens": n,
            "min_tokens": n,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        t0 = time.perf_counter()
        ttft = None
        tokens = 0
        async with http.stream("POST", f"{url}/v1/completions", json=body) as reply:
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if ttft is None and event["choices"] and event["choices"][0]["text"]:
                    ttft = time.perf_counter() - t0
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        return ttft or 0.0, time.perf_counter() - t0, tokens

    return run


def sdk_request(client: openai.AsyncOpenAI, n: int) -> Request:
    async def run(prompt: str) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        ttft = None
        tokens = 0
        stream = await client.completions.create(
            model="llm",
            prompt=prompt,
            max_tokens=n,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"min_tokens": n},
        )
        async for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].text:
                ttft = time.perf_counter() - t0
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return ttft or 0.0, time.perf_counter() - t0, tokens

    return run


async def one_round(request: Request, concurrency: int, per_worker: int) -> tuple[list, float]:
    """``concurrency`` workers, ``per_worker`` requests each; returns samples and wall time."""
    samples: list[tuple[float, float, int]] = []

    async def worker(k: int) -> None:
        for i in range(per_worker):
            samples.append(await request(f"{PROMPT} {k} {i}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return samples, time.perf_counter() - t0


async def measure(
    triton_url: str, gateway_url: str, n: int, rounds: int
) -> dict[tuple[str, int], dict]:
    async with (
        AsyncLLMClient(triton_url) as direct,
        httpx.AsyncClient(timeout=300) as http,
        openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="-", max_retries=0) as sdk,
    ):
        requests = {
            PATHS[0]: direct_request(direct, n),
            PATHS[1]: sse_request(http, gateway_url, n),
            PATHS[2]: sdk_request(sdk, n),
        }
        for request in requests.values():  # connect and warm up every path
            await one_round(request, 8, 1)
        results: dict[tuple[str, int], dict] = {}
        for concurrency, per_worker in ((1, 4), (8, 2)):
            for _ in range(rounds):
                for path, request in requests.items():
                    samples, wall = await one_round(request, concurrency, per_worker)
                    entry = results.setdefault((path, concurrency), {"samples": [], "rates": []})
                    entry["samples"] += samples
                    entry["rates"].append(sum(s[2] for s in samples) / wall)
        return results


def start_gateway(triton_url: str) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable, "-m", "tritonkit", "gateway", "--triton-url", triton_url,
        "--port", "0", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "OpenAI API at " not in line:
        proc.kill()
        raise SystemExit(f"the gateway did not start: {line!r}")
    url = line.split("OpenAI API at ", 1)[1].split()[0].removesuffix("/v1")
    for _ in range(200):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return proc, url


def build_repository(root: Path) -> Path:
    from tritonkit.export import main_export
    from tritonkit.model_repository import RepositorySpec
    from tritonkit.model_repository import build_repository as build

    export = main_export("tiny-llama", root / "export").output
    return build(export, root / "repo", spec=RepositorySpec(sync_instances=1)).path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per path and concurrency")
    parser.add_argument("--repository", type=Path, help="a model repository with 'llm' in it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repository or build_repository(Path(tmp))
        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=3) as ts:
            gateway, url = start_gateway(ts.grpc_url)
            try:
                results = asyncio.run(measure(ts.grpc_url, url, args.tokens, args.rounds))
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)

    rows = []
    summary = []
    for concurrency in (1, 8):
        base = _stats(results[(PATHS[0], concurrency)])
        for path in PATHS:
            s = _stats(results[(path, concurrency)])
            ttft_ratio = s["ttft_ms"] / base["ttft_ms"]
            tps_ratio = s["tps"] / base["tps"]
            total_ratio = s["total_tps"] / base["total_tps"]
            rows.append(
                [path, concurrency, s["ttft_ms"], s["tps"], s["total_tps"],
                 ttft_ratio, tps_ratio, total_ratio]
            )  # fmt: skip
            if path != PATHS[0]:
                summary.append((path, concurrency, ttft_ratio, tps_ratio))
    n = args.tokens
    print(f"tiny-llama on CPU, {n} new tokens per request, medians over {args.rounds} rounds")
    print(
        table(
            ["path", "concurrency", "TTFT ms", "tok/s per request", "tok/s total",
             "TTFT vs direct (x)", "tok/s vs direct (x)", "total vs direct (x)"],
            rows,
        )
    )  # fmt: skip
    print()
    for path, concurrency, ttft_ratio, tps_ratio in summary:
        verdict = "meets" if ttft_ratio <= 1.10 and tps_ratio >= 0.90 else "misses"
        print(
            f"{path}, c={concurrency}: TTFT {ttft_ratio:.2f}x (target <= 1.10), "
            f"tok/s {tps_ratio:.2f}x (target >= 0.90): {verdict} the target"
        )


def _stats(entry: dict) -> dict[str, float]:
    samples = entry["samples"]
    return {
        "ttft_ms": statistics.median(t for t, _, _ in samples) * 1e3,
        "tps": statistics.median(k / total for _, total, k in samples),
        "total_tps": statistics.median(entry["rates"]),
    }


if __name__ == "__main__":
    main()
