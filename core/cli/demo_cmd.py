"""``tritonkit demo``: the whole path on one machine, export -> repository -> Triton -> clients."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._progress import stages

HELP = """\
Run the whole path locally on the CPU, end to end:
  1. export the model to a verified ONNX decoder with KV cache
  2. build a Triton model repository (entry model + decoder)
  3. start a real Triton Inference Server on free loopback ports
  4. stream an answer over gRPC and get one over HTTP, with time to first token
     and tokens/s
  5. stop the server

The default model, tiny-llama, is a 2M-parameter Llama with RANDOM weights, built
from a fixed seed with no download: it proves the plumbing, and its text is
gibberish. For words, use a real model, e.g.:
  tritonkit demo --model Qwen/Qwen2.5-0.5B-Instruct --prompt "What is Triton?"
"""

NOTE = """
note: tiny-llama has random weights, so its text is gibberish by design; the numbers
show the plumbing works. With a real model (network needed for a hub id):
  tritonkit demo --model Qwen/Qwen2.5-0.5B-Instruct --prompt "What is Triton?"
or step by step:
  tritonkit export onnx --model ./my-model --output out/my-model
  tritonkit repo build --export out/my-model --output out/repo
  tritonkit serve --repository out/repo
  tritonkit generate "Hello" --url 127.0.0.1:8001 --stream
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="export, serve and query a model end to end on this machine",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="tiny-llama", help="hub id, folder or tiny-llama (default)")
    p.add_argument("--workdir", default="out", help="where the export and repository go")
    p.add_argument("--prompt", default="The quick brown fox", help="what to ask")
    p.add_argument("--max-tokens", type=int, default=48, help="new tokens per answer")
    p.add_argument("--name", default="llm", help="entry model name (default llm)")
    p.set_defaults(handler=_run)


def _reusable(export_dir: Path, model: str) -> bool:
    try:
        report = json.loads((export_dir / "export.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(report.get("passed")) and report.get("source", {}).get("model") == model


def _stats(label: str, result: Any) -> str:
    ttft = result.time_to_first_token_s
    tps = result.tokens_per_s
    return (
        f"[{label}] {result.num_output_tokens} tokens, finish_reason={result.finish_reason}, "
        f"time to first token {ttft * 1000:.1f} ms, {tps:.0f} tokens/s, "
        f"latency {result.latency_s * 1000:.1f} ms"
    )


def _run(args: argparse.Namespace) -> int:
    from tritonkit.client import LLMClient
    from tritonkit.export import main_export
    from tritonkit.model_repository import build_repository
    from tritonkit.serve import TritonServer

    work = Path(args.workdir).resolve()
    export_dir = work / "export"
    repo_dir = work / "repository"
    with stages(3, "demo") as say:
        if _reusable(export_dir, args.model):
            say(f"reusing the verified export in {export_dir}")
        else:
            main_export(args.model, export_dir, force=True, progress=say)
        say("building the model repository")
        build_repository(export_dir, repo_dir, name=args.name, force=True, sync_instances=1)
        say("starting Triton")
    print(f"export:     {export_dir}  (verified against PyTorch, see export.json)")
    print(f"repository: {repo_dir}")

    server = TritonServer(
        repo_dir, http_port=0, grpc_port=0, metrics_port=0, log_file=work / "server.log"
    )
    with server:
        print(f"server:     {server.describe()}".rstrip())
        print(f"\nprompt: {args.prompt!r}\n")
        params = {"max_tokens": args.max_tokens, "min_tokens": args.max_tokens}

        print("gRPC, streamed: ", end="", flush=True)
        with LLMClient(server.grpc_url, protocol="grpc", model=args.name) as grpc:
            streamed = grpc.generate(
                args.prompt, on_text=lambda piece: print(piece, end="", flush=True), **params
            )
        print("\n" + _stats("grpc stream", streamed))

        with LLMClient(server.http_url, protocol="http", model=args.name) as http:
            unary = http.generate(args.prompt, exclude_input_in_output=True, **params)
        print(f"\nHTTP, one response: {unary.text}")
        print(_stats("http generate", unary))
        same = unary.text == streamed.text
        print(f"\nstreamed text == one-response text: {same}")
    print("server stopped.")
    if args.model == "tiny-llama":
        print(NOTE, file=sys.stderr)
    return 0 if same else 1
