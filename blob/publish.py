"""``publish_repository``: a local model repository -> a new version of each model in Blob.

The order makes a version visible all at once or not at all:

1. validate the local repository; claim version N of each model (``claims.py``);
2. upload every file in parallel, or copy it server-side when a file with the same
   SHA-256 is already in the container for that model, or skip it when it is already
   at its destination; verify each blob (size, SHA-256 metadata, Content-MD5);
3. per model, decoders first: write ``MODEL/N/manifest.json`` (only if absent), then
   update ``MODEL/config.pbtxt`` with an etag-conditional write (``versions.py``).

An entry model's ``N/decoder.json`` is rewritten to name the decoder version published
with it, and its manifest hashes the rewritten bytes. Re-publishing an unchanged
repository copies every file server-side and uploads 0 bytes.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tritonkit import __version__
from tritonkit.errors import RepositoryError, UsageError

from ._parallel import run_all
from .claims import VersionClaim, claim_version, publisher_identity
from .manifest import (
    DECODER_REF,
    MANIFEST,
    FileEntry,
    LocalModel,
    Manifest,
    hash_bytes,
    hash_file,
    scan_repository,
)
from .remote import RemoteModel, read_models
from .store import BlobStore
from .upload import SHA_META, Item, Stats, Uploader
from .versions import commit_config, with_policy


@dataclass
class PublishedModel:
    """One model's new version."""

    model: str
    version: int
    files: int
    size: int
    served: list[int]  # what config.pbtxt serves after the publish


@dataclass
class PublishResult:
    """What ``publish_repository`` did."""

    where: str
    models: list[PublishedModel]
    stats: Stats
    seconds: float
    publisher: dict[str, object] = field(default_factory=dict)

    @property
    def bytes_uploaded(self) -> int:
        return self.stats.bytes_uploaded


def _select(repository: Path, models: list[str] | None) -> list[LocalModel]:
    """The models to publish: the named ones plus the decoders they run; decoders first."""
    from tritonkit.model_repository import validate_repository

    report = validate_repository(repository)
    if not report.ok:
        f = report.failures[0]
        raise RepositoryError(
            f"{repository} does not validate ({f.model}: {f.check} {f.detail}".rstrip()
            + f"); run `tritonkit repo validate {repository}`"
        )
    every = {m.name: m for m in scan_repository(repository)}
    names = list(models or every)
    missing = [m for m in names if m not in every]
    if missing:
        raise RepositoryError(f"{repository} has no model {', '.join(missing)}")
    for name in list(names):
        ref = every[name].decoder_ref()
        if ref and ref["model"] in every and ref["model"] not in names:
            names.append(ref["model"])
    decoders = {r["model"] for n in names if (r := every[n].decoder_ref())}
    return sorted((every[n] for n in names), key=lambda m: (m.name not in decoders, m.name))


def _items(model: LocalModel, version: int, decoders: dict[str, int]) -> list[Item]:
    items = []
    for rel in model.files:
        dest = (model.name, version, rel.as_posix())
        if rel.as_posix() == DECODER_REF:
            ref = model.decoder_ref()
            assert ref is not None
            ref["version"] = decoders.get(ref["model"], ref["version"])
            data = (json.dumps(ref, indent=2) + "\n").encode()
            items.append(Item(dest, len(data), data=data, digests=hash_bytes(data)))
        else:
            path = model.version_dir / rel
            items.append(Item(dest, path.stat().st_size, local=path))
    return items


def publish_repository(
    repository: str | Path,
    store: BlobStore,
    *,
    models: list[str] | None = None,
    version: int | None = None,
    promote: bool = True,
    concurrency: int = 8,
    create_container: bool = False,
    progress: bool = False,
) -> PublishResult:
    """Upload the repository as a new version of each model (or of the named ones).

    ``version`` asks for that exact number (a conflict if taken); ``promote`` makes
    config.pbtxt serve the new version unless it already serves a newer one.

    Raises:
        UsageError: bad arguments.
        RepositoryError: the repository is missing or does not validate.
        VersionConflict: ``version`` is taken, or another publisher won a race.
        BlobAuthError, ContainerNotFound, BlobError: what the account answered.
    """
    started = time.monotonic()
    repository = Path(repository).expanduser().resolve()
    if concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {concurrency}")
    if version is not None and version < 1:
        raise UsageError(f"--version must be >= 1, got {version}")
    local = _select(repository, models)
    store.check(create=create_container)
    remote = read_models(store, [m.name for m in local])
    publisher = publisher_identity()
    claims: list[VersionClaim] = []
    try:
        for m in local:
            claims.append(claim_version(store, remote[m.name], publisher, version))
        versions = {c.model: c.version for c in claims}
        plan = {m.name: _items(m, versions[m.name], versions) for m in local}
        stats = _transfer(store, remote, plan, concurrency, progress)
        exports = {m.name: m.export_report() for m in local}
        for m in local:  # a decoder carries the export report of the entry that runs it
            ref = m.decoder_ref()
            if ref and exports.get(ref["model"]) is None and ref["model"] in exports:
                exports[ref["model"]] = exports[m.name]
        published = []
        for m, claim in zip(local, claims):
            published.append(
                _commit(store, m, claim, plan[m.name], promote, publisher, repository,
                        exports[m.name], stats)
            )  # fmt: skip
    finally:
        for claim in claims:
            claim.release()
    return PublishResult(store.where, published, stats, time.monotonic() - started, publisher)


def _transfer(
    store: BlobStore,
    remote: dict[str, RemoteModel],
    plan: dict[str, list[Item]],
    concurrency: int,
    progress: bool,
) -> Stats:
    """Upload, copy or skip every item, then verify it and drop stale blobs."""
    from tqdm import tqdm

    known: dict[str, str] = {}  # sha256 -> a blob (full name) with that content
    sizes: set[int] = set()
    for name, rm in remote.items():
        for v in rm.complete:
            manifest = rm.versions[v].manifest
            assert manifest is not None
            for f in manifest.files:
                known.setdefault(f.sha256, store.name(name, v, f.path))
                sizes.add(f.size)
    present: dict[str, tuple[int, str]] = {}  # in the claimed folders: name -> (size, sha)
    for items in plan.values():
        model, version = items[0].dest[0], items[0].dest[1]
        folder = store.name(model, version) + "/"
        with store.translate(f"list {folder}"):
            for b in store.client.list_blobs(name_starts_with=folder, include=["metadata"]):
                present[b.name] = (b.size, (b.metadata or {}).get(SHA_META, ""))
                sizes.add(b.size)
    every = [item for items in plan.values() for item in items]
    maybe_known = [i for i in every if i.digests is None and i.size in sizes]
    with ThreadPoolExecutor(min(4, concurrency)) as pool:  # only what may be a duplicate
        for item, digests in zip(maybe_known, pool.map(lambda i: hash_file(i.local), maybe_known)):
            item.digests = digests

    def kind(item: Item) -> str:
        if item.digests is None:
            return "upload"
        if present.get(store.name(*item.dest)) == (item.size, item.digests.sha256):
            return "present"
        return "copy" if item.digests.sha256 in known else "upload"

    kinds = {id(i): kind(i) for i in every}
    total = sum(i.size for i in every if kinds[id(i)] == "upload")
    bar = tqdm(
        total=total,
        desc="publish",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=None if progress else True,
    )

    def on_bytes(n: int) -> None:
        bar.update(n)

    uploader = Uploader(store, concurrency, on_bytes=on_bytes)

    def move(item: Item) -> None:
        k = kinds[id(item)]
        if k == "present":
            uploader.present(item)
        elif not (k == "copy" and item.digests and uploader.copy(item, known[item.digests.sha256])):
            if k == "copy":  # the account refused the copy: upload after all
                bar.total = (bar.total or 0) + item.size
            item.digests = uploader.upload(item)

    try:
        run_all(move, sorted(every, key=lambda i: -i.size), concurrency, "tritonkit-file")
    finally:
        uploader.close()
        bar.close()
    uploader.verify(every)
    wanted = {store.name(*i.dest) for i in every}
    for items in plan.values():
        folder = store.name(items[0].dest[0], items[0].dest[1]) + "/"
        for stale in [n for n in present if n.startswith(folder) and n not in wanted]:
            store.delete(store.relative(stale))  # left by an interrupted publish of N
    return uploader.stats


def _commit(
    store: BlobStore,
    model: LocalModel,
    claim: VersionClaim,
    items: list[Item],
    promote: bool,
    publisher: dict[str, object],
    repository: Path,
    export: dict[str, Any] | None,
    stats: Stats,
) -> PublishedModel:
    """Write the manifest (last file of the version), then serve it through config.pbtxt."""
    from tritonkit.model_repository import config as cfg

    version = claim.version
    files = []
    for i in sorted(items, key=lambda i: str(i.dest[2])):
        assert i.digests is not None
        files.append(FileEntry(str(i.dest[2]), i.size, i.digests.sha256, i.digests.md5))
    config_text = with_policy(cfg.to_text(model.config), [version], str(model.folder))
    manifest = Manifest(
        model=model.name,
        version=version,
        files=files,
        config=config_text,
        published_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tritonkit_version=__version__,
        decoder=model.decoder_ref() and json.loads(_data(items, DECODER_REF)),
        export=export,
        source={
            "model": (export or {}).get("source"),
            "repository": str(repository),
            "local_version": model.version,
            "host": socket.gethostname(),
            "publisher": publisher.get("id"),
        },
    )
    claim.ensure_held()
    data = manifest.to_json()
    store.write(data, model.name, version, MANIFEST, create_only=True)
    stats.bytes_metadata += len(data) + len(config_text)

    served: list[int] = []

    def decide(remote: RemoteModel) -> str | None:
        served[:] = remote.served
        if remote.config_text is None:
            return config_text  # a first version is always served: Triton needs a config
        if not promote or (remote.served and max(remote.served) >= version):
            return None  # staged only, or a newer version is served already
        return config_text

    switch = commit_config(store, model.name, decide)
    return PublishedModel(
        model.name, version, len(files), manifest.size, switch.after if switch else served
    )


def _data(items: list[Item], path: str) -> bytes:
    return next(i.data for i in items if i.dest[2] == path and i.data is not None)
