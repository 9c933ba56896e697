"""``tritonkit generate``, ``health`` and ``models``: forward to ``tritonkit.client.LLMClient``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tritonkit.errors import UsageError

GENERATE_HELP = """\
Send a prompt to the LLM on a Triton server and print the answer. Over gRPC (default,
port 8001) the request is a stream; over HTTP (port 8000) it uses Triton's generate
extension. Without --stream the model returns the prompt followed by the completion.
With --stream the completion's pieces print as they arrive. A stats line (time to first
token, tokens/s) goes to stderr; --json prints the whole result as JSON instead.

With --chat the prompt is one user message (after --system, if given), rendered with
the model's own chat template, which the client reads from the served model's config;
only the answer is printed.

examples:
  tritonkit generate "What is the capital of France?" --chat --stream
  tritonkit generate "Responda em português: qual é a capital do Brasil?" --chat \
      --system "You are terse." --max-tokens 32
  tritonkit generate "The capital of France is" --max-tokens 16
  tritonkit generate "Once upon a time" --stream --temperature 0.8 --top-p 0.95 --seed 1
  tritonkit generate "List three colors:" --url 127.0.0.1:8000 --protocol http --json
  tritonkit generate "Q: 2+2? A:" --stop "Q:" --max-tokens 8

constrained output (the engine masks every token the constraint does not allow):
  tritonkit generate "A user record for Ada, 36:" --chat --guided-json @user.schema.json
  tritonkit generate "Is the sky blue?" --chat --guided-choice yes --guided-choice no
  tritonkit generate "Today's date:" --guided-regex "[0-9]{4}-[0-9]{2}-[0-9]{2}"
  tritonkit generate "The capital of France is" --logprobs 3 --max-tokens 4

Every flag after --model is one of the model's request inputs; --guided-json,
--guided-regex, --guided-grammar and --logit-bias take @FILE to read the text from a file.
"""

# The request inputs the CLI does not take as flags: the prompt, and what other flags set.
_NOT_FLAGS = ("text_input", "stream", "exclude_input_in_output", "sampling_parameters")

HEALTH_HELP = """\
Ask a Triton server whether it is live and ready (and, with --model, whether that model
is ready). Exits 0 when ready, 1 otherwise or when nothing answers.

examples:
  tritonkit health
  tritonkit health --url 127.0.0.1:8000 --protocol http --model llm
"""

MODELS_HELP = """\
List the models of a Triton server's repository with their versions and states
(READY, UNAVAILABLE with the reason, ...).

examples:
  tritonkit models
  tritonkit models --url 127.0.0.1:8000 --protocol http
"""


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        metavar="HOST:PORT",
        help="server address (default 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http)",
    )
    p.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="default grpc")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="default 120")


def add_parser(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    g = sub.add_parser(
        "generate",
        help="send a prompt to a served LLM",
        description=GENERATE_HELP,
        formatter_class=fmt,
    )
    g.add_argument("prompt", metavar="PROMPT")
    _connection_args(g)
    g.add_argument("--model", default="llm", help="model name (default llm)")
    for dest, t in request_flags().items():  # one flag per declared request input
        flag = "--" + dest.replace("_", "-")
        if t.datatype == "BYTES" and t.dims == (-1,):
            g.add_argument(flag, action="append", metavar="TEXT", help=f"{t.meaning} (repeat)")
        elif t.datatype == "BYTES":
            g.add_argument(flag, metavar="TEXT|@FILE", help=t.meaning)
        else:
            kind = float if t.datatype.startswith("FP") else int
            g.add_argument(flag, type=kind, metavar="X" if kind is float else "N", help=t.meaning)
    g.add_argument("--exclude-input", action="store_true", help="print only the completion")
    g.add_argument(
        "--chat",
        action="store_true",
        help="send PROMPT as a user message through the model's chat template",
    )
    g.add_argument("--system", metavar="TEXT", help="with --chat: a system message first")
    g.add_argument("--stream", action="store_true", help="print pieces as they arrive")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(handler=_generate)

    h = sub.add_parser(
        "health",
        help="is a Triton server live and ready",
        description=HEALTH_HELP,
        formatter_class=fmt,
    )
    _connection_args(h)
    h.add_argument("--model", help="also check that this model is ready")
    h.set_defaults(handler=_health)

    m = sub.add_parser(
        "models", help="list a Triton server's models", description=MODELS_HELP, formatter_class=fmt
    )
    _connection_args(m)
    m.set_defaults(handler=_models)


def request_flags() -> dict[str, Any]:
    """{argparse dest: the declared input it sets}, for every input the CLI takes
    (``stop_words`` is ``--stop``; aliases are left out)."""
    from tritonkit.core.interface import ENTRY_INPUTS

    return {
        ("stop" if t.name == "stop_words" else t.name): t
        for t in ENTRY_INPUTS
        if t.alias_of is None and t.name not in _NOT_FLAGS
    }


def _flag_value(value: Any) -> Any:
    """A flag's value, ``@FILE`` read from the file.

    Raises:
        UsageError: the file cannot be read.
    """
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    try:
        with open(value[1:], encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {value[1:]}: {exc.strerror or exc}") from exc


def _client(args: argparse.Namespace) -> Any:
    from tritonkit.client import LLMClient

    model = getattr(args, "model", None) or "llm"
    return LLMClient(args.url, protocol=args.protocol, model=model, timeout=args.timeout)


def _stats(result: Any) -> str:
    parts = []
    if result.time_to_first_token_s is not None:
        parts.append(f"first token {result.time_to_first_token_s * 1000:.0f} ms")
    if result.num_output_tokens is not None:
        parts.append(f"{result.num_output_tokens} tokens in {result.latency_s:.2f} s")
    if result.tokens_per_s is not None:
        parts.append(f"{result.tokens_per_s:.1f} tokens/s")
    parts.append(f"finish: {result.finish_reason or '?'}")
    line = " · ".join(parts)
    return f"\x1b[2m{line}\x1b[0m" if sys.stderr.isatty() else line


def _generate(args: argparse.Namespace) -> int:
    params = {dest: _flag_value(getattr(args, dest)) for dest in request_flags()}
    params = {k: v for k, v in params.items() if v is not None}
    params["exclude_input_in_output"] = args.exclude_input

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    on_text = show if args.stream and not args.json else None
    if args.stream and on_text is None:
        on_text = _ignore
    if args.system is not None and not args.chat:
        raise UsageError("--system goes with --chat")
    with _client(args) as client:
        if args.chat:
            messages = [{"role": "user", "content": args.prompt}]
            if args.system is not None:
                messages.insert(0, {"role": "system", "content": args.system})
            result = client.chat(messages, on_text=on_text, **params)
        else:
            result = client.generate(args.prompt, on_text=on_text, **params)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if result.choices and not args.stream:  # n > 1: every choice, numbered
        for choice in result.choices:
            print(f"[{choice.index}] {choice.text}")
    else:
        print("" if args.stream else result.text)
    if result.logprobs is not None:
        print(_logprob_table(result.logprobs), file=sys.stderr)
    print(_stats(result), file=sys.stderr)
    return 0


def _logprob_table(entries: Any) -> str:
    """One line per token: the token, its logprob and the alternatives the model sent."""
    lines = []
    for e in entries:
        alternatives = "  ".join(f"{t['token']!r} {t['logprob']:.3f}" for t in e["top_logprobs"])
        lines.append(f"{e['token']!r:>16} {e['logprob']:8.3f}   {alternatives}".rstrip())
    return "\n".join(lines)


def _ignore(piece: str) -> None:
    """Streams without printing: --stream --json measures a streamed generation."""


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        live = client.is_live()
        ready = client.is_ready()
        print(f"server {args.url or client.url}: live={_yes(live)} ready={_yes(ready)}")
        model_ok = True
        if args.model:
            model_ok = client.is_model_ready(args.model)
            print(f"model {args.model}: ready={_yes(model_ok)}")
    return 0 if live and ready and model_ok else 1


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.models()
    rows = [("MODEL", "VERSION", "STATE", "REASON")]
    rows += [(m.name, m.version or "-", m.state or "-", m.reason) for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]}".rstrip())
    if not models:
        print("(no models in the repository)", file=sys.stderr)
    return 0
