"""``tritonkit versions list|promote|rollback``: in Blob, or on a running server."""

from __future__ import annotations

import argparse
from typing import Any

from tritonkit.errors import UsageError
from tritonkit.table import render

from .publish_cmd import add_location_args, human, store_from_args

HELP = """\
See and change which model version Triton serves.

In Azure Blob (--container ...): list shows every version (complete or not) and which
one MODEL/config.pbtxt serves; promote/rollback rewrite that config's version_policy
with an etag-conditional write (an entry model's decoder moves with it). A Triton that
reads the container (as://, poll mode) or the next `tritonkit pull` picks it up.

On a running server (--server HOST:GRPC_PORT, explicit model-control mode): promote and
rollback load the version with a version_policy override through the repository API;
Triton loads the new version before it unloads the old one, and requests in flight
finish on their version. The version's files must be in the server's repository.

examples:
  tritonkit versions list --container models --prefix tiny-llama
  tritonkit versions promote --model llm --version 2 --container models --prefix tiny-llama
  tritonkit versions rollback --model llm --container models --prefix tiny-llama
  tritonkit versions list --server 127.0.0.1:8001
  tritonkit versions promote --model llm --version 2 --server 127.0.0.1:8001
  tritonkit versions rollback --model llm --version 1 --server 127.0.0.1:8001
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "versions",
        help="list, promote or roll back model versions (Blob or a running server)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (
        ("list", "which versions exist and which one is served"),
        ("promote", "serve a version (default: the newest complete one)"),
        ("rollback", "serve the version before the current one (or --version)"),
    ):
        v = verbs.add_parser(
            verb, help=text, description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        v.add_argument(
            "--model", required=verb != "list", metavar="M", help="the model (list: optional)"
        )
        if verb != "list":
            v.add_argument("--version", type=int, metavar="N", help="the version to serve")
        v.add_argument(
            "--server", metavar="HOST:PORT", help="a running Triton's gRPC address, not Blob"
        )
        v.add_argument(
            "--triton-header",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="with --server: gRPC metadata for the repository API (repeatable); the "
            "admin key of a hardened server is read from $TRITON_ADMIN_KEY, so it need not "
            "be on the command line",
        )
        add_location_args(v, required=False)
        v.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if bool(args.server) == bool(args.container):
        raise UsageError("pass either --container (Blob) or --server HOST:PORT (a running Triton)")
    if args.server:
        return _on_server(args)
    from tritonkit.blob import list_versions, promote, rollback

    store = store_from_args(args)
    if args.verb == "list":
        rows = list_versions(store, [args.model] if args.model else None)
        table = [
            (
                r.model,
                r.version,
                "complete" if r.complete else "incomplete",
                "*" if r.served else "",
                human(r.size) if r.complete else "-",
                f"{r.published_at} {r.source}",
            )
            for r in rows
        ]
        print(
            render(
                ("model", "version", "state", "served", "size", "published"), table, align="lrllrl"
            )
        )
        return 0
    switch = promote if args.verb == "promote" else rollback
    for s in switch(store, args.model, args.version):
        print(f"{s.model}: serves {_fmt(s.before)} -> {_fmt(s.after)} in {store.where}")
    return 0


def _fmt(versions: list[int]) -> str:
    return ",".join(map(str, versions)) or "none"


def _on_server(args: argparse.Namespace) -> int:
    from tritonkit.blob import promote_on_server, rollback_on_server, server_versions
    from tritonkit.blob.live import admin_headers

    headers = admin_headers(args.triton_header)
    if args.verb == "list":
        rows = server_versions(args.server, args.model, headers)
        table = [(r.model, r.version, f"{r.state} {r.reason}".rstrip()) for r in rows]
        print(render(("model", "version", "state"), table, align="lrl"))
        return 0
    if args.verb == "promote":
        if args.version is None:
            raise UsageError("promote on a server needs --version N")
        s = promote_on_server(args.server, args.model, args.version, headers)
    else:
        s = rollback_on_server(args.server, args.model, args.version, headers)
    print(f"{s.model}: serves {_fmt(s.before)} -> {_fmt(s.after)} on {args.server}")
    return 0
