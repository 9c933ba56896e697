"""Switching the version a running Triton serves (explicit model-control mode).

Through the repository API: ``load_model`` with a config override whose
``version_policy`` names the new version. Triton loads the new version first and
only then unloads the old one, and requests in flight finish on the version they
started on, so a switch fails no request. The version's files must be in the server's
repository already (``tritonkit pull`` them there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tritonkit.client.errors import ClientError, InvalidRequest, ModelNotFound, from_triton
from tritonkit.errors import UsageError

from .versions import Switch

LOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ServedVersion:
    """One row of the server's repository index."""

    model: str
    version: int | None  # None: the model is known but no version is loaded
    state: str  # READY, UNAVAILABLE, LOADING, ...
    reason: str = ""


def _client(url: str) -> object:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


def _call(url: str, method: str, *args: object, **kwargs: object) -> object:
    from tritonclient.utils import InferenceServerException

    client = _client(url)
    try:
        return getattr(client, method)(*args, **kwargs)
    except InferenceServerException as exc:
        raise from_triton(exc.status(), exc.message() or str(exc), url) from exc
    finally:
        client.close()  # type: ignore[attr-defined]


def server_versions(url: str, model: str | None = None) -> list[ServedVersion]:
    """The server's repository index (gRPC ``url``), for every model or one.

    Raises:
        ClientError: the server cannot be reached, or has no such model.
    """
    index = _call(url, "get_model_repository_index", as_json=True)
    rows = []
    for entry in index.get("models", []):  # type: ignore[attr-defined]
        if model and entry["name"] != model:
            continue
        version = int(entry["version"]) if entry.get("version") else None
        rows.append(ServedVersion(entry["name"], version, entry.get("state", ""),
                                  entry.get("reason", "")))  # fmt: skip
    if model and not rows:
        raise ModelNotFound(f"{url} has no model {model!r} in its repository")
    return rows


def _ready(url: str, model: str) -> list[int]:
    return sorted(
        r.version for r in server_versions(url, model) if r.state == "READY" and r.version
    )


def promote_on_server(url: str, model: str, version: int) -> Switch:
    """Serve ``version`` of ``model``: load it with a version_policy override, then drop others.

    Raises:
        UsageError: ``version`` < 1.
        InvalidRequest: the server is not in explicit mode, or the version failed to load
            (its files are not in the server's repository); the old version keeps serving.
        ClientError: the server cannot be reached, or has no such model.
    """
    if version < 1:
        raise UsageError(f"version must be >= 1, got {version}")
    before = _ready(url, model)
    config = _call(url, "get_model_config", model, as_json=True)["config"]  # type: ignore[index]
    config["version_policy"] = {"specific": {"versions": [version]}}
    try:
        _call(url, "load_model", model, config=json.dumps(config), client_timeout=LOAD_TIMEOUT_S)
    except ClientError as exc:
        reason = " ".join(str(exc).split())  # Triton's messages may end with a newline
        raise InvalidRequest(
            f"{url} could not load version {version} of {model} ({reason}); is the server in "
            "explicit model-control mode, with that version pulled into its repository?"
        ) from exc
    return Switch(model, before, _ready(url, model))


def rollback_on_server(url: str, model: str, version: int | None = None) -> Switch:
    """Serve ``version``, by default the one below the newest version served now.

    Raises:
        ModelNotFound: no version of ``model`` is loaded and none was given.
        InvalidRequest, ClientError: as ``promote_on_server``.
    """
    if version is None:
        ready = _ready(url, model)
        if not ready or max(ready) <= 1:
            raise ModelNotFound(
                f"{url} serves {model} version {ready or 'none'}; pass --version to say "
                "which version to go back to"
            )
        version = max(ready) - 1
    return promote_on_server(url, model, version)
