"""``tritonkit serve``: forwards to ``tritonkit.serve.TritonServer``."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from tritonkit.errors import ServerError

HELP = """\
Start the tritonserver of the nvidia-pytriton wheel (Triton 2.51, python backend, CPU)
on a model repository, wait until it is ready, print its endpoints, and forward its log
to stderr. Ctrl-C or SIGTERM stops it cleanly: in-flight requests get --exit-timeout
seconds to finish. A port of 0 picks a free one. A model that fails to load stops the
start with the server's own error line.

REPOSITORY is a folder, or a cloud URL Triton reads itself (as://ACCOUNT/CONTAINER/PREFIX
with AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY in the environment; s3://, gs://).

examples:
  tritonkit serve --repository out/model_repository
  tritonkit serve --repository out/model_repository --http-port 0 --grpc-port 0 --metrics-port 0
  tritonkit serve --repository out/model_repository --model-control-mode explicit --load-model llm
  tritonkit serve --repository as://myaccount/models/tiny-llama --log-verbose 1
then, in another terminal:
  tritonkit health --url 127.0.0.1:8001
  tritonkit generate "Hello" --url 127.0.0.1:8001 --stream
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run a local Triton server on a model repository",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", required=True, metavar="REPO", help="model repository")
    p.add_argument(
        "--http-port", type=int, metavar="PORT", default=8000, help="HTTP port (default 8000)"
    )
    p.add_argument(
        "--grpc-port", type=int, metavar="PORT", default=8001, help="gRPC port (default 8001)"
    )
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT", default=8002, help="metrics port (default 8002)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    p.add_argument(
        "--model-control-mode",
        default="none",
        choices=["none", "explicit", "poll"],
        help="none: load every model at start (default); explicit: only --load-model ones; "
        "poll: follow the repository's changes",
    )
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="MODEL",
        help="with explicit mode: a model to load at start (repeatable; '*' for all)",
    )
    p.add_argument("--log-verbose", type=int, default=0, metavar="N", help="0 (default) to 2")
    p.add_argument("--log-file", metavar="PATH", help="write the server log here, not stderr")
    p.add_argument(
        "--exit-timeout",
        type=int,
        default=30,
        metavar="S",
        help="seconds a stopping server waits for in-flight requests (default 30)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the server to become ready (default 300)",
    )
    p.add_argument(
        "--azure-auth",
        default="key",
        choices=["key", "managed_identity", "default"],
        help="with an as:// repository: key (AZURE_STORAGE_KEY, default) or an Azure identity "
        "(managed_identity, default: Triton releases newer than 2.51)",
    )
    p.set_defaults(handler=_run)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the Ctrl-C path: a clean stop


def _run(args: argparse.Namespace) -> int:
    from tritonkit.serve import TritonServer

    env = None
    if args.repository.startswith("as://"):  # Triton reads Blob itself: hand it credentials
        from tritonkit.blob import triton_azure_env

        env = triton_azure_env(args.repository, args.azure_auth)
    server = TritonServer(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        model_control_mode=args.model_control_mode,
        load_models=args.load_model,
        log_verbose=args.log_verbose,
        exit_timeout_s=args.exit_timeout,
        startup_timeout_s=args.startup_timeout,
        forward_log=None if args.log_file else sys.stderr,
        log_file=args.log_file,
        env=env,
    )
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        try:
            server.start()
        except KeyboardInterrupt:  # start() has stopped what it started
            return 130
        print(server.describe(), flush=True)
        try:
            code = server.wait()
        except KeyboardInterrupt:
            print(
                f"tritonkit: stopping tritonserver (up to {args.exit_timeout}s for "
                "in-flight requests)",
                file=sys.stderr,
                flush=True,
            )
            server.stop()
            return 0
        reason = server.log.failure_reason() or "see its log above"
        raise ServerError(f"tritonserver exited on its own (code {code}): {reason}")
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
