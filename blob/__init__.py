"""Model versions in Azure Blob Storage: publish, pull, list, promote and roll back.

``publish_repository`` uploads a local model repository as a new version of each
model that changed since its latest version (``changes.py``; ``publish.py``: claims,
parallel upload, dedup, manifest, config.pbtxt last);
``pull_repository`` brings complete, checksum-verified versions back (``pull.py``);
``release.py`` freezes what is served now as an immutable ``releases/R/`` (server-side
copies, pinned configs, ``release.json`` with every file's SHA-256), which
``pull_release`` and ``verify_release_dir`` check;
``versions.py`` changes which version Triton serves from Blob and ``live.py`` on a
running server; ``triton_env.py`` gives ``tritonserver`` its ``as://`` credentials.
Errors are in ``tritonkit.errors`` (``BlobError`` and its subclasses, exported here too).
"""

from tritonkit.errors import (
    BlobAuthError,
    BlobError,
    ChecksumError,
    ContainerNotFound,
    NothingPublished,
    VersionConflict,
)

from .live import promote_on_server, rollback_on_server, server_versions
from .manifest import Manifest
from .publish import PublishResult, publish_repository
from .pull import PullResult, pull_release, pull_repository
from .release import (
    Release,
    ReleaseResult,
    ReleaseRow,
    create_release,
    list_releases,
    verify_release_dir,
)
from .store import BlobStore, connect
from .triton_env import parse_as_url, triton_azure_env
from .versions import Switch, VersionRow, list_versions, promote, rollback

__all__ = [
    "BlobAuthError",
    "BlobError",
    "BlobStore",
    "ChecksumError",
    "ContainerNotFound",
    "Manifest",
    "NothingPublished",
    "PublishResult",
    "PullResult",
    "Release",
    "ReleaseResult",
    "ReleaseRow",
    "Switch",
    "VersionConflict",
    "VersionRow",
    "connect",
    "create_release",
    "list_releases",
    "list_versions",
    "parse_as_url",
    "promote",
    "promote_on_server",
    "publish_repository",
    "pull_release",
    "pull_repository",
    "rollback",
    "rollback_on_server",
    "server_versions",
    "triton_azure_env",
    "verify_release_dir",
]
