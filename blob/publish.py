"""``publish_repository``: a local model repository -> a new version of each changed model.

Publishing is idempotent. Each model is compared by content with its latest published
version (``changes.py``: file SHA-256s from the manifest, and the config); a model equal
to it keeps that version and nothing of it is written, unless ``force``. For the models
that changed, the order makes a version visible all at once or not at all:

1. validate the local repository; compare; claim version N of each changed model
   (``claims.py``), decoders first;
2. upload every file in parallel, or copy it server-side when a file with the same
   SHA-256 is already in the container for that model, or skip it when it is already
   at its destination; verify each blob (size, SHA-256 metadata, Content-MD5);
3. per model, decoders first: write ``MODEL/N/manifest.json`` (only if absent), then
   update ``MODEL/config.pbtxt`` with an etag-conditional write (``versions.py``).

An entry model's ``N/decoder.json`` is rewritten to name the decoder version it runs:
the new one when the decoder changed, else the decoder's kept latest version. So a
tokenizer- or template-only change writes only the entry model's version (its unchanged
files copied server-side, no weights), and re-publishing an unchanged repository writes
nothing at all.
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
from tritonkit.core import layout
from tritonkit.errors import RepositoryError, UsageError

from ._parallel import run_all
from .changes import Latest, hash_if_comparable, latest, same_content
from .claims import VersionClaim, claim_version, publisher_identity
from .manifest import (
    MANIFEST,
    RELEASES,
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
    """One model after a publish: a new version, or its latest version kept unchanged."""

    model: str
    version: int  # the new version, or the kept one
    files: int
    size: int
    served: list[int]  # what config.pbtxt serves after the publish
    changed: bool = True  # False: equal to its latest version, which it keeps
    previous: int | None = None  # its latest version before this publish, if any
    stats: Stats = field(default_factory=Stats)  # what this publish wrote for it


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

    @property
    def bytes_written(self) -> int:
        """Storage written in the container: uploads, server-side copies and metadata."""
        return self.stats.bytes_written

    @property
    def unchanged(self) -> list[PublishedModel]:
        return [m for m in self.models if not m.changed]


@dataclass
class _Plan:
    """One model on its way through a publish."""

    model: LocalModel
    items: list[Item]  # dest (model, version, path); the version is set once claimed
    latest: Latest | None  # its highest complete version in the container
    version: int = 0  # claimed, or kept
    claim: VersionClaim | None = None  # None: unchanged, the latest version is kept


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
    if RELEASES in every:
        raise RepositoryError(
            f"{repository} has a model named {RELEASES!r}: that folder holds releases in "
            "Blob (`tritonkit release`); rename the model"
        )
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


def _items(model: LocalModel) -> list[Item]:
    """The files of the model's local version (all but decoder.json, see ``_decoder_item``)."""
    items = []
    for rel in model.files:
        if rel.as_posix() != layout.DECODER_REF:
            path = model.version_dir / rel
            items.append(Item((model.name, 0, rel.as_posix()), path.stat().st_size, local=path))
    return items


def _decoder_item(model: LocalModel, ref: dict[str, Any], version: int) -> Item:
    """The entry model's decoder.json, naming decoder ``version`` (as published)."""
    # the graph file too: a TensorRT entry model runs model.plan, not model.onnx
    ref_out = layout.DecoderRef(ref["model"], version, ref.get("file", layout.ONNX_FILE))
    data = layout.decoder_ref_text(ref_out).encode()
    return Item((model.name, 0, layout.DECODER_REF), len(data), data=data, digests=hash_bytes(data))


def publish_repository(
    repository: str | Path,
    store: BlobStore,
    *,
    models: list[str] | None = None,
    version: int | None = None,
    promote: bool = True,
    force: bool = False,
    concurrency: int = 8,
    create_container: bool = False,
    progress: bool = False,
) -> PublishResult:
    """Publish a new version of each model (or of the named ones) that changed.

    A model whose files and config equal its latest published version's (by SHA-256,
    see ``changes.py``) keeps that version and nothing of it is written; ``force``
    makes a new version anyway. ``version`` asks for that exact number for the new
    versions (a conflict if taken). ``promote`` makes config.pbtxt serve the published
    version (new or kept) unless it already serves a newer one.

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
    plans = [_Plan(m, _items(m), latest(remote[m.name])) for m in local]
    if not force:  # what is shaped like its latest version must be hashed to compare
        hash_if_comparable([(p.items, p.latest) for p in plans], min(4, concurrency))
    try:
        _decide(store, remote, plans, publisher, version, force)
        changed = {p.model.name: p.items for p in plans if p.claim}
        stats, by_model = _transfer(store, remote, changed, concurrency, progress)
        exports = {m.name: m.export_report() for m in local}
        for m in local:  # a decoder carries the export report of the entry that runs it
            ref = m.decoder_ref()
            if ref and exports.get(ref["model"]) is None and ref["model"] in exports:
                exports[ref["model"]] = exports[m.name]
        published = []
        for p in plans:  # decoders first, each with its manifest before its config
            if p.claim is None:
                published.append(_keep(store, p, remote[p.model.name], promote, stats))
            else:
                mine = by_model.setdefault(p.model.name, Stats())
                published.append(
                    _commit(store, p, promote, publisher, repository, exports[p.model.name],
                            stats, mine)
                )  # fmt: skip
    finally:
        for p in plans:
            if p.claim is not None:
                p.claim.release()
    return PublishResult(store.where, published, stats, time.monotonic() - started, publisher)


def _decide(
    store: BlobStore,
    remote: dict[str, RemoteModel],
    plans: list[_Plan],
    publisher: dict[str, Any],
    requested: int | None,
    force: bool,
) -> None:
    """Keep the latest version of each unchanged model; claim a new one for the others.

    In order, decoders first, so that an entry model's decoder.json names the version its
    decoder ends up with: an unchanged decoder's kept version, or its new one (which makes
    the entry model change too).

    Raises:
        VersionConflict: ``requested`` is taken, or no version could be claimed.
        BlobError: the container refused the requests.
    """
    versions: dict[str, int] = {}  # model -> the version it has after this publish
    for p in plans:
        ref = p.model.decoder_ref()
        if ref:
            target = versions.get(ref["model"], ref["version"])
            p.items.append(_decoder_item(p.model, ref, target))
        if not force and p.latest and same_content(p.items, p.model.config, p.latest):
            p.version = p.latest.version
        else:
            p.claim = claim_version(store, remote[p.model.name], publisher, requested)
            p.version = p.claim.version
            for item in p.items:
                item.dest = (p.model.name, p.version, item.dest[2])
        versions[p.model.name] = p.version


def _transfer(
    store: BlobStore,
    remote: dict[str, RemoteModel],
    plan: dict[str, list[Item]],
    concurrency: int,
    progress: bool,
) -> tuple[Stats, dict[str, Stats]]:
    """Upload, copy or skip every item, then verify it and drop stale blobs.

    Returns what was moved, in all and per model. An empty ``plan`` makes no request.

    Raises:
        BlobError: a request failed, or a blob did not land as sent.
    """
    if not plan:
        return Stats(), {}
    known, sizes = _published_contents(store, remote)
    present = _claimed_blobs(store, plan)
    sizes |= {size for size, _ in present.values()}
    every = [item for items in plan.values() for item in items]
    _hash_possible_duplicates(every, sizes, concurrency)
    kinds = {id(i): _kind(store, i, known, present) for i in every}
    uploader = _move(store, every, kinds, known, concurrency, progress)
    uploader.verify(every)
    _drop_stale(store, plan, present, {store.name(*i.dest) for i in every})
    return uploader.stats, uploader.by_model


def _published_contents(
    store: BlobStore, remote: dict[str, RemoteModel]
) -> tuple[dict[str, str], set[int]]:
    """Every complete version's files: SHA-256 -> a blob holding it, and the sizes seen."""
    known: dict[str, str] = {}
    sizes: set[int] = set()
    for name, rm in remote.items():
        for v in rm.complete:
            manifest = rm.versions[v].manifest
            assert manifest is not None
            for f in manifest.files:
                known.setdefault(f.sha256, store.name(name, v, f.path))
                sizes.add(f.size)
    return known, sizes


def _claimed_blobs(store: BlobStore, plan: dict[str, list[Item]]) -> dict[str, tuple[int, str]]:
    """What already lies in the claimed version folders: blob name -> (size, SHA-256)."""
    present: dict[str, tuple[int, str]] = {}
    for items in plan.values():
        folder = store.name(items[0].dest[0], items[0].dest[1]) + "/"
        with store.translate(f"list {folder}"):
            for b in store.client.list_blobs(name_starts_with=folder, include=["metadata"]):
                present[b.name] = (b.size, (b.metadata or {}).get(SHA_META, ""))
    return present


def _hash_possible_duplicates(every: list[Item], sizes: set[int], concurrency: int) -> None:
    """Hash only the files whose size matches a blob already there: the others are new."""
    maybe_known = [i for i in every if i.digests is None and i.size in sizes]
    with ThreadPoolExecutor(min(4, concurrency)) as pool:
        for item, digests in zip(maybe_known, pool.map(lambda i: hash_file(i.local), maybe_known)):
            item.digests = digests


def _kind(
    store: BlobStore, item: Item, known: dict[str, str], present: dict[str, tuple[int, str]]
) -> str:
    """``present`` (already in place), ``copy`` (server-side, from an equal blob) or
    ``upload``."""
    if item.digests is None:
        return "upload"
    if present.get(store.name(*item.dest)) == (item.size, item.digests.sha256):
        return "present"
    return "copy" if item.digests.sha256 in known else "upload"


def _move(
    store: BlobStore,
    every: list[Item],
    kinds: dict[int, str],
    known: dict[str, str],
    concurrency: int,
    progress: bool,
) -> Uploader:
    """Move every item the way ``kinds`` says, biggest first, with a progress bar of the
    bytes uploaded; a copy the account refuses is uploaded instead.

    Raises:
        BlobError: a request failed.
    """
    from tqdm import tqdm

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
    return uploader


def _drop_stale(
    store: BlobStore,
    plan: dict[str, list[Item]],
    present: dict[str, tuple[int, str]],
    wanted: set[str],
) -> None:
    """Delete blobs an interrupted publish of the same version left that are not wanted."""
    for items in plan.values():
        folder = store.name(items[0].dest[0], items[0].dest[1]) + "/"
        for stale in [n for n in present if n.startswith(folder) and n not in wanted]:
            store.delete(store.relative(stale))


def _commit(
    store: BlobStore,
    plan: _Plan,
    promote: bool,
    publisher: dict[str, object],
    repository: Path,
    export: dict[str, Any] | None,
    stats: Stats,
    mine: Stats,
) -> PublishedModel:
    """Write the manifest (last file of the version), then serve it through config.pbtxt.

    Raises:
        VersionConflict: the claim was lost, or config.pbtxt kept changing.
        BlobError: the container refused a write.
    """
    from tritonkit.model_repository import config as cfg

    model, claim, items = plan.model, plan.claim, plan.items
    assert claim is not None
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
        decoder=model.decoder_ref() and json.loads(_data(items, layout.DECODER_REF)),
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
    served, config_written = _serve(store, model.name, version, config_text, promote, None)
    written = claim.written + len(data) + config_written
    for s in (stats, mine):
        s.add(bytes_metadata=written)
    return PublishedModel(
        model.name, version, len(files), manifest.size, served, True,
        plan.latest.version if plan.latest else None, mine,
    )  # fmt: skip


def _keep(
    store: BlobStore, plan: _Plan, remote: RemoteModel, promote: bool, stats: Stats
) -> PublishedModel:
    """An unchanged model keeps its latest version, served like a new one would be.

    With ``promote`` config.pbtxt serves the kept version unless a newer one is served
    already (after a ``--no-promote`` publish of the same files, say); usually nothing is
    written at all.

    Raises:
        VersionConflict: config.pbtxt kept changing under us.
        BlobError: the container refused a request.
    """
    last = plan.latest
    assert last is not None
    mine = Stats()
    served, written = _serve(
        store, plan.model.name, last.version, last.manifest.config, promote, remote
    )
    for s in (stats, mine):
        s.add(bytes_metadata=written)
    return PublishedModel(
        plan.model.name, last.version, len(last.manifest.files), last.manifest.size, served,
        False, last.version, mine,
    )  # fmt: skip


def _serve(
    store: BlobStore,
    model: str,
    version: int,
    config_text: str,
    promote: bool,
    known: RemoteModel | None,
) -> tuple[list[int], int]:
    """Make config.pbtxt serve ``version`` when it should; returns (served, bytes written).

    A model without a config always gets one (Triton needs it); otherwise only with
    ``promote``, and only when no newer version is served. ``known``: a recent read of
    the model, which spares the re-read when it shows nothing to do.

    Raises:
        VersionConflict: config.pbtxt kept changing under us.
        BlobError: the container refused a request.
    """
    served: list[int] = []

    def decide(remote: RemoteModel) -> str | None:
        served[:] = remote.served
        if remote.config_text is None:
            return config_text  # a first version is always served: Triton needs a config
        if not promote or (remote.served and max(remote.served) >= version):
            return None  # staged only, or this or a newer version is served already
        return config_text

    if known is not None and decide(known) is None:
        return served, 0
    switch = commit_config(store, model, decide)
    return (switch.after, len(config_text.encode())) if switch else (served, 0)


def _data(items: list[Item], path: str) -> bytes:
    return next(i.data for i in items if i.dest[2] == path and i.data is not None)
