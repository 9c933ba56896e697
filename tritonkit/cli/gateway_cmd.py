"""``tritonkit gateway``: forwards to ``tritonkit.gateway.serve``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonkit.gateway import GatewayConfig

HELP = """\
Serve an OpenAI-compatible API (FastAPI on uvicorn) in front of a Triton server: every
request becomes one gRPC stream to the entry model. Any OpenAI client works against it
with base URL http://HOST:PORT/v1.

Several replicas: repeat --triton-url, or give --triton-discover HOST:PORT to use every
address HOST resolves to (a Kubernetes headless Service; resolved again every
--discover-interval seconds, and an address that disappears is drained: no new requests,
those in flight finish). Each request goes to the replica with the fewest requests in
flight; one that cannot be reached before the first token is marked down (re-probed in
the background) and the request moves to another. A stream whose replica dies after
its first token ends with an error event, never a repeat. /metrics has
tritonkit_gateway_replica_{up,in_flight_requests,requests_total,failures_total}.

  GET  /v1/models, /v1/models/{id}   Triton's ready entry models (or the --model-map ids)
  POST /v1/completions               streamed (SSE) or not; usage from the model's counts
  POST /v1/chat/completions          messages through the model's own chat template
  GET  /health                       200 when the gateway is up and Triton is ready
  GET  /metrics                      the gateway's Prometheus metrics

Chat templates come from --tokenizer NAME=DIR, else from --repository (a local model
repository: NAME/V/tokenizer/), else the plain template "role: content" lines then
"assistant:". The models served are the --model-map ids, else the entry models of
--repository, else those Triton lists (the one call Triton may restrict to an admin key:
with a map or a repository the gateway needs none). Clients send the key as
'Authorization: Bearer KEY' (or 'api-key: KEY'); the key can also come from
$TRITONKIT_GATEWAY_API_KEY, the /metrics key from $TRITONKIT_GATEWAY_METRICS_KEY.

Limits: a body over --max-body-bytes gets 413, a prompt (or all messages) over
--max-prompt-chars 400, a chat template that runs past --template-timeout or writes more
than --template-max-chars 400; more than --max-concurrent generations in flight (or
--max-concurrent-per-key for one key) get 429, and more than --limit-concurrency requests
in flight 503. Connections are bounded apart from requests, so no one can deny the
gateway by holding sockets open: past --max-connections a new one gets 503, and one that
takes over --header-timeout for a request header (or a request over --body-timeout for
its body) is closed with 408. A 5xx names its request id (X-Request-ID) and the
details go to the log. --ssl-certfile and --ssl-keyfile serve HTTPS.

examples:
  tritonkit gateway --triton-url 127.0.0.1:8001
  tritonkit gateway --triton-url 127.0.0.1:8001 --repository out/model_repository
  tritonkit gateway --triton-url 10.0.0.4:8001 --triton-url 10.0.0.5:8001
  tritonkit gateway --triton-discover triton-headless.llm.svc.cluster.local:8001 \
      --discover-interval 5 --host 0.0.0.0 --api-keys-file keys.txt
  tritonkit gateway --triton-url triton:8001 --host 0.0.0.0 --api-keys-file keys.txt
  tritonkit gateway --triton-url 127.0.0.1:8001 --model-map gpt-4o-mini=llm \\
      --tokenizer gpt-4o-mini=out/tiny-llama
  tritonkit gateway --triton-url triton:8001 --host 0.0.0.0 --api-keys-file keys.txt \\
      --metrics-key-file metrics.key --ssl-certfile cert.pem --ssl-keyfile key.pem
then:
  curl http://127.0.0.1:9000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "llm", "messages": [{"role": "user", "content": "Hi"}]}'
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "gateway",
        help="serve an OpenAI-compatible API in front of Triton",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _triton_args(p.add_argument_group("Triton: where the replicas are"))
    _listen_args(p.add_argument_group("listening"))
    _auth_args(p.add_argument_group("who may call"))
    _model_args(p.add_argument_group("models and chat templates"))
    _limit_args(p.add_argument_group("limits (each refusal is one line: 400, 413, 429 or 503)"))
    p.set_defaults(handler=_run)


def _triton_args(g: Any) -> None:
    from tritonkit.gateway import config as c

    where = g.add_mutually_exclusive_group()
    where.add_argument(
        "--triton-url",
        action="append",
        metavar="HOST:PORT",
        help="Triton's gRPC endpoint; repeat it for several replicas (default "
        "$TRITONKIT_TRITON_URL or 127.0.0.1:8001)",
    )
    where.add_argument(
        "--triton-discover",
        metavar="HOST:PORT",
        help="every A/AAAA address of HOST is a Triton replica (gRPC on PORT), e.g. a "
        "Kubernetes headless Service",
    )
    g.add_argument(
        "--discover-interval",
        type=float,
        default=c.DEFAULT_DISCOVER_INTERVAL_S,
        metavar="S",
        help="with --triton-discover: seconds between lookups (default "
        f"{c.DEFAULT_DISCOVER_INTERVAL_S:g})",
    )
    g.add_argument(
        "--triton-header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="gRPC header sent with every call to Triton (repeatable); with --model-map or "
        "--repository the gateway needs no admin key for Triton's model-repository API",
    )


def _listen_args(g: Any) -> None:
    from tritonkit.gateway import config as c

    g.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    g.add_argument(
        "--port", type=int, default=c.DEFAULT_PORT, help=f"port (default {c.DEFAULT_PORT}; 0: any)"
    )
    g.add_argument("--ssl-certfile", metavar="PEM", help="certificate (chain): serve HTTPS")
    g.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key")
    g.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )
    g.add_argument("--no-access-log", action="store_true", help="do not log each request")


def _auth_args(g: Any) -> None:
    from tritonkit.gateway import config as c

    keys = g.add_mutually_exclusive_group()
    keys.add_argument("--api-key", metavar="KEY", help="the API key clients must send")
    keys.add_argument("--api-keys-file", metavar="F", help="API keys, one a line (# comments)")
    metrics_keys = g.add_mutually_exclusive_group()
    metrics_keys.add_argument(
        "--metrics-key",
        metavar="KEY",
        help=f"the key GET /metrics wants (else ${c.METRICS_KEY_ENV}; none: /metrics is open)",
    )
    metrics_keys.add_argument(
        "--metrics-key-file", metavar="F", help="/metrics keys, one a line (# comments)"
    )


def _model_args(g: Any) -> None:
    g.add_argument(
        "--model-map",
        action="append",
        default=[],
        metavar="NAME=TRITON_MODEL",
        help="serve Triton model TRITON_MODEL as NAME (repeatable); with any, only these",
    )
    g.add_argument(
        "--repository",
        metavar="PATH",
        help="local model repository to read chat templates from (NAME/V/tokenizer/)",
    )
    g.add_argument(
        "--tokenizer",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="tokenizer folder with the chat template of model NAME (repeatable)",
    )


def _limit_args(g: Any) -> None:
    from tritonkit.gateway import config as c

    g.add_argument(
        "--max-concurrent",
        type=int,
        default=c.DEFAULT_MAX_CONCURRENT,
        metavar="N",
        help=f"generations in flight before 429 (default {c.DEFAULT_MAX_CONCURRENT}; 0: no limit)",
    )
    g.add_argument(
        "--max-concurrent-per-key",
        type=int,
        default=0,
        metavar="N",
        help="generations in flight per API key before 429 (default 0: no limit per key)",
    )
    g.add_argument(
        "--limit-concurrency",
        type=int,
        default=c.DEFAULT_LIMIT_CONCURRENCY,
        metavar="N",
        help="HTTP requests in flight before 503 (default "
        f"{c.DEFAULT_LIMIT_CONCURRENCY}; above --max-concurrent; 0: no limit)",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=c.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="open connections before a new one gets 503 (default "
        f"{c.DEFAULT_MAX_CONNECTIONS}, at most the file descriptors allow; 0: that limit only)",
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        default=c.DEFAULT_HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help="time a connection has to send a whole request header, however slowly it "
        f"trickles, before 408 and close (default {c.DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    g.add_argument(
        "--body-timeout",
        type=float,
        default=c.DEFAULT_BODY_TIMEOUT_S,
        metavar="SECONDS",
        help=f"time a request has to send its body (default {c.DEFAULT_BODY_TIMEOUT_S:g})",
    )
    g.add_argument(
        "--max-body-bytes",
        type=int,
        default=c.DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help=f"largest request body; larger gets 413 (default {c.DEFAULT_MAX_BODY_BYTES})",
    )
    g.add_argument(
        "--max-prompt-chars",
        type=int,
        default=c.DEFAULT_MAX_PROMPT_CHARS,
        metavar="N",
        help="characters of the prompt or of all messages; more gets 400 (default "
        f"{c.DEFAULT_MAX_PROMPT_CHARS})",
    )
    g.add_argument(
        "--template-timeout",
        type=float,
        default=c.DEFAULT_TEMPLATE_TIMEOUT_S,
        metavar="S",
        help="seconds one chat-template rendering may take; longer gets 400 (default "
        f"{c.DEFAULT_TEMPLATE_TIMEOUT_S:g})",
    )
    g.add_argument(
        "--template-max-chars",
        type=int,
        default=c.DEFAULT_TEMPLATE_MAX_CHARS,
        metavar="N",
        help="characters one chat-template rendering may write; more gets 400 (default "
        f"{c.DEFAULT_TEMPLATE_MAX_CHARS})",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=c.DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds one generation may take (default {c.DEFAULT_TIMEOUT_S:.0f})",
    )
    g.add_argument(
        "--tool-parser",
        default="auto",
        choices=["auto", "hermes", "llama3_json", "mistral"],
        help="how the models write tool calls: auto (default) reads it from each chat "
        "template (<tool_call> Hermes/Qwen, Llama 3 JSON, Mistral [TOOL_CALLS]); a template "
        "without tools gets tritonkit's Hermes instructions",
    )


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """The ``GatewayConfig`` the parsed ``args`` (and the environment) describe.

    Raises:
        UsageError: an invalid setting or pair, or a key file that cannot be read.
    """
    from tritonkit.gateway import GatewayConfig
    from tritonkit.gateway.config import (
        API_KEY_ENV,
        METRICS_KEY_ENV,
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
    if args.metrics_key_file:
        metrics_keys = read_api_keys(args.metrics_key_file, "--metrics-key-file")
    elif args.metrics_key is not None:
        metrics_keys = (args.metrics_key,)
    elif os.environ.get(METRICS_KEY_ENV):
        metrics_keys = (os.environ[METRICS_KEY_ENV],)
    else:
        metrics_keys = ()
    headers = parse_pairs(args.triton_header, "--triton-header")
    urls = tuple(args.triton_url or ())
    if not urls and not args.triton_discover:
        urls = (os.environ.get("TRITONKIT_TRITON_URL") or "127.0.0.1:8001",)
    return GatewayConfig(
        triton_url=urls[0] if urls else "127.0.0.1:8001",
        triton_urls=urls,
        triton_discover=args.triton_discover,
        discover_interval_s=args.discover_interval,
        triton_headers={name.lower(): value for name, value in headers.items()},
        api_keys=api_keys,
        metrics_keys=metrics_keys,
        model_map=parse_pairs(args.model_map, "--model-map"),
        repository=Path(args.repository) if args.repository else None,
        tokenizers=tokenizers_from(parse_pairs(args.tokenizer, "--tokenizer")),
        max_concurrent=args.max_concurrent,
        max_concurrent_per_key=args.max_concurrent_per_key,
        limit_concurrency=args.limit_concurrency,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_body_bytes=args.max_body_bytes,
        max_prompt_chars=args.max_prompt_chars,
        template_timeout_s=args.template_timeout,
        template_max_chars=args.template_max_chars,
        timeout_s=args.timeout,
        ssl_certfile=Path(args.ssl_certfile) if args.ssl_certfile else None,
        ssl_keyfile=Path(args.ssl_keyfile) if args.ssl_keyfile else None,
        tool_parser=args.tool_parser,
    ).check()


def _run(args: argparse.Namespace) -> int:
    from tritonkit.gateway import serve
    from tritonkit.gateway.config import ADMIN_KEY_ENV

    config = config_from_args(args)
    api_keys = config.api_keys
    for warning in startup_warnings(config, args.host, bool(os.environ.get(ADMIN_KEY_ENV))):
        print(f"tritonkit: warning: {warning}", file=sys.stderr, flush=True)

    if config.triton_discover:
        triton = f"the replicas of {config.triton_discover} (looked up every "
        triton += f"{config.discover_interval_s:g} s)"
    else:
        triton = ", ".join(config.replica_urls)

    def announce(url: str) -> None:
        auth = f"{len(api_keys)} API key(s)" if api_keys else "no API key"
        print(f"tritonkit gateway: OpenAI API at {url}/v1 -> Triton {triton} ({auth})", flush=True)

    serve(
        config,
        args.host,
        args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        on_listening=announce,
    )
    return 0


def startup_warnings(config: Any, host: str, admin_key_set: bool = False) -> list[str]:
    """What an operator should hear before the gateway listens on ``host``."""
    from tritonkit.gateway.config import ADMIN_KEY_ENV

    warnings = []
    if admin_key_set:
        warnings.append(
            f"${ADMIN_KEY_ENV} is set; the gateway ignores it (it needs no admin API of "
            "Triton's): remove it from the gateway's environment"
        )
    if _is_loopback(host):
        return warnings
    if not config.api_keys:
        warnings.append(
            f"no API key and --host {host}: anyone who can reach this port can use the "
            "model; give --api-key or --api-keys-file"
        )
    if not config.metrics_keys and not config.api_keys:
        warnings.append(
            f"no key at all and --host {host}: anyone who can reach this port can read "
            "/metrics (replica addresses); give --metrics-key-file"
        )
    if not config.tls:
        warnings.append(
            f"plain HTTP on --host {host}: API keys and prompts cross the network "
            "unencrypted; give --ssl-certfile and --ssl-keyfile (the README's GPU VM steps "
            "make a certificate), or put a TLS proxy in front"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
