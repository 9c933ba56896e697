"""``tritonkit gateway``: forwards to ``tritonkit.gateway.serve``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

HELP = """\
Serve an OpenAI-compatible API (FastAPI on uvicorn) in front of a Triton server: every
request becomes one gRPC stream to the entry model. Any OpenAI client works against it
with base URL http://HOST:PORT/v1.

  GET  /v1/models, /v1/models/{id}   Triton's ready entry models (or the --model-map ids)
  POST /v1/completions               streamed (SSE) or not; usage from the model's counts
  POST /v1/chat/completions          messages through the model's own chat template
  GET  /health                       200 when the gateway is up and Triton is ready
  GET  /metrics                      the gateway's Prometheus metrics

Chat templates come from --tokenizer NAME=DIR, else from --repository (a local model
repository: NAME/V/tokenizer/), else the plain template "role: content" lines then
"assistant:". Clients send the key as 'Authorization: Bearer KEY' (or 'api-key: KEY');
the key can also come from $TRITONKIT_GATEWAY_API_KEY. More than --max-concurrent
generations in flight get 429.

examples:
  tritonkit gateway --triton-url 127.0.0.1:8001
  tritonkit gateway --triton-url 127.0.0.1:8001 --repository out/model_repository
  tritonkit gateway --triton-url triton:8001 --host 0.0.0.0 --api-keys-file keys.txt
  tritonkit gateway --triton-url 127.0.0.1:8001 --model-map gpt-4o-mini=llm \\
      --tokenizer gpt-4o-mini=out/tiny-llama
then:
  curl http://127.0.0.1:9000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "llm", "messages": [{"role": "user", "content": "Hi"}]}'
"""


def add_parser(sub: Any) -> None:
    from tritonkit.gateway.config import DEFAULT_MAX_CONCURRENT, DEFAULT_PORT, DEFAULT_TIMEOUT_S

    p = sub.add_parser(
        "gateway",
        help="serve an OpenAI-compatible API in front of Triton",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--triton-url",
        default=os.environ.get("TRITONKIT_TRITON_URL", "127.0.0.1:8001"),
        metavar="HOST:PORT",
        help="Triton's gRPC endpoint (default $TRITONKIT_TRITON_URL or 127.0.0.1:8001)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--api-key", metavar="KEY", help="the API key clients must send")
    keys.add_argument("--api-keys-file", metavar="F", help="API keys, one a line (# comments)")
    p.add_argument(
        "--model-map",
        action="append",
        default=[],
        metavar="NAME=TRITON_MODEL",
        help="serve Triton model TRITON_MODEL as NAME (repeatable); with any, only these",
    )
    p.add_argument(
        "--repository",
        metavar="PATH",
        help="local model repository to read chat templates from (NAME/V/tokenizer/)",
    )
    p.add_argument(
        "--tokenizer",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="tokenizer folder with the chat template of model NAME (repeatable)",
    )
    p.add_argument(
        "--triton-header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="gRPC header sent with every call to Triton (repeatable); $TRITON_ADMIN_KEY "
        "adds triton-grpc-protocol-admin-key, for a Triton started with "
        "--grpc-restricted-protocol=...:admin-key=KEY",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=DEFAULT_MAX_CONCURRENT,
        metavar="N",
        help=f"generations in flight before 429 (default {DEFAULT_MAX_CONCURRENT}; 0: no limit)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds one generation may take (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from tritonkit.gateway import GatewayConfig, serve
    from tritonkit.gateway.config import (
        ADMIN_KEY_ENV,
        ADMIN_KEY_HEADER,
        API_KEY_ENV,
        parse_pairs,
        read_api_keys,
        tokenizers_from,
    )

    if args.api_keys_file:
        api_keys = read_api_keys(args.api_keys_file)
    elif args.api_key is not None:
        api_keys = (args.api_key,)
    elif os.environ.get(API_KEY_ENV):
        api_keys = (os.environ[API_KEY_ENV],)
    else:
        api_keys = ()
    headers = parse_pairs(args.triton_header, "--triton-header")
    triton_headers = {name.lower(): value for name, value in headers.items()}
    if os.environ.get(ADMIN_KEY_ENV) and ADMIN_KEY_HEADER not in triton_headers:
        triton_headers[ADMIN_KEY_HEADER] = os.environ[ADMIN_KEY_ENV]
    config = GatewayConfig(
        triton_url=args.triton_url,
        triton_headers=triton_headers,
        api_keys=api_keys,
        model_map=parse_pairs(args.model_map, "--model-map"),
        repository=Path(args.repository) if args.repository else None,
        tokenizers=tokenizers_from(parse_pairs(args.tokenizer, "--tokenizer")),
        max_concurrent=args.max_concurrent,
        timeout_s=args.timeout,
    ).check()
    if not api_keys and not _is_loopback(args.host):
        print(
            f"tritonkit: warning: no API key and --host {args.host}: anyone who can reach "
            "this port can use the model; give --api-key or --api-keys-file",
            file=sys.stderr,
            flush=True,
        )

    def announce(url: str) -> None:
        auth = f"{len(api_keys)} API key(s)" if api_keys else "no API key"
        print(
            f"tritonkit gateway: OpenAI API at {url}/v1 -> Triton {args.triton_url} ({auth})",
            flush=True,
        )

    serve(
        config,
        args.host,
        args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        on_listening=announce,
    )
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
