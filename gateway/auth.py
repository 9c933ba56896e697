"""API keys: read from the request, compared in constant time, never logged.

A client sends its key as ``Authorization: Bearer KEY`` (the OpenAI SDKs) or as
``api-key: KEY`` (the Azure OpenAI SDKs). Keys are held as SHA-256 digests only and every
presented key is compared against every stored one with ``hmac.compare_digest``, so
neither the time taken nor a traceback reveals a key or how much of it matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping


class KeyChecker:
    """Checks presented API keys against the configured ones; no keys: everyone passes."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a key."""
        return bool(self._digests)

    def allows(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the keys (always True when none are configured)."""
        return not self._digests or self.match(presented) is not None

    def match(self, presented: str | None) -> int | None:
        """Which key ``presented`` is (its index, for per-key limits); None for no key."""
        if presented is None or not self._digests:
            return None
        digest = _digest(presented)
        found = -1
        for i, stored in enumerate(self._digests):  # no early exit: the time does not
            if hmac.compare_digest(digest, stored):  # depend on which key matched
                found = i
        return found if found >= 0 else None

    def __repr__(self) -> str:
        return f"KeyChecker({len(self._digests)} key(s))"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``Authorization: Bearer KEY`` or ``api-key: KEY``; None without one."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("api-key")
    return key.strip() if key and key.strip() else None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
