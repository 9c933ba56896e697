"""``tritonkit release create|list|verify``: forward to ``tritonkit.blob.release``."""

from __future__ import annotations

import argparse
from typing import Any

from tritonkit.table import render

from .publish_cmd import add_location_args, human, store_from_args

HELP = """\
Immutable releases of a model repository in Azure Blob Storage.

MODEL/config.pbtxt in Blob changes on every promote, so replicas that download the
prefix at different times can serve different versions. A release freezes what is
served now into PREFIX/releases/R/: a complete Triton model repository of exactly the
served versions (and the decoder versions entry models run), copied server-side inside
the account (no model bytes pass through this machine), each MODEL/config.pbtxt pinned
to `version_policy: { specific: { versions: [...] } }`, and release.json written last,
listing every file's size and SHA-256. A release is never changed or renumbered; one
without release.json is incomplete, and nothing pulls it.

create prints release.json's SHA-256: pin it. A deployment that downloads releases/R
(KServe storageUri https://ACCOUNT.blob.core.windows.net/C/PREFIX/releases/R, mounted
at /mnt/models) checks it before Triton starts: deploy/triton-entrypoint.sh runs
`tritonkit release verify` when TRITONKIT_RELEASE_SHA256 is set.

examples:
  tritonkit release create --container models --prefix tiny-llama \\
      --account-url https://myaccount.blob.core.windows.net --credential default
  tritonkit release create --container models --prefix tiny-llama --version 7
  tritonkit release list --container models --prefix tiny-llama
  tritonkit release verify /mnt/models --sha256 3f9a...e1
  tritonkit pull --container models --prefix tiny-llama --release 7 --output out/release-7
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "release",
        help="freeze what is served as an immutable release; list or verify releases",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    kw: dict[str, Any] = {
        "description": HELP,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    c = verbs.add_parser("create", help="copy the served versions into releases/R/", **kw)
    add_location_args(c)
    c.add_argument(
        "--version", type=int, metavar="N", help="number the release N (refused if N is in use; "
        "default: the next number)",
    )  # fmt: skip
    c.add_argument(
        "--model", action="append", metavar="M", help="only M (repeatable; the decoder "
        "versions it runs come along; default: every model serving a version)",
    )  # fmt: skip
    c.add_argument("--concurrency", type=int, default=8, help="copies in flight (default 8)")
    c.add_argument(
        "--verify-content", action="store_true", help="read every copy back and check its "
        "SHA-256 before the release is complete (the model's bytes pass through here once; "
        "pinned pods check the same SHA-256 before serving either way)",
    )  # fmt: skip
    c.set_defaults(handler=_create)
    ls = verbs.add_parser("list", help="every release: number, models, SHA-256, complete", **kw)
    add_location_args(ls)
    ls.set_defaults(handler=_list)
    v = verbs.add_parser("verify", help="check a downloaded release folder", **kw)
    v.add_argument("directory", metavar="DIR", help="the release folder (e.g. /mnt/models)")
    v.add_argument("--sha256", metavar="HEX", help="release.json must have this SHA-256")
    v.set_defaults(handler=_verify)


def _versions(models: dict[str, list[int]]) -> str:
    return " ".join(f"{m}:{','.join(map(str, vs))}" for m, vs in models.items())


def _create(args: argparse.Namespace) -> int:
    from tritonkit.blob import create_release

    r = create_release(
        store_from_args(args),
        models=args.model,
        number=args.version,
        concurrency=args.concurrency,
        verify_content=args.verify_content,
    )
    print(f"release {r.number}: {_versions(r.models)}")
    print(
        f"{r.files} files, {human(r.size)}: copied {human(r.bytes_copied)} server-side, sent "
        f"{human(r.bytes_written)} (pinned configs, manifests, release.json) in {r.seconds:.1f}s"
    )
    print(f"location:  {r.where}")
    print(f"storageUri: {r.storage_uri}")
    print(f"release.json SHA-256 (pin it: TRITONKIT_RELEASE_SHA256): {r.sha256}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from tritonkit.blob import list_releases

    store = store_from_args(args)
    rows = list_releases(store)
    if not rows:
        print(f"no releases in {store.where}; make one with `tritonkit release create`")
        return 0
    table = [
        (
            r.number,
            "complete" if r.complete else "incomplete",
            r.created_at or None,
            human(r.size) if r.complete else None,
            r.sha256 or None,
            _versions(r.models) or r.problem or None,
        )
        for r in rows
    ]
    headers = ("release", "state", "created", "size", "release.json SHA-256", "models")
    print(render(headers, table, align="rllrll"))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from tritonkit.blob import verify_release_dir

    r = verify_release_dir(args.directory, args.sha256)
    pinned = "its pinned SHA-256 and " if args.sha256 else ""
    print(
        f"{args.directory}: release {r.release} verified ({pinned}{len(r.files)} files, "
        f"{human(r.size)}): {_versions(r.models)}"
    )
    return 0
