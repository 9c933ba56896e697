"""One container and prefix in Azure Blob Storage, and the error mapping at its boundary.

``connect`` turns the CLI's credential options into a ``BlobStore``; every call into
azure-storage-blob goes through ``BlobStore.translate`` so that a wrong key, a missing
container or an unreachable endpoint becomes a one-line ``BlobError`` subclass (all of
them live in ``tritonkit.errors``).
Names passed to ``BlobStore`` methods are relative to the prefix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlparse

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ExponentialRetry

from tritonkit.errors import (
    BlobAuthError,
    BlobError,
    ContainerNotFound,
    UsageError,
    VersionConflict,
)

CREDENTIALS = ("default", "key", "sas")
ACCOUNT_URL_ENV = "AZURE_STORAGE_ACCOUNT_URL"  # the default account URL
# Three retries after 1, 3 and 5 s (the SDK's default waits 15, 18 and 24 s): a wrong
# endpoint fails in about 10 s, a transient error still gets its retries.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
    ),
    "connection_timeout": 10,
    "read_timeout": 120,
}


def _account_from_url(account_url: str) -> str:
    """``acct`` from https://acct.blob.core.windows.net, or /acct in an emulator URL."""
    parsed = urlparse(account_url)
    host = parsed.hostname or ""
    if host.endswith(".blob.core.windows.net"):
        return host.split(".", 1)[0]
    path = parsed.path.strip("/")
    return path.split("/", 1)[0] if path else os.environ.get("AZURE_STORAGE_ACCOUNT", "")


def _credential(kind: str, account_url: str) -> Any:
    if kind == "default":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(exclude_interactive_browser_credential=True)
    if kind == "key":
        key = os.environ.get("AZURE_STORAGE_KEY")
        account = _account_from_url(account_url)
        if not key or not account:
            raise UsageError(
                "--credential key needs AZURE_STORAGE_KEY (and AZURE_STORAGE_ACCOUNT when the "
                "account URL does not name the account) in the environment"
            )
        return {"account_name": account, "account_key": key}
    if kind == "sas":
        if "?" in account_url:
            return None  # the token is in the URL already
        token = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        if not token:
            raise UsageError("--credential sas needs AZURE_STORAGE_SAS_TOKEN in the environment")
        return token.lstrip("?")
    raise UsageError(f"unknown credential {kind!r}; choose one of {', '.join(CREDENTIALS)}")


def connect(
    container: str,
    prefix: str = "",
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: str = "default",
) -> BlobStore:
    """A ``BlobStore`` for ``container``/``prefix``; makes no request yet.

    What reaches the account, first found wins: ``connection_string``, ``account_url``,
    then the environment's ``AZURE_STORAGE_CONNECTION_STRING`` and
    ``AZURE_STORAGE_ACCOUNT_URL`` (an explicit argument beats the environment). An
    account URL goes with ``credential``: ``default`` (DefaultAzureCredential: managed
    identity, ``az login``, environment), ``key`` (``AZURE_STORAGE_KEY``) or ``sas``
    (``AZURE_STORAGE_SAS_TOKEN``, or a token already in the URL).

    Raises:
        UsageError: no way to reach an account was given, or a credential is incomplete.
    """
    if not container:
        raise UsageError("pass --container: the Blob container that holds the repository")
    if not connection_string and not account_url:
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        account_url = None if connection_string else os.environ.get(ACCOUNT_URL_ENV)
    try:
        if connection_string:
            client = ContainerClient.from_connection_string(
                connection_string, container, **CLIENT_OPTIONS
            )
        elif account_url:
            client = ContainerClient(
                account_url,
                container,
                credential=_credential(credential, account_url),
                **CLIENT_OPTIONS,
            )
        else:
            raise UsageError(
                "pass --connection-string (or set AZURE_STORAGE_CONNECTION_STRING), "
                f"or --account-url (or set {ACCOUNT_URL_ENV}) with --credential default|key|sas"
            )
    except ValueError as exc:
        raise UsageError(f"bad storage account settings: {exc}") from exc
    return BlobStore(client, prefix)


class BlobStore:
    """A container client, a prefix inside it, and the mapping of SDK errors."""

    def __init__(self, client: ContainerClient, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix.strip("/")

    @property
    def where(self) -> str:
        """``account/container/prefix`` for messages."""
        parts = [self.client.account_name or "?", self.client.container_name, self.prefix]
        return "/".join(p for p in parts if p)

    def name(self, *parts: str | int) -> str:
        """The full blob name of ``parts`` under the prefix."""
        return "/".join(str(p) for p in (self.prefix, *parts) if str(p))

    def relative(self, blob_name: str) -> str:
        """``blob_name`` without the prefix."""
        return blob_name[len(self.prefix) + 1 :] if self.prefix else blob_name

    def blob(self, *parts: str | int) -> Any:
        """The ``BlobClient`` of ``parts`` under the prefix."""
        return self.client.get_blob_client(self.name(*parts))

    @contextmanager
    def translate(self, doing: str) -> Iterator[None]:
        """Map azure-core errors raised inside to one-line ``BlobError`` subclasses.

        Raises:
            BlobAuthError, ContainerNotFound, BlobError: mapped from the SDK's errors.
        """
        try:
            yield
        except ClientAuthenticationError as exc:
            raise BlobAuthError(
                f"{doing}: {self.client.account_name} rejected the credentials "
                f"({_code(exc)}); check the key, SAS or connection string, or your role"
            ) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise BlobError(
                f"{doing}: cannot reach {self.client.primary_endpoint.split('?')[0]} "
                f"({_first_line(exc)}); check the account URL and the network"
            ) from exc
        except HttpResponseError as exc:
            code = _code(exc)
            if code == "ContainerNotFound":
                name = self.client.container_name
                raise ContainerNotFound(
                    f"container {name!r} does not exist in {self.client.account_name}; check "
                    f"--container, or create it (`az storage container create --name {name}`, "
                    "or `tritonkit publish --create-container`)"
                ) from exc
            if exc.status_code == 403:
                raise BlobAuthError(
                    f"{doing}: {self.client.account_name} refused access ({code}); check the "
                    "key, SAS or connection string, or your role on the account"
                ) from exc
            raise BlobError(f"{doing}: {exc.status_code} {code}: {_first_line(exc)}") from exc

    def check(self, create: bool = False) -> None:
        """Make one request: the credentials work and the container exists (or is created).

        Raises:
            BlobAuthError, ContainerNotFound, BlobError: what the account answered.
        """
        with self.translate(f"open container {self.client.container_name}"):
            if create:
                with suppress(ResourceExistsError):
                    self.client.create_container()
            else:
                self.client.get_container_properties()

    def names(self, under: str) -> list[str]:
        """Every blob name (relative) under the folder ``under``."""
        start = self.name(under).rstrip("/")
        start = start + "/" if start else ""
        with self.translate(f"list {start or '/'}"):
            return [self.relative(b.name) for b in self.client.list_blobs(name_starts_with=start)]

    def read(self, *parts: str | int) -> tuple[bytes, str] | None:
        """The blob's bytes and etag, or None when it does not exist."""
        with self.translate(f"read {self.name(*parts)}"):
            try:
                downloader = self.blob(*parts).download_blob()
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return None
            return downloader.readall(), str(downloader.properties.etag)

    def write(
        self, data: bytes, *parts: str | int, etag: str | None = None, create_only: bool = False
    ) -> str:
        """Write a small blob; with ``etag`` only if unchanged, with ``create_only`` only if new.

        Returns the new etag.

        Raises:
            VersionConflict: the condition failed (someone else wrote it first).
            BlobError: the write failed otherwise.
        """
        conditions: dict[str, Any] = {}
        if etag is not None:
            conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        with self.translate(f"write {self.name(*parts)}"):
            try:
                result = self.blob(*parts).upload_blob(
                    data, overwrite=not create_only, **conditions
                )
            except (ResourceExistsError, ResourceModifiedError) as exc:
                raise VersionConflict(f"{self.name(*parts)} was changed by someone else") from exc
            return str(result["etag"])

    def delete(self, *parts: str | int) -> None:
        """Delete a blob if it exists."""
        with self.translate(f"delete {self.name(*parts)}"), suppress(ResourceNotFoundError):
            self.blob(*parts).delete_blob()


def _code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)  # a StorageErrorCode (a str enum) or a str
    return str(getattr(code, "value", code) or type(exc).__name__)


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
