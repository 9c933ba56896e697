"""The errors tritonkit.blob raises (defined in ``tritonkit.errors``, re-exported here).

    BlobError                    base: Azure Blob Storage (or Azurite) refused or failed
    ├── BlobAuthError            the credentials were rejected (wrong key, expired SAS, no role)
    ├── ContainerNotFound        the container does not exist
    ├── NothingPublished         no model repository (or no such model/version) under the prefix
    ├── ChecksumError            a downloaded file does not match its manifest's SHA-256
    └── VersionConflict          another publisher took the version, or changed config.pbtxt

azure-core and azure-storage-blob errors are mapped here, at the boundary (``store.py``),
to the most specific class and chained (``raise mapped from exc``).
"""

from __future__ import annotations

from tritonkit.errors import (
    BlobAuthError,
    BlobError,
    ChecksumError,
    ContainerNotFound,
    NothingPublished,
    VersionConflict,
)

__all__ = [
    "BlobAuthError",
    "BlobError",
    "ChecksumError",
    "ContainerNotFound",
    "NothingPublished",
    "VersionConflict",
]
