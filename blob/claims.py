"""Allocating a version number atomically: a claim blob and a lease on it.

To publish version N of MODEL a publisher must hold the lease on ``MODEL/N.claim``:

1. create the claim blob only if it does not exist (``If-None-Match: *``);
2. acquire a 15 s lease on it (renewed every 5 s while uploading);
3. check that ``MODEL/N/manifest.json`` does not exist yet.

Blob leases are exclusive, so two publishers can never hold N at once; whoever fails
step 2 or 3 moves on to N+1 (or, when N was asked for with ``--version``, gets a
``VersionConflict``). A publisher that dies leaves a claim whose lease runs out within
15 s and a version without a manifest (invisible): the next publish takes that
number over and completes or replaces its files. Incomplete versions below the
newest complete one are never taken over, so a new version always sorts last.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from itertools import chain, count
from typing import Any

from azure.core.exceptions import HttpResponseError

from tritonkit.errors import BlobError, VersionConflict

from .manifest import MANIFEST
from .remote import CLAIM_SUFFIX, RemoteModel
from .store import BlobStore

LEASE_S = 15  # the shortest lease Azure allows: a dead publisher blocks N for 15 s at most
RENEW_EVERY_S = 5.0
MAX_ATTEMPTS = 50


def publisher_identity() -> dict[str, Any]:
    """Who is publishing, for claims and manifests."""
    return {
        "id": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class VersionClaim:
    """The lease on ``MODEL/N.claim``, renewed in the background until released."""

    def __init__(
        self, store: BlobStore, model: str, version: int, lease: Any, written: int = 0
    ) -> None:
        self.store = store
        self.model = model
        self.version = version
        self.written = written  # bytes of the claim blob, when this publisher created it
        self._lease = lease
        self._lost: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"tritonkit-lease-{model}-{version}", daemon=True
        )
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                self._lease.renew()
            except Exception as exc:  # checked by ensure_held before the commit
                self._lost = exc
                return

    def ensure_held(self) -> None:
        """Renew now; the claim must still be ours before the manifest is written.

        Raises:
            VersionConflict: the lease ran out and another publisher took N.
        """
        if self._lost is None:
            try:
                self._lease.renew()
            except Exception as exc:
                self._lost = exc
        if self._lost is not None:
            raise VersionConflict(
                f"lost the claim on version {self.version} of {self.model} (the lease ran "
                "out while uploading); publish again to take the next version"
            ) from self._lost

    def release(self) -> None:
        """Stop renewing and release the lease (best effort: it runs out in 15 s anyway)."""
        self._stop.set()
        self._thread.join(timeout=RENEW_EVERY_S + 1)
        with contextlib.suppress(Exception):
            self._lease.release()


def _candidates(remote: RemoteModel, requested: int | None) -> Iterator[int]:
    if requested is not None:
        return iter([requested])
    newest = max(remote.complete, default=0)
    abandoned = [v for v in sorted(remote.versions) if v > newest and v not in remote.complete]
    return chain(abandoned, count(remote.highest + 1))


def claim_version(
    store: BlobStore, remote: RemoteModel, publisher: dict[str, Any], requested: int | None = None
) -> VersionClaim:
    """Claim the next free version of ``remote`` (or exactly ``requested``).

    Raises:
        VersionConflict: ``requested`` exists or is being published, or no number was
            free after many attempts.
        BlobError: the container refused the requests.
    """
    model = remote.name
    body = json.dumps({"model": model, "publisher": publisher}).encode()
    for attempt, version in enumerate(_candidates(remote, requested)):
        if attempt >= MAX_ATTEMPTS:
            break
        if requested is not None and version in remote.complete:
            raise _exists(store, remote, version)
        claim_name = f"{version}{CLAIM_SUFFIX}"
        written = 0
        # Exists already when claimed before, by a live publisher (leased) or a dead one.
        with contextlib.suppress(VersionConflict):
            store.write(body, model, claim_name, create_only=True)
            written = len(body)
        with store.translate(f"lease {store.name(model, claim_name)}"):
            try:
                lease = store.blob(model, claim_name).acquire_lease(lease_duration=LEASE_S)
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409: LeaseAlreadyPresent, another publisher
                    raise
                if requested is not None:
                    raise VersionConflict(
                        f"version {version} of {model} is being published by someone else "
                        "right now; omit --version to take the next number"
                    ) from exc
                continue
        if store.read(model, version, MANIFEST) is not None:  # completed while we looked
            lease.release()
            if requested is not None:
                raise _exists(store, remote, version)
            continue
        return VersionClaim(store, model, version, lease, written)
    raise VersionConflict(
        f"no free version of {model} after {MAX_ATTEMPTS} attempts; "
        "too many concurrent publishers, try again"
    )


def _exists(store: BlobStore, remote: RemoteModel, version: int) -> BlobError:
    return VersionConflict(
        f"version {version} of {remote.name} already exists in {store.where}; "
        f"omit --version to publish as the next version ({remote.highest + 1})"
    )
