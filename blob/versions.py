"""Which version Triton serves from Blob: list, promote and roll back.

Serving is ``MODEL/config.pbtxt``'s ``version_policy``, and every change to that blob
is an etag-conditional write (``If-Match``, or ``If-None-Match: *`` for the first one):
two writers cannot both win, and the loser re-reads and decides again. Promoting an
entry model also moves its decoder to the version its manifest names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tritonkit.errors import NothingPublished, VersionConflict

from .manifest import CONFIG, MANIFEST, Manifest
from .remote import RemoteModel, read_models, require_models
from .store import BlobStore

CONFIG_RETRIES = 8


@dataclass(frozen=True)
class VersionRow:
    """One line of ``tritonkit versions list``."""

    model: str
    version: int
    complete: bool
    served: bool
    published_at: str = ""
    size: int = 0
    files: int = 0
    source: str = ""


@dataclass(frozen=True)
class Switch:
    """A change of the served version of one model."""

    model: str
    before: list[int]
    after: list[int]


def with_policy(config_text: str, versions: list[int], where: str) -> str:
    """``config_text`` re-written through the ModelConfig protobuf to serve ``versions``.

    Raises:
        RepositoryError: the text is not a valid config.
    """
    from tritonkit.model_repository import config as cfg

    config = cfg.parse(config_text, where)
    config.ClearField("version_policy")
    cfg.set_versions(config, versions)
    return cfg.to_text(config)


def commit_config(
    store: BlobStore, model: str, decide: Callable[[RemoteModel], str | None]
) -> Switch | None:
    """Re-read ``MODEL/config.pbtxt`` and write ``decide(remote)`` if it is not None.

    The write is conditional on the etag read (or on the blob not existing); on a
    conflict it re-reads and decides again, up to ``CONFIG_RETRIES`` times.

    Raises:
        VersionConflict: the config kept changing under us.
        BlobError: the container refused the request.
    """
    for _ in range(CONFIG_RETRIES):
        remote = read_models(store, [model], manifests=False)[model]
        text = decide(remote)
        if text is None:
            return None
        before = remote.served
        try:
            if remote.config_etag is None:
                store.write(text.encode(), model, CONFIG, create_only=True)
            else:
                store.write(text.encode(), model, CONFIG, etag=remote.config_etag)
        except VersionConflict:
            continue  # another writer got there first: look again
        remote.config_text = text
        return Switch(model, before, remote.served)
    raise VersionConflict(
        f"{store.name(model, CONFIG)} changed {CONFIG_RETRIES} times while we wrote it; try again"
    )


def list_versions(store: BlobStore, models: list[str] | None = None) -> list[VersionRow]:
    """Every version of every model (or the named ones) under the prefix.

    Raises:
        NothingPublished: nothing published there (or not the named models).
        BlobError: the container cannot be read.
    """
    rows = []
    for name, remote in sorted(require_models(store, models).items()):
        served = set(remote.served)
        for version, rv in sorted(remote.versions.items()):
            m = rv.manifest
            rows.append(
                VersionRow(
                    name,
                    version,
                    rv.complete,
                    version in served,
                    published_at=m.published_at if m else "",
                    size=m.size if m else 0,
                    files=len(m.files) if m else 0,
                    source=_source_name(m.source) if m else "",
                )
            )
    return rows


def promote(store: BlobStore, model: str, version: int | None = None) -> list[Switch]:
    """Serve ``version`` (default: the newest complete one) of ``model``, and its decoder's.

    Raises:
        NothingPublished: no such model, or the version is not complete.
        VersionConflict: config.pbtxt kept changing under us.
        BlobError: the container refused the request.
    """
    remote = require_models(store, [model])[model]
    version = version if version is not None else max(remote.complete)
    manifest = _complete(store, remote, version)
    switches = []
    if manifest.decoder:  # the graph this version runs moves with it
        switches += promote(store, manifest.decoder["model"], int(manifest.decoder["version"]))
    where = store.name(model, version, MANIFEST)
    text = with_policy(manifest.config, [version], where)
    switch = commit_config(store, model, lambda r: None if r.served == [version] else text)
    switches.append(switch or Switch(model, [version], [version]))
    return switches


def rollback(store: BlobStore, model: str, version: int | None = None) -> list[Switch]:
    """Serve ``version``, by default the newest complete one below what is served now.

    Raises:
        NothingPublished: no such model, nothing served, or nothing older to go back to.
        VersionConflict: config.pbtxt kept changing under us.
        BlobError: the container refused the request.
    """
    remote = require_models(store, [model])[model]
    if version is None:
        if not remote.served:
            raise NothingPublished(f"{model} serves no version in {store.where}; use promote")
        older = [v for v in remote.complete if v < max(remote.served)]
        if not older:
            raise NothingPublished(
                f"{model} serves version {max(remote.served)} and has no complete older "
                "version to roll back to"
            )
        version = older[-1]
    return promote(store, model, version)


def _complete(store: BlobStore, remote: RemoteModel, version: int) -> Manifest:
    rv = remote.versions.get(version)
    if rv is None or rv.manifest is None:
        raise NothingPublished(
            f"version {version} of {remote.name} is not complete in {store.where} "
            f"(complete: {', '.join(map(str, remote.complete)) or 'none'})"
        )
    return rv.manifest


def _source_name(source: dict[str, Any]) -> str:
    """The Hugging Face model a version was exported from, as a short name."""
    model = source.get("model")
    if isinstance(model, dict):
        model = model.get("model") or model.get("path")
    return str(model or "")
