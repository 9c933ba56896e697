"""Credentials for Triton's own Azure support (``--model-repository=as://...``).

Triton reads them from its environment: ``AZURE_STORAGE_ACCOUNT`` and
``AZURE_STORAGE_KEY`` (every release), or, in releases newer than the 2.51 server
bundled here, ``AZURE_STORAGE_AUTH_TYPE=managed_identity|default`` (with
``AZURE_STORAGE_CLIENT_ID`` for a user-assigned identity). Triton always talks to
``https://ACCOUNT.blob.core.windows.net``: it cannot be pointed at Azurite.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from tritonkit.errors import UsageError

AUTH_TYPES = ("key", "managed_identity", "default")
_AS_URL = re.compile(r"as://([^/]+)/([^/?]+)(?:/([^?]*))?")


def parse_as_url(url: str) -> tuple[str, str, str]:
    """``as://ACCOUNT/CONTAINER/PREFIX`` -> (account, container, prefix).

    Raises:
        UsageError: not such a URL.
    """
    match = _AS_URL.fullmatch(url.rstrip("/"))
    if not match:
        raise UsageError(f"{url!r} is not as://ACCOUNT/CONTAINER[/PREFIX]")
    account, container, prefix = match.groups()
    return account.split(".blob.core.windows.net")[0], container, prefix or ""


def triton_azure_env(
    repository: str,
    auth: str = "key",
    *,
    client_id: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a tritonserver needs to read ``repository`` (an ``as://`` URL).

    ``auth="key"`` takes the key from ``AZURE_STORAGE_KEY`` in ``environ`` (default:
    this process's environment); ``managed_identity`` and ``default`` hand Triton no
    secret at all.

    Raises:
        UsageError: not an as:// URL, an unknown ``auth``, or key auth without a key.
    """
    environ = os.environ if environ is None else environ
    account, _, _ = parse_as_url(repository)
    if auth not in AUTH_TYPES:
        raise UsageError(f"unknown Azure auth {auth!r}; choose one of {', '.join(AUTH_TYPES)}")
    env = {"AZURE_STORAGE_ACCOUNT": account}
    if auth == "key":
        key = environ.get("AZURE_STORAGE_KEY")
        if not key:
            raise UsageError(
                f"serving {repository} with key auth needs AZURE_STORAGE_KEY in the "
                "environment (or --azure-auth managed_identity on an Azure VM)"
            )
        env["AZURE_STORAGE_KEY"] = key
    else:
        env["AZURE_STORAGE_AUTH_TYPE"] = auth
        client_id = client_id or environ.get("AZURE_STORAGE_CLIENT_ID")
        if client_id:
            env["AZURE_STORAGE_CLIENT_ID"] = client_id
    return env
