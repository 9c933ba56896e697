"""Tokens/s and time to first token: Triton vs in-process onnxruntime vs transformers.

    .venv/bin/python benchmarks/serving_bench.py [--tokens 64] [--requests 12]

One run on tiny-llama, side by side:
  * Triton (the entry model on a real local tritonserver), gRPC streaming through
    tritonkit's client, at concurrency 1 and 8;
  * the same ONNX graph in-process: a plain greedy loop with the KV cache;
  * transformers ``generate`` (greedy, KV cache).
Medians over repeated requests (this machine is noisy), ratios side by side.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _table import table

from tritonkit.client import LLMClient
from tritonkit.export import main_export
from tritonkit.model_repository import build_repository
from tritonkit.model_repository.runtime.decoder import OnnxDecoder
from tritonkit.serve import TritonServer

PROMPT = "The quick brown fox jumps over the lazy dog"


def ort_loop(decoder: OnnxDecoder, ids: list[int], n: int) -> tuple[float, float]:
    """Greedy decode of ``n`` tokens in-process; returns (ttft_s, total_s)."""
    t0 = time.perf_counter()
    prompt = np.asarray([ids], np.int64)  # (1, P)
    p = prompt.shape[1]
    logits, past = decoder.forward(
        prompt, np.ones((1, p), np.int64), np.arange(p)[None], decoder.empty_past(1)
    )
    token = int(logits[0].argmax())
    ttft = time.perf_counter() - t0
    for i in range(1, n):
        total = p + i
        logits, past = decoder.forward(
            np.asarray([[token]]), np.ones((1, total), np.int64), np.asarray([[total - 1]]), past
        )
        token = int(logits[0].argmax())
    return ttft, time.perf_counter() - t0


def transformers_generate(model, ids: list[int], n: int) -> tuple[float, float]:
    import torch

    x = torch.tensor([ids])
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return ttft, time.perf_counter() - t0


def triton_requests(url: str, n: int, requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` streamed generations per worker; returns medians and the aggregate rate."""

    def worker(k: int) -> list[tuple[float, float]]:
        out = []
        with LLMClient(url, protocol="grpc", model="llm") as client:
            client.generate(PROMPT, max_tokens=4)  # connect
            for i in range(requests):
                r = client.generate(
                    f"{PROMPT} {k} {i}", on_text=lambda _: None, max_tokens=n, min_tokens=n
                )
                out.append((r.time_to_first_token_s or r.latency_s, r.latency_s))
        return out

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = [x for chunk in pool.map(worker, range(concurrency)) for x in chunk]
    wall = time.perf_counter() - t0
    return {
        "ttft_ms": statistics.median(t for t, _ in results) * 1e3,
        "per_request_tps": statistics.median(n / total for _, total in results),
        "aggregate_tps": len(results) * n / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=12, help="requests per worker")
    args = parser.parse_args()
    n = args.tokens

    from tritonkit.export.loading import load

    with tempfile.TemporaryDirectory() as tmp:
        export = main_export("tiny-llama", Path(tmp) / "export").output
        repo = build_repository(export, Path(tmp) / "repo", sync_instances=1).path
        loaded = load("tiny-llama")
        ids = list(loaded.tokenizer(PROMPT)["input_ids"])

        decoder = OnnxDecoder(str(export / "model.onnx"))
        ort_runs = [ort_loop(decoder, ids, n) for _ in range(args.requests + 3)][3:]
        hf_runs = [transformers_generate(loaded.model, ids, n) for _ in range(5)]

        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
            c1 = triton_requests(server.grpc_url, n, args.requests, 1)
            c8 = triton_requests(server.grpc_url, n, max(2, args.requests // 2), 8)

    ort_tps = statistics.median(n / t for _, t in ort_runs)
    ort_ttft = statistics.median(t for t, _ in ort_runs) * 1e3
    hf_tps = statistics.median(n / t for _, t in hf_runs)
    hf_ttft = statistics.median(t for t, _ in hf_runs) * 1e3
    rows = [
        ["in-process onnxruntime loop", 1, ort_ttft, ort_tps, ort_tps, 1.0],
        ["transformers generate", 1, hf_ttft, hf_tps, hf_tps, hf_tps / ort_tps],
        ["Triton, gRPC stream", 1, c1["ttft_ms"], c1["per_request_tps"], c1["aggregate_tps"],
         c1["aggregate_tps"] / ort_tps],
        ["Triton, gRPC stream", 8, c8["ttft_ms"], c8["per_request_tps"], c8["aggregate_tps"],
         c8["aggregate_tps"] / ort_tps],
    ]  # fmt: skip
    print(f"tiny-llama, {n} new tokens per request, greedy; medians")
    print(
        table(
            ["path", "concurrency", "TTFT ms", "tok/s per request", "tok/s total",
             "total vs onnxruntime loop (x)"],
            rows,
        )
    )  # fmt: skip
    print(
        f"\nTriton c=1 / in-process loop: {c1['aggregate_tps'] / ort_tps:.2f}x (target >= 0.8)\n"
        f"Triton c=8 / Triton c=1 total tok/s: {c8['aggregate_tps'] / c1['aggregate_tps']:.2f}x "
        "(target >= 3)"
    )


if __name__ == "__main__":
    main()
