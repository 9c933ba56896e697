"""``tritonkit publish`` and ``tritonkit pull``: forward to ``tritonkit.blob``."""

from __future__ import annotations

import argparse
from typing import Any

from tritonkit.errors import UsageError
from tritonkit.table import render

PUBLISH_HELP = """\
Upload a model repository to Azure Blob Storage as a new numeric version of each model
that changed. Publishing is idempotent: a model whose files (by SHA-256) and config equal
its latest published version's is reported unchanged and keeps that version, and nothing
of it is written (--force makes a new version anyway). An entry model whose decoder did
not change gets a new version whose decoder.json names the decoder's existing version, so
a tokenizer- or template-only change writes only the entry model's files.

Files go up in parallel blocks with a progress bar; each blob gets Content-MD5 and a
SHA-256; a file already in the container for that model is copied server-side instead.
A version becomes visible only when complete: MODEL/N/manifest.json is written last, then
MODEL/config.pbtxt (its version_policy) with an etag-conditional write. Concurrent
publishers get different version numbers; with --version N the loser gets an error.

credentials (one of):
  --connection-string S           or AZURE_STORAGE_CONNECTION_STRING
  --account-url URL --credential default   managed identity / az login (DefaultAzureCredential)
  --account-url URL --credential key       AZURE_STORAGE_KEY
  --account-url URL --credential sas       AZURE_STORAGE_SAS_TOKEN
  (--account-url defaults to AZURE_STORAGE_ACCOUNT_URL; a flag beats the environment)

examples:
  tritonkit publish out/repo --container models --prefix tiny-llama \\
      --account-url https://myaccount.blob.core.windows.net --credential default
  tritonkit publish out/repo --container models --prefix tiny-llama --no-promote
  tritonkit publish out/repo --container models --version 7 --model llm
  tritonkit publish out/repo --container models --prefix tiny-llama --force
"""

PULL_HELP = """\
Download complete versions (those with a manifest) of a model repository from Azure
Blob Storage, check every file's SHA-256, and write a repository Triton can serve.
An interrupted pull resumes (verified downloads are cached next to OUTPUT); a checksum
mismatch fails the pull and leaves OUTPUT as it was. A non-empty OUTPUT is refused
unless --force. An entry model's decoder versions come along.

With --release R it pulls the immutable release PREFIX/releases/R/ instead (see
`tritonkit release --help`): its pinned configs and files, each checked against
release.json, whose own SHA-256 --expect-release-sha256 pins.

examples:
  tritonkit pull --container models --prefix tiny-llama --output out/pulled
  tritonkit pull --container models --prefix tiny-llama --output out/release-3 --release 3
  tritonkit pull --container models --prefix tiny-llama --output out/pulled --model llm --version 2
then:
  tritonkit serve --repository out/pulled
"""


def add_location_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--container, --prefix and the credential options, shared with ``versions``."""
    g = p.add_argument_group("Blob location and credentials")
    g.add_argument("--container", required=required, metavar="C", help="Blob container")
    g.add_argument(
        "--prefix", default="", metavar="P", help="folder inside the container (default: root)"
    )
    g.add_argument(
        "--connection-string",
        metavar="S",
        help="storage connection string (default: $AZURE_STORAGE_CONNECTION_STRING)",
    )
    g.add_argument(
        "--account-url",
        metavar="URL",
        help="https://ACCOUNT.blob.core.windows.net (default: $AZURE_STORAGE_ACCOUNT_URL)",
    )
    g.add_argument(
        "--credential",
        default="default",
        choices=["default", "key", "sas"],
        help="with --account-url: default (managed identity, az login), key "
        "($AZURE_STORAGE_KEY) or sas ($AZURE_STORAGE_SAS_TOKEN)",
    )


def store_from_args(args: argparse.Namespace) -> Any:
    """A ``BlobStore`` from the shared options.

    Raises:
        UsageError: no account or credential given.
    """
    from tritonkit.blob import connect

    return connect(
        args.container,
        args.prefix,
        connection_string=args.connection_string,
        account_url=args.account_url,
        credential=args.credential,
    )


def human(n: float) -> str:
    """Bytes as B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="upload a model repository to Azure Blob as new model versions",
        description=PUBLISH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("repository", metavar="REPO", help="local model repository to publish")
    add_location_args(p)
    p.add_argument(
        "--model", action="append", metavar="M", help="publish only M (repeatable; its decoder "
        "comes along)",
    )  # fmt: skip
    p.add_argument(
        "--version", type=int, metavar="N", help="number the new versions N (unchanged "
        "models keep theirs unless --force)",
    )  # fmt: skip
    p.add_argument(
        "--force",
        action="store_true",
        help="publish a new version even of models equal to their latest version",
    )
    p.add_argument(
        "--no-promote",
        action="store_true",
        help="upload the version but keep serving the current one (promote it later)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument(
        "--create-container", action="store_true", help="create the container if missing"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_publish)

    q = sub.add_parser(
        "pull",
        help="download complete, verified model versions from Azure Blob",
        description=PULL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_location_args(q)
    q.add_argument("--output", required=True, metavar="REPO", help="local repository to write")
    q.add_argument("--model", action="append", metavar="M", help="only M (repeatable)")
    q.add_argument("--version", type=int, metavar="N", help="only version N (needs --model)")
    q.add_argument("--force", action="store_true", help="replace a non-empty OUTPUT")
    q.add_argument("--concurrency", type=int, default=8, help="downloads in flight (default 8)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument(
        "--expect-manifest-sha256",
        metavar="DIGEST",
        help="with --model and --version: pull only if that version's manifest has this "
        "SHA-256 (printed by an earlier pull), so a rewritten container cannot slip in code",
    )
    q.add_argument(
        "--release", type=int, metavar="R", help="pull the immutable release R "
        f"(PREFIX/releases/R/) instead of versions (default: ${RELEASE_ENV})",
    )  # fmt: skip
    q.add_argument(
        "--expect-release-sha256",
        metavar="DIGEST",
        help="with --release: pull only if its release.json has this SHA-256 (printed by "
        f"`tritonkit release create`; default: ${RELEASE_SHA256_ENV}). A release taken from "
        f"${RELEASE_ENV} must have it",
    )
    q.set_defaults(handler=_pull)


def _publish(args: argparse.Namespace) -> int:
    from tritonkit.blob import publish_repository

    result = publish_repository(
        args.repository,
        store_from_args(args),
        models=args.model,
        version=args.version,
        promote=not args.no_promote,
        force=args.force,
        concurrency=args.concurrency,
        create_container=args.create_container,
        progress=not args.quiet,
    )
    table = [
        (
            m.model,
            f"new v{m.version}" if m.changed else f"unchanged, keeping v{m.version}",
            m.files,
            human(m.size),
            human(m.stats.bytes_uploaded),
            human(m.stats.bytes_copied),
            ",".join(map(str, m.served)) or "-",
        )
        for m in result.models
    ]
    headers = ("model", "published", "files", "size", "uploaded", "copied", "serves")
    print(render(headers, table, align="llrrrrl"))
    s = result.stats
    new = len(result.models) - len(result.unchanged)
    if not new:
        print(
            f"\nnothing to publish to {result.where} ({result.seconds:.1f}s): every model "
            f"equals its latest version; wrote {human(s.bytes_written)} (--force makes new "
            "versions anyway)"
        )
        return 0
    rate = s.bytes_uploaded / result.seconds / 2**20 if result.seconds else 0.0
    speed = f", {rate:.1f} MiB/s" if s.bytes_uploaded >= 2**20 else ""
    print(
        f"\npublished to {result.where} in {result.seconds:.1f}s: {_count(new, 'new version')}, "
        f"{len(result.unchanged)} unchanged; wrote {human(s.bytes_written)}: uploaded "
        f"{human(s.bytes_uploaded)} ({_count(s.files_uploaded, 'file')}{speed}), copied "
        f"{human(s.bytes_copied)} server-side ({_count(s.files_copied, 'file')}), "
        f"{s.files_present} already in place, {human(s.bytes_metadata)} of manifests, "
        "configs and claims"
    )
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# compose's model-sync pins a release through these (MODEL_RELEASE, MODEL_RELEASE_SHA256 in
# .env); the second is the one the entrypoint checks too.
RELEASE_ENV = "TRITONKIT_RELEASE"
RELEASE_SHA256_ENV = "TRITONKIT_RELEASE_SHA256"


def _release_from_env(args: argparse.Namespace) -> None:
    """Fill --release and --expect-release-sha256 from the environment when not given.

    Raises:
        UsageError: a release from the environment that is not a number or has no pin.
    """
    import os

    release = os.environ.get(RELEASE_ENV, "").strip()
    if args.release is None and release:
        if not (release.isascii() and release.isdigit()):
            raise UsageError(f"${RELEASE_ENV} must be a release number, not {release!r}")
        args.release = int(release)
        if not (args.expect_release_sha256 or os.environ.get(RELEASE_SHA256_ENV, "").strip()):
            raise UsageError(
                f"${RELEASE_ENV}={release} has no pin: set ${RELEASE_SHA256_ENV} (MODEL_RELEASE"
                "_SHA256 in .env) to the SHA-256 `tritonkit release create` printed"
            )
    pin = os.environ.get(RELEASE_SHA256_ENV, "").strip()
    if args.release is None and pin and not args.model:
        raise UsageError(
            f"${RELEASE_SHA256_ENV} is set without a release: set ${RELEASE_ENV} (MODEL_RELEASE "
            "in .env) too, or unset both to pull the live versions"
        )
    if args.release is not None and not args.expect_release_sha256:
        args.expect_release_sha256 = pin or None


def _pull(args: argparse.Namespace) -> int:
    from tritonkit.blob import pull_repository

    _release_from_env(args)
    if args.release is not None or args.expect_release_sha256:
        return _pull_release(args)
    result = pull_repository(
        store_from_args(args),
        args.output,
        models=args.model,
        version=args.version,
        force=args.force,
        concurrency=args.concurrency,
        progress=not args.quiet,
        expect_manifest_sha256=args.expect_manifest_sha256,
    )
    table = [
        (model, ",".join(map(str, versions)), ",".join(map(str, result.served[model])))
        for model, versions in result.versions.items()
    ]
    print(render(("model", "versions", "serves"), table, align="lrl"))
    print("\npin a version with --expect-manifest-sha256:")
    print(render(("version", "manifest SHA-256"), sorted(result.manifest_sha256.items())))
    for note in result.notes:
        print(f"note: {note}")
    print(
        f"\npulled {result.files} files into {result.output} in {result.seconds:.1f}s: "
        f"downloaded {human(result.bytes_downloaded)}, reused {result.files_reused} files, "
        "every SHA-256 checked"
    )
    print(f"next: tritonkit serve --repository {result.output}")
    return 0


def _pull_release(args: argparse.Namespace) -> int:
    from tritonkit.blob import pull_release

    if args.release is None:
        raise UsageError("--expect-release-sha256 goes with --release R")
    if args.model or args.version is not None or args.expect_manifest_sha256:
        raise UsageError(
            "--release pulls a whole release: leave out --model, --version and "
            "--expect-manifest-sha256"
        )
    result = pull_release(
        store_from_args(args),
        args.output,
        args.release,
        force=args.force,
        concurrency=args.concurrency,
        progress=not args.quiet,
        expect_sha256=args.expect_release_sha256,
    )
    table = [(model, ",".join(map(str, vs))) for model, vs in result.versions.items()]
    print(render(("model", "versions"), table, align="lr"))
    print(
        f"\npulled release {result.release} ({result.files} files) into {result.output} in "
        f"{result.seconds:.1f}s: downloaded {human(result.bytes_downloaded)}, reused "
        f"{result.files_reused} files, every SHA-256 checked against release.json"
    )
    print(f"release.json SHA-256: {result.release_sha256}")
    print(f"next: tritonkit serve --repository {result.output}")
    return 0
