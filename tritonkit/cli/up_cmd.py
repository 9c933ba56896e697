"""``tritonkit up MODEL``: one command from a model to an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from tritonkit.errors import ServerError

from ._prepare import ENGINES, prepare
from ._progress import stages

HELP = """\
Serve MODEL as an OpenAI-compatible API on this machine, in the foreground, the way
`vllm serve MODEL` or `ollama run MODEL` do:
  1. export it to a verified ONNX decoder (--engine onnxruntime, the default) or import
     it as a verified Hugging Face folder (--engine vllm); kept in --workdir and reused
  2. build its Triton model repository
  3. start a real Triton server on free loopback ports and the gateway on --port
  4. print the URLs and a ready curl and openai example; Ctrl-C stops both cleanly

examples:
  tritonkit up smollm2
  tritonkit up smollm2 --engine vllm --port 8080
  tritonkit up ~/models/qwen2.5-0.5b-instruct-q8_0.gguf --name qwen
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "up",
        help="export, build, serve and open an OpenAI-compatible API in one command",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="smollm2, tiny-llama, a folder, a .gguf file or a hub id")
    p.add_argument("--engine", default="onnxruntime", choices=ENGINES, help="default onnxruntime")
    p.add_argument("--name", default="llm", help="the model's name in the API (default llm)")
    p.add_argument(
        "--workdir", metavar="DIR",
        help="where the export and repository go (default ~/.cache/tritonkit/up/NAME-ENGINE)",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="the gateway's address (default loopback)")
    p.add_argument(
        "--port", type=int, default=8080, help="the gateway's port (default 8080; 0: a free one)"
    )
    p.add_argument(
        "--api-key-file", metavar="FILE",
        help="keys clients must send (one per line); needed to listen beyond loopback",
    )  # fmt: skip
    p.set_defaults(handler=_run)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the Ctrl-C path: a clean stop


def _run(args: argparse.Namespace) -> int:
    from tritonkit.gateway import GatewayConfig, GatewayServer
    from tritonkit.serve import TritonServer
    from tritonkit.serve.binary import cache_root

    keys = _keys(args.api_key_file)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        raise ServerError(
            f"--host {args.host} would open the API to the network without keys: pass "
            "--api-key-file FILE, or keep the default loopback address"
        )
    work = Path(args.workdir or cache_root() / "up" / f"{args.name}-{args.engine}")
    with stages(3, "up") as say:
        prepared = prepare(args.model, args.engine, work.expanduser().resolve(), args.name, say)
        say("starting Triton" + (" (vLLM loads in about 30 s)" if args.engine == "vllm" else ""))
    server = TritonServer(
        prepared.repository, http_port=0, grpc_port=0, metrics_port=0,
        log_file=prepared.repository.parent / "server.log",
    )  # fmt: skip
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        server.start()
        config = GatewayConfig(triton_url=server.grpc_url, api_keys=keys)
        with GatewayServer(config, host=args.host, port=args.port) as gateway:
            print(_banner(args, server, gateway.url, bool(keys)), flush=True)
            threading.Event().wait()  # until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        print("\ntritonkit: stopping the gateway and Triton", file=sys.stderr, flush=True)
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _keys(path: str | None) -> tuple[str, ...]:
    if not path:
        return ()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ServerError(f"cannot read --api-key-file {path}: {exc}") from exc
    keys = tuple(k.strip() for k in lines if k.strip() and not k.startswith("#"))
    if not keys:
        raise ServerError(f"--api-key-file {path} holds no key")
    return keys


def _banner(args: argparse.Namespace, server: Any, url: str, keys: bool) -> str:
    key = "$TRITONKIT_KEY" if keys else "-"
    auth = ' -H "Authorization: Bearer $TRITONKIT_KEY"' if keys else ""
    return f"""
tritonkit up: {args.model} on {args.engine}, served as {args.name!r}
  OpenAI API   {url}/v1
  Triton       gRPC {server.grpc_url}, HTTP {server.http_url}, metrics {server.metrics_url}

try it:
  curl {url}/v1/chat/completions{auth} -H "Content-Type: application/json" \\
    -d '{{"model": "{args.name}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  print(client.chat.completions.create(model="{args.name}",
        messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)

Ctrl-C stops the gateway and Triton.""".rstrip()
