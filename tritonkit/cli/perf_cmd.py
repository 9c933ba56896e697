"""``tritonkit perf`` and ``tritonkit perf inputs``: forward to ``tritonkit.perf``.

``bench`` is an alias of ``perf`` (the command's former name), so old commands still work.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from tritonkit.errors import UsageError

HELP = """\
Profile a served entry model with Triton's own tools, run unmodified: genai-perf
(kserve endpoint, streaming; --backend tensorrtllm or vllm request layout) or
perf_analyzer (-i grpc --streaming --async with input data). For each concurrency:
time to first token, inter-token latency, request latency and tokens/s per request
(p50 and p99), output tokens/s and requests/s over the run; Triton's queue and
compute time and tritonkit's server-side figures from the metrics port, read before
and after. Token counts are the server's num_output_tokens. Writes results.json,
results.csv, PNG plots and each tool's raw files (OUTPUT/raw/); prints a table.
"tritonkit bench" is the same command (its former name).

The tools need the model's own tokenizer folder (never a hub name): pass the
repository the server runs (--repository) or --tokenizer DIR.

examples:
  tritonkit perf --url 127.0.0.1:8001 --model llm --repository out/model_repository
  tritonkit perf --url 127.0.0.1:8001 --model llm --repository out/model_repository \\
      --concurrency 1,2,4,8 --input-tokens 128 --output-tokens 64 --output out/perf
  tritonkit perf --url 127.0.0.1:8001 --model llm \\
      --tokenizer out/model_repository/llm/1/tokenizer \\
      --tool perf_analyzer --concurrency 1,8 --requests 64
  # the cost of a constraint: the same run with every output held to a JSON schema
  tritonkit perf --url 127.0.0.1:8001 --repository out/model_repository \
      --tool perf_analyzer --no-exact-output --request-input guided_json=@schema.json
  tritonkit perf inputs --repository out/model_repository --model llm --output out/pa-inputs
"""

INPUTS_HELP = """\
Write perf_analyzer --input-data JSON files:
  OUTPUT/MODEL.json                 the entry model: COUNT prompts of exactly
                                    --input-tokens tokens, streamed, max_tokens (and
                                    min_tokens) = --output-tokens
  OUTPUT/DECODER.prefill.json       the decoder model: a prefill step (BATCH x input
                                    tokens, empty KV cache)
  OUTPUT/DECODER.decode.json        the decoder model: a decode step (BATCH x 1 token on
                                    a KV cache of input-tokens positions)
The decoder files need --repository (the decoder's inputs come from its config.pbtxt).
The commands to run them are printed.

examples:
  tritonkit perf inputs --repository out/model_repository --model llm --output out/pa-inputs
  tritonkit perf inputs --repository out/model_repository --model llm --output out/pa-inputs \\
      --input-tokens 512 --output-tokens 128 --batch 8
  tritonkit perf inputs --tokenizer out/tiny-llama --model llm --output out/pa-inputs
"""


def _concurrency(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,2,4,8, got {text!r}")
    return values


def _tokens_options(p: Any, input_default: int, output_default: int) -> None:
    p.add_argument(
        "--input-tokens",
        type=int,
        default=input_default,
        metavar="N",
        help=f"prompt length in tokens (default {input_default})",
    )
    p.add_argument(
        "--output-tokens",
        type=int,
        default=output_default,
        metavar="N",
        help=f"tokens generated per request (default {output_default})",
    )
    p.add_argument(
        "--exact-output",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also send the minimum (min_length / min_tokens) = --output-tokens, so every "
        "request generates exactly that many tokens (default on; --no-exact-output lets "
        "EOS end a request early)",
    )
    p.add_argument("--seed", type=int, default=0, help="prompt selection seed (default 0)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "perf",
        aliases=["bench"],
        help="profile a served model with genai-perf or perf_analyzer",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", metavar="HOST:PORT", help="the server's gRPC endpoint (required)")
    p.add_argument("--model", default="llm", help="entry model name (default llm)")
    p.add_argument(
        "--concurrency",
        type=_concurrency,
        default=[1, 2, 4, 8],
        metavar="LIST",
        help="concurrent requests, comma separated (default 1,2,4,8)",
    )
    _tokens_options(p, 128, 64)
    p.add_argument(
        "--tool",
        default="genai-perf",
        choices=["genai-perf", "perf_analyzer"],
        help="the profiler (default genai-perf)",
    )
    p.add_argument(
        "--backend",
        default="tensorrtllm",
        choices=["tensorrtllm", "vllm"],
        help="genai-perf's request layout (default tensorrtllm)",
    )
    p.add_argument(
        "--output",
        default="perf-results",
        metavar="DIR",
        help="results folder (default perf-results)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--repository",
        metavar="REPO",
        help="the model repository the server runs (finds the tokenizer)",
    )
    where.add_argument("--tokenizer", metavar="DIR", help="the model's own tokenizer folder")
    p.add_argument(
        "--metrics-url",
        metavar="HOST:PORT",
        help="Triton's metrics endpoint (default: the --url host, port 8002)",
    )
    p.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="measured requests per concurrency (default max(16, 4 x concurrency))",
    )
    p.add_argument(
        "--warmup",
        type=int,
        metavar="N",
        help="warm-up requests per concurrency (default: the concurrency)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="seconds allowed per concurrency (default 900)",
    )
    p.add_argument("--perf-analyzer", metavar="PATH", help="perf_analyzer executable")
    p.add_argument(
        "--genai-perf",
        metavar="PATH",
        help="genai-perf executable (default: .venv-genai-perf/bin/genai-perf)",
    )
    p.add_argument(
        "--request-input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more input for every request (repeatable; perf_analyzer): a constraint "
        "or a sampling setting, e.g. guided_json=@schema.json, logprobs=5, temperature=0.7",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run)

    kinds = p.add_subparsers(dest="perf_command", metavar="[inputs]")
    q = kinds.add_parser(
        "inputs",
        help="write perf_analyzer input data for the entry and decoder models",
        description=INPUTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--model", default="llm", help="entry model name (default llm)")
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--repository", metavar="REPO", help="the model repository")
    where.add_argument(
        "--tokenizer", metavar="DIR", help="a tokenizer folder (entry model file only)"
    )
    q.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    _tokens_options(q, 128, 64)
    q.add_argument("--count", type=int, default=32, help="prompts in the entry file (default 32)")
    q.add_argument("--batch", type=int, default=1, help="decoder batch size (default 1)")
    q.add_argument(
        "--url",
        default="127.0.0.1:8001",
        metavar="HOST:PORT",
        help="the gRPC endpoint used in the printed commands",
    )
    q.set_defaults(handler=_inputs)


def _run(args: argparse.Namespace) -> int:
    from tritonkit.perf import run_bench
    from tritonkit.perf.inputs import request_inputs

    extra = request_inputs(args.request_input)
    if not args.url:
        raise UsageError("tritonkit perf needs --url HOST:PORT (the server's gRPC endpoint)")
    report = run_bench(
        args.url,
        args.model,
        concurrency=args.concurrency,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        tool=args.tool,
        output=args.output,
        tokenizer=args.tokenizer,
        repository=args.repository,
        metrics_url=args.metrics_url,
        requests=args.requests,
        warmup=args.warmup,
        exact_output=args.exact_output,
        backend=args.backend,
        seed=args.seed,
        timeout_s=args.timeout,
        perf_analyzer=args.perf_analyzer,
        genai_perf=args.genai_perf,
        plots=not args.no_plots,
        progress=not args.quiet,
        request_inputs=extra,
    )
    s = report.settings
    print(
        f"{s['model']} at {s['url']} via {s['tool']}: {s['input_tokens']} prompt tokens, "
        f"{s['output_tokens']} output tokens{' (exact)' if s['exact_output'] else ''}; "
        "p50 / p99 per request"
    )
    print(report.table())
    for level in report.levels:
        retok, n = level.retokenized_output_tokens, level.client.output_tokens
        if retok is not None and abs(retok.mean - n.mean) >= 0.5:
            print(
                f"note: concurrency {level.concurrency}: the server generated {n.mean:.0f} "
                f"tokens per request; re-encoding the streamed text (how genai-perf counts) gives "
                f"{retok.mean:.1f}. The figures above use the server's count."
            )
            break
    print("\nwrote " + ", ".join(str(p) for p in report.files.values()))
    return 0


def _inputs(args: argparse.Namespace) -> int:
    from tritonkit.perf import locate, write_inputs
    from tritonkit.perf.tools import cuda_runtime_lib

    decoder, decoder_inputs, tokenizer = None, None, args.tokenizer
    if args.repository:
        found = locate(args.repository, args.model)
        decoder, decoder_inputs, tokenizer = (
            found.decoder,
            found.decoder_inputs,
            found.tokenizer_dir,
        )
    files = write_inputs(
        args.output,
        tokenizer,
        args.model,
        args.input_tokens,
        args.output_tokens,
        count=args.count,
        exact=args.exact_output,
        decoder=decoder,
        decoder_inputs=decoder_inputs,
        batch=args.batch,
        seed=args.seed,
    )
    lib = cuda_runtime_lib()
    prefix = f"LD_LIBRARY_PATH={shlex.quote(str(lib))} " if lib else ""
    print(f"wrote {files.entry}" + (f", {files.prefill}, {files.decode}" if files.prefill else ""))
    print("\nprofile them with perf_analyzer:")
    print(
        f"  {prefix}perf_analyzer -m {args.model} -i grpc --streaming --async -u {args.url} "
        f"--input-data {shlex.quote(str(files.entry))} --concurrency-range 4"
    )
    for path in (files.prefill, files.decode):
        if path is not None:
            print(
                f"  {prefix}perf_analyzer -m {decoder} -i grpc -u {args.url} "
                f"--input-data {shlex.quote(str(path))} --concurrency-range 1"
            )
    return 0
