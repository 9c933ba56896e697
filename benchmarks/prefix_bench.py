"""Automatic prefix caching on SmolLM2 in a real Triton: what a chat's second turn saves,
and what the cache costs when nothing is shared.

    .venv/bin/python benchmarks/prefix_bench.py [--export DIR] [--system-tokens 1200]

Two repositories from one export, ``--prefix-cache`` and ``--no-prefix-cache``, served in
turn, gRPC streaming through tritonkit's client, greedy:

1. Multi-turn: the time to first token of a request whose ~1,200-token system prompt was
   seen before (a second question to the same assistant), against the same kind of
   request the first time (a system prompt never seen: each repetition starts its own
   with a different number). Goal: warm at most 0.25x cold.
2. Nothing shared (every prompt different from its first token): tokens/s per request and
   in total at concurrency 1 and 8, cache on against off. Goal: within noise.
3. n = 4 from one prefill against four separate requests sent together (the same seeds, a
   ~300-token prompt, 32 tokens each): the time until every choice is done. Goal: at
   most 0.6x.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _table import smollm2_export, table

from tritonkit.client import LLMClient
from tritonkit.model_repository import RepositorySpec, build_repository
from tritonkit.serve import TritonServer

RULES = (
    "Ships arrive at dawn and leave at dusk. Every captain files a manifest, pays the "
    "mooring fee at the office and signs the register before the crew goes ashore. "
    "Cargo is inspected on the quay; perishable goods go first. "
)


def system_prompt(tokenizer: Any, n: int, tag: int) -> str:
    """About ``n`` tokens of harbour rules, starting with ``tag`` (so no two share a prefix)."""
    text = f"Office {tag}. You are the assistant of a harbour office. "
    while len(tokenizer.encode(text).ids) < n:
        text += RULES
    return text


def ttft(url: str, system: str, question: str) -> tuple[float, int]:
    """(time to first token in s, cached prompt tokens) of one streamed chat."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    with LLMClient(url, model="llm") as client:
        r = client.chat(messages, max_tokens=8, on_text=lambda _p: None)
    return r.time_to_first_token_s or 0.0, r.cached_tokens or 0


def multi_turn(url: str, tokenizer: Any, n_tokens: int, reps: int) -> list[list[Any]]:
    cold, warm, cached = [], [], []
    for rep in range(reps):
        system = system_prompt(tokenizer, n_tokens, 1000 + rep)
        t, _ = ttft(url, system, "When do ships arrive?")
        cold.append(t)
        t, c = ttft(url, system, "Who signs the register?")
        warm.append(t)
        cached.append(c)
    c_ms, w_ms = statistics.median(cold) * 1e3, statistics.median(warm) * 1e3
    return [["first time (cold)", f"{c_ms:.0f}", 0, "1"],
            ["seen before (warm)", f"{w_ms:.0f}", int(statistics.median(cached)),
             f"{w_ms / c_ms:.2f}"]]  # fmt: skip


def throughput(url: str, concurrency: int, requests: int, tokens: int) -> tuple[float, float]:
    """(median tokens/s per request, tokens/s in total) over prompts that share nothing."""
    import time

    def one(k: int) -> tuple[float, int]:
        prompt = f"{k} " + "Tell me about the harbour and its ships. " * 8
        with LLMClient(url, model="llm") as client:
            r = client.generate(prompt, max_tokens=tokens, min_tokens=tokens,
                                on_text=lambda _p: None)  # fmt: skip
        return r.latency_s, r.num_output_tokens or 0

    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(10_000, 10_000 + concurrency)))  # warm-up
        t0 = time.perf_counter()
        runs = list(pool.map(one, range(requests * concurrency)))
        wall = time.perf_counter() - t0
    return statistics.median(n / t for t, n in runs), sum(n for _, n in runs) / wall


def choices(url: str, tokenizer: Any, reps: int) -> tuple[float, float]:
    """Seconds until all four choices are done: (four requests, n=4 in one request)."""
    import time

    prompt = system_prompt(tokenizer, 300, 7) + "\nQuestion: what happens at dawn?\nAnswer:"
    params = {"max_tokens": 32, "min_tokens": 32, "temperature": 0.8}

    def together(seed: int) -> float:
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: LLMClient(url, model="llm").generate(
                prompt, seed=seed + i, on_text=lambda _p: None, **params), range(4)))  # fmt: skip
        return time.perf_counter() - t0

    def forked(seed: int) -> float:
        t0 = time.perf_counter()
        with LLMClient(url, model="llm") as client:
            client.generate(prompt, n=4, seed=seed, on_text=lambda _p: None, **params)
        return time.perf_counter() - t0

    sep = statistics.median(together(100 * r) for r in range(reps))
    one = statistics.median(forked(100 * r + 50) for r in range(reps))
    return sep, one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--export", type=Path, help="an existing SmolLM2 export (default: export now)")
    ap.add_argument("--system-tokens", type=int, default=1200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=3, help="per worker and concurrency")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export = smollm2_export(args.export, work)
        tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
        speed: dict[bool, dict[int, tuple[float, float]]] = {}
        n_times: dict[bool, tuple[float, float]] = {}
        for cache in (True, False):
            spec = RepositorySpec(sync_instances=1, prefix_cache=cache, max_batch_size=8)
            repo = build_repository(export, work / f"repo-{cache}", spec=spec).path
            with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
                if cache:
                    rows = multi_turn(server.grpc_url, tokenizer, args.system_tokens, args.reps)
                n_times[cache] = choices(server.grpc_url, tokenizer, args.reps)
                speed[cache] = {c: throughput(server.grpc_url, c, args.requests, args.tokens)
                                for c in (1, 8)}  # fmt: skip
    print(f"Multi-turn: a ~{args.system_tokens}-token system prompt, a new question "
          "(SmolLM2, Triton, --prefix-cache)")  # fmt: skip
    print(table(["request", "TTFT ms", "cached tokens", "vs cold (x)"], rows))
    print(f"\nNothing shared: {args.tokens} tokens per request, greedy")
    out = []
    for c in (1, 8):
        on, off = speed[True][c], speed[False][c]
        out.append([c, f"{off[0]:.1f}", f"{on[0]:.1f}", f"{on[0] / off[0]:.2f}",
                    f"{off[1]:.1f}", f"{on[1]:.1f}", f"{on[1] / off[1]:.2f}"])  # fmt: skip
    print(table(["concurrency", "off tok/s/req", "on tok/s/req", "on/off",
                 "off tok/s", "on tok/s", "on/off"], out))  # fmt: skip
    print("\nn=4 against four requests (a ~300-token prompt, 32 tokens each, sampled)")
    base = n_times[False][0]
    n_rows = [
        ["4 separate requests, no prefix cache", f"{base * 1e3:.0f}", "1"],
        ["4 separate requests, prefix cache (they copy the first one's prompt)",
         f"{n_times[True][0] * 1e3:.0f}", f"{n_times[True][0] / base:.2f}"],
        ["n=4, one prefill, no prefix cache", f"{n_times[False][1] * 1e3:.0f}",
         f"{n_times[False][1] / base:.2f}"],
        ["n=4, one prefill, prefix cache", f"{n_times[True][1] * 1e3:.0f}",
         f"{n_times[True][1] / base:.2f}"],
    ]  # fmt: skip
    print(table(["how", "ms until all four are done", "vs separate, no cache (x)"], n_rows))


if __name__ == "__main__":
    main()
