"""Switching the version a running Triton serves (explicit model-control mode).

Through the repository API: ``load_model`` with a config override whose
``version_policy`` names the new version. Triton loads the new version first and
only then unloads the old one, and requests in flight finish on the version they
started on, so a switch fails no request. The version's files must be in the server's
repository already (``tritonkit pull`` them there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from tritonkit.client import LLMClient
from tritonkit.client._base import GRPC_ADMIN_KEY_HEADER
from tritonkit.errors import (
    APIRestricted,
    ClientError,
    InvalidRequest,
    ModelNotFound,
    UsageError,
)

from .versions import Switch

LOAD_TIMEOUT_S = 600.0
# A hardened Triton (deploy/triton-entrypoint.sh) restricts the model-repository API to
# callers that send its admin key: Triton reads the gRPC metadata key with this prefix.
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_KEY_HEADER = GRPC_ADMIN_KEY_HEADER
Headers = Mapping[str, str]


def admin_headers(
    pairs: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """gRPC metadata for repository calls: ``KEY=VALUE`` pairs (``--triton-header``), plus
    the admin key from ``$TRITON_ADMIN_KEY`` when it is set and not given as a pair (so the
    key need not appear on a command line).

    Raises:
        UsageError: a pair without ``=`` or with an empty key.
    """
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--triton-header takes KEY=VALUE, not {pair!r}")
        headers[key.strip().lower()] = value
    key = (os.environ if env is None else env).get(ADMIN_KEY_ENV, "")
    if key and ADMIN_KEY_HEADER not in headers:
        headers[ADMIN_KEY_HEADER] = key
    return headers


@dataclass(frozen=True)
class ServedVersion:
    """One row of the server's repository index."""

    model: str
    version: int | None  # None: the model is known but no version is loaded
    state: str  # READY, UNAVAILABLE, LOADING, ...
    reason: str = ""


@contextlib.contextmanager
def _admin(url: str, headers: Headers | None) -> Iterator[LLMClient]:
    """One gRPC client (one connection) for every call of a switch; a refusal by a
    restricted API says how to send the admin key."""
    with LLMClient(url, timeout=LOAD_TIMEOUT_S, headers=headers) as client:
        try:
            yield client
        except APIRestricted as exc:
            hint = (
                f"; the server restricts this API: set ${ADMIN_KEY_ENV} (or pass "
                "--triton-header KEY=VALUE) to its admin key"
            )
            raise type(exc)(f"{exc}{hint}") from exc


def server_versions(
    url: str, model: str | None = None, headers: Headers | None = None
) -> list[ServedVersion]:
    """The server's repository index (gRPC ``url``), for every model or one; ``headers``
    go with the call (``admin_headers``: a hardened server restricts the index).

    Raises:
        ClientError: the server cannot be reached, or has no such model.
    """
    with _admin(url, headers) as client:
        return _versions(client, model)


def _versions(client: LLMClient, model: str | None) -> list[ServedVersion]:
    rows = [
        ServedVersion(m.name, int(m.version) if m.version else None, m.state, m.reason)
        for m in client.models()
        if not model or m.name == model
    ]
    if model and not rows:
        raise ModelNotFound(f"{client.url} has no model {model!r} in its repository")
    return rows


def _ready(client: LLMClient, model: str) -> list[int]:
    return sorted(r.version for r in _versions(client, model) if r.state == "READY" and r.version)


def promote_on_server(url: str, model: str, version: int, headers: Headers | None = None) -> Switch:
    """Serve ``version`` of ``model``: load it with a version_policy override, then drop others.

    Raises:
        UsageError: ``version`` < 1.
        InvalidRequest: the server is not in explicit mode, or the version failed to load
            (its files are not in the server's repository); the old version keeps serving.
        ClientError: the server cannot be reached, or has no such model.
    """
    if version < 1:
        raise UsageError(f"version must be >= 1, got {version}")
    with _admin(url, headers) as client:
        return _promote(client, model, version)


def _promote(client: LLMClient, model: str, version: int) -> Switch:
    before = _ready(client, model)
    config = client.model_config(model)
    config["version_policy"] = {"specific": {"versions": [version]}}
    try:
        client.load_model(model, config=config)
    except APIRestricted:
        raise  # _admin adds how to send the key
    except ClientError as exc:
        reason = " ".join(str(exc).split())  # Triton's messages may end with a newline
        raise InvalidRequest(
            f"{client.url} could not load version {version} of {model} ({reason}); is the "
            "server in explicit model-control mode, with that version pulled into its repository?"
        ) from exc
    return Switch(model, before, _ready(client, model))


def rollback_on_server(
    url: str, model: str, version: int | None = None, headers: Headers | None = None
) -> Switch:
    """Serve ``version``, by default the one below the newest version served now.

    Raises:
        UsageError: ``version`` < 1.
        ModelNotFound: no version of ``model`` is loaded and none was given.
        InvalidRequest, ClientError: as ``promote_on_server``.
    """
    if version is not None and version < 1:
        raise UsageError(f"version must be >= 1, got {version}")
    with _admin(url, headers) as client:
        if version is None:
            ready = _ready(client, model)
            if not ready or max(ready) <= 1:
                raise ModelNotFound(
                    f"{url} serves {model} version {ready or 'none'}; pass --version to say "
                    "which version to go back to"
                )
            version = max(ready) - 1
        return _promote(client, model, version)
