"""The ``tritonkit`` command: a thin adapter over the library.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and a handler
that forwards to one library function. ``run(argv)`` is testable; ``main()`` prints
tritonkit's own errors as one line (exit 1, or 2 for usage) and keeps the traceback
only for unexpected ones.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tritonkit import __version__
from tritonkit.errors import TritonkitError

# Each module has add_parser(subparsers); its handler forwards to one library function.
COMMAND_MODULES = (
    "export_cmd", "repo_cmd", "serve_cmd", "client_cmd", "demo_cmd",
    "publish_cmd", "versions_cmd", "release_cmd", "perf_cmd", "gateway_cmd", "deploy_cmd",
    "probe_cmd", "up_cmd",
)  # fmt: skip

EPILOG = """\
the path from a Hugging Face model to an API:
  tritonkit export onnx --model tiny-llama --output out/export      # verified ONNX + KV cache
  tritonkit repo build --export out/export --output out/repo        # Triton model repository
  tritonkit publish out/repo --container models --connection-string "$AZ"   # numbered versions
  tritonkit serve --repository out/repo                             # a real Triton server
  tritonkit generate "Hello" --url 127.0.0.1:8001 --stream          # call it from anywhere
  tritonkit perf --url 127.0.0.1:8001 --model llm --repository out/repo   # profile it
  tritonkit gateway --triton-url 127.0.0.1:8001                     # OpenAI-compatible API
or everything at once on this machine: tritonkit demo (ask once), tritonkit up MODEL (an API)
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tritonkit",
        description="Put a causal language model behind NVIDIA Triton Inference Server "
        "and call it from anywhere.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tritonkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tritonkit.cli.{name}").add_parser(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code.

    Raises:
        TritonkitError: whatever the command raises on purpose (``main`` prints it).
    """
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def main() -> None:
    """Console entry point."""
    try:
        code = run()
    except TritonkitError as exc:
        print(f"tritonkit: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("tritonkit: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
