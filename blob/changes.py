"""Whether a local model differs from its latest published version, by content.

A publish compares each model with its *latest* version: the highest complete version
(one with a manifest) in the container, served or not. The model is unchanged when
both hold the same files (the same relative paths, each with the same size and SHA-256;
an entry model's ``decoder.json`` as it would be published, naming the decoder version
it would run) and the same ``config.pbtxt`` apart from its ``version_policy``. Times
are never compared. Local files are hashed only when every path and size already
matches the latest version, so a model that grew or lost a file costs no hashing here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tritonkit.core.layout import DECODER_REF

from .manifest import Manifest, hash_file
from .remote import RemoteModel
from .upload import Item


@dataclass(frozen=True)
class Latest:
    """A model's latest published version: what a publish compares with."""

    version: int
    manifest: Manifest


def latest(remote: RemoteModel) -> Latest | None:
    """The highest complete version of ``remote`` (served or not), or None if it has none."""
    if not remote.complete:
        return None
    version = remote.complete[-1]
    manifest = remote.versions[version].manifest
    assert manifest is not None
    return Latest(version, manifest)


def _same_shape(items: list[Item], manifest: Manifest) -> bool:
    """The same paths with the same sizes (``decoder.json`` aside: it is generated)."""
    local = {str(i.dest[2]): i.size for i in items if i.dest[2] != DECODER_REF}
    published = {f.path: f.size for f in manifest.files if f.path != DECODER_REF}
    return local == published


def hash_if_comparable(candidates: list[tuple[list[Item], Latest | None]], workers: int) -> None:
    """Hash the local files of every model shaped like its latest version, in parallel.

    Items that already carry digests (generated ones) are left alone.

    Raises:
        OSError: a local file cannot be read.
    """
    todo = [
        i
        for items, last in candidates
        if last is not None and _same_shape(items, last.manifest)
        for i in items
        if i.digests is None and i.local is not None
    ]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for item, digests in zip(todo, pool.map(lambda i: hash_file(i.local), todo)):
            item.digests = digests


def same_content(items: list[Item], config: Any, last: Latest) -> bool:
    """Whether ``items`` and ``config`` equal the latest version's files and config.

    ``items`` must have been through ``hash_if_comparable``: an item without digests
    means its model was not shaped like the latest version, so it differs.
    """
    if any(i.digests is None for i in items):
        return False
    local = {str(i.dest[2]): (i.size, i.digests.sha256) for i in items if i.digests}
    published = {f.path: (f.size, f.sha256) for f in last.manifest.files}
    return local == published and same_config(config, last.manifest)


def same_config(config: Any, manifest: Manifest) -> bool:
    """Whether the local ModelConfig equals the one published with ``manifest``, policy aside.

    Compared as protobuf messages, so formatting does not count. A published config that
    does not parse differs from any local one (a new version replaces it).
    """
    from tritonkit.errors import RepositoryError
    from tritonkit.model_repository import config as cfg

    try:
        published = cfg.parse(manifest.config, f"{manifest.model}/{manifest.version} manifest")
    except RepositoryError:
        return False
    mine = type(config)()
    mine.CopyFrom(config)
    for message in (mine, published):
        message.ClearField("version_policy")
    return bool(mine == published)
