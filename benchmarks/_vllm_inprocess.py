"""vLLM in-process, for serving_bench.py: run with vLLM's own interpreter.

    .venv-vllm/bin/python benchmarks/_vllm_inprocess.py HF_DIR IDS_JSON TOKENS CACHE REQUESTS

Streams greedy generations of exactly ``TOKENS`` tokens of the prompt ids through
``AsyncLLM`` (vLLM's serving engine, eager mode, float32 on the CPU) from 1 and from 8
workers, each sending ``REQUESTS`` one after another (as serving_bench's client
threads), and prints one JSON object per concurrency: the median time to first token
and per-request tokens/s, and the total tokens/s. vLLM starts its engine
core with ``spawn``, so everything runs under ``__main__``. CACHE: 1 or 0, vLLM's prefix
cache on or off.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid


async def one(engine, ids, n):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        temperature=0, max_tokens=n, min_tokens=n, ignore_eos=True,
        output_kind=RequestOutputKind.DELTA,
    )  # fmt: skip
    t0 = time.perf_counter()
    first = None
    async for _ in engine.generate(TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex):
        if first is None:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0


async def main() -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    hf, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    cache, requests = sys.argv[4] == "1", int(sys.argv[5])
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(model=hf, dtype="float32", max_model_len=2048, enforce_eager=True,
                        disable_log_stats=True, enable_prefix_caching=cache)
    )  # fmt: skip
    try:
        await one(engine, ids, 4)  # warm up
        for concurrency in (1, 8):
            runs: list[tuple[float, float]] = []

            async def worker(out: list[tuple[float, float]]) -> None:  # one after another
                for _ in range(requests):
                    out.append(await one(engine, ids, n))

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(runs) for _ in range(concurrency)))
            wall = time.perf_counter() - t0
            print(json.dumps({
                "concurrency": concurrency,
                "ttft_ms": statistics.median(f for f, _ in runs) * 1e3,
                "per_request_tps": statistics.median(n / t for _, t in runs),
                "aggregate_tps": len(runs) * n / wall,
            }), flush=True)  # fmt: skip
    finally:
        engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
