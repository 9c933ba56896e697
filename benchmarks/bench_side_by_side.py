"""Triton through genai-perf vs in-process onnxruntime vs transformers, and KV-cache scaling.

    .venv/bin/python benchmarks/bench_side_by_side.py [--tokens 64] [--output DIR]

One run on tiny-llama (16-token prompts, greedy, exactly --tokens new tokens):
  * Triton (the entry model on a real local tritonserver) profiled by genai-perf,
    unmodified, at concurrency 1 and 8 (``tritonkit.perf.run_bench``; token counts
    are the server's);
  * the same graph in-process through the engine the server runs: a plain greedy loop;
  * transformers ``generate`` (greedy, KV cache, one torch thread like onnxruntime's);
and KV-cache scaling through the whole stack: the latency of one streamed output token
at position 16 against position 512 (the engine alone, per graph kind and against
onnxruntime-genai: ``decode_step_bench.py``). Medians throughout (this machine is shared
and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _table import table
from serving_bench import engine_loop, transformers_generate

from tritonkit.core.layout import read_export_report
from tritonkit.export import main_export
from tritonkit.model_repository import RepositorySpec, build_repository
from tritonkit.model_repository.runtime.engines import open_engine
from tritonkit.perf import run_bench
from tritonkit.perf.inputs import load_tokenizer, make_prompts
from tritonkit.serve import TritonServer

PROMPT_TOKENS = 16
NEAR, FAR = 16, 512  # sequence positions compared (the KV cache holds that many tokens)
LONG_PROMPT = 8  # the long stream: output token k sits at sequence position 8 + k
WINDOW = 8  # positions either side averaged in the stream's per-position latency


def window_ms(positions: list[float], at: int) -> float:
    """Median latency of the output tokens around sequence position ``at``.

    ``positions[k - 1]`` is output token k, at sequence position ``LONG_PROMPT + k``;
    token 1 (the time to first token, a prefill) is left out.
    """
    k = at - LONG_PROMPT
    return statistics.median(positions[max(1, k - 1 - WINDOW) : k + WINDOW])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--output", help="keep the bench results and plots here")
    args = parser.parse_args()
    n = args.tokens

    from tritonkit.export.loading import load

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "bench"
        export = main_export("tiny-llama", Path(tmp) / "export").output
        repo = build_repository(
            export, Path(tmp) / "repo", spec=RepositorySpec(sync_instances=1)
        ).path
        tokenizer = load_tokenizer(repo / "llm" / "1" / "tokenizer")
        ids = tokenizer.encode(make_prompts(tokenizer, PROMPT_TOKENS, 1)[0]).ids
        loaded = load("tiny-llama")
        # One thread, as onnxruntime uses for graphs this small (auto_threads): on a busy
        # 2-core machine torch's second thread spins and runs 10x slower, not faster.
        torch.set_num_threads(1)

        graph = read_export_report(export)
        engine = open_engine(str(export / graph.model_file), graph, 1, len(ids) + n + 8)
        ort_runs = [engine_loop(engine, ids, n) for _ in range(23)][3:]
        hf_runs = [transformers_generate(loaded.model, ids, n) for _ in range(5)]

        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=3) as s:
            common = dict(repository=repo, metrics_url=s.metrics_url, tool="genai-perf", plots=True)
            report = run_bench(
                s.grpc_url, "llm", concurrency=[1, 8], input_tokens=PROMPT_TOKENS,
                output_tokens=n, output=out / "c1-c8", **common,
            )  # fmt: skip
            # One long stream per request, to read the latency at positions 16 and 512.
            long = run_bench(
                s.grpc_url, "llm", concurrency=[1], input_tokens=LONG_PROMPT,
                output_tokens=FAR - LONG_PROMPT + WINDOW, requests=10, output=out / "kv", **common,
            )  # fmt: skip

    def per_request(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
        ttft = statistics.median(t for t, _ in runs) * 1e3
        itl = statistics.median((total - t) / (n - 1) for t, total in runs) * 1e3
        return ttft, itl, statistics.median(n / total for _, total in runs)

    ort_ttft, ort_itl, ort_tps = per_request(ort_runs)
    hf_ttft, hf_itl, hf_tps = per_request(hf_runs)
    rows = [
        [f"in-process loop ({graph.graph} graph)", 1, ort_ttft, ort_itl, ort_tps, ort_tps, 1.0],
        ["transformers generate", 1, hf_ttft, hf_itl, hf_tps, hf_tps, hf_tps / ort_tps],
    ]
    for level in report.levels:
        f = level.client
        rows.append([
            "Triton via genai-perf", level.concurrency, f.time_to_first_token_ms.p50,
            f.inter_token_latency_ms.p50, f.output_tokens_per_s_per_request.p50,
            f.output_tokens_per_s, f.output_tokens_per_s / ort_tps,
        ])  # fmt: skip
    print(f"tiny-llama, {PROMPT_TOKENS}-token prompts, {n} new tokens per request, greedy; medians")
    print(
        table(
            ["path", "concurrency", "TTFT ms", "ITL ms", "tok/s per request", "tok/s total",
             "total vs in-process loop (x)"],
            rows,
        )
    )  # fmt: skip
    c1, c8 = report.levels[0].client, report.levels[1].client
    print(
        f"\nTriton c=1 / in-process loop: {c1.output_tokens_per_s / ort_tps:.2f}x; "
        f"Triton c=8 / c=1 total tok/s: {c8.output_tokens_per_s / c1.output_tokens_per_s:.2f}x"
    )

    positions = long.levels[0].client.position_latency_ms
    stream_near, stream_far = window_ms(positions, NEAR), window_ms(positions, FAR)
    print(f"\nKV-cache scaling: a token at sequence position {NEAR} vs {FAR} (target <= 1.3x)")
    print(
        table(
            ["measured", f"position {NEAR} ms", f"position {FAR} ms", "ratio (x)"],
            [
                [f"Triton stream via genai-perf (c=1, median of up to +-{WINDOW} positions)",
                 stream_near, stream_far, stream_far / stream_near],
            ],
        )
    )  # fmt: skip
    if args.output:
        print(f"\nbench results and plots: {out}/c1-c8, {out}/kv")


if __name__ == "__main__":
    main()
