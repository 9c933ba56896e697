"""``GatewayConfig``: what one gateway serves, and the parsing of its command-line pieces."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.errors import UsageError

DEFAULT_PORT = 9000
DEFAULT_MAX_CONCURRENT = 128  # generations in flight; one more gets 429
DEFAULT_TIMEOUT_S = 600.0  # one whole generation, a stream included
DEFAULT_REFRESH_S = 5.0  # how long the list of Triton's ready models is trusted
API_KEY_ENV = "TRITONKIT_GATEWAY_API_KEY"  # the key, when no flag gives one
# Triton's --grpc-restricted-protocol=...:admin-key=VALUE wants this gRPC header (Triton
# prefixes the key of a restricted protocol with "triton-grpc-protocol-" on gRPC).
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_KEY_HEADER = "triton-grpc-protocol-admin-key"


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of one gateway; ``check()`` validates them.

    ``model_map`` maps the model ids clients send to Triton model names; when it is empty
    every ready entry model (decoupled, ``text_input`` in, ``text_output`` out) is served
    under its own name. ``tokenizers`` maps a model id to a folder holding its chat
    template; ``repository`` is a local model repository whose ``NAME/V/tokenizer/`` folders
    give the rest. A model with neither gets the plain template (see ``chat.PLAIN_TEMPLATE``).
    ``triton_headers`` go with every call to Triton (for a Triton whose APIs are restricted
    by ``--grpc-restricted-protocol``); like the API keys, they are never shown.
    """

    triton_url: str = "127.0.0.1:8001"  # Triton's gRPC HOST:PORT
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: no key asked
    model_map: Mapping[str, str] = field(default_factory=dict)  # OpenAI id -> Triton model
    repository: Path | None = None  # local model repository with NAME/V/tokenizer/
    tokenizers: Mapping[str, Path] = field(default_factory=dict)  # model id -> tokenizer folder
    triton_headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # gRPC metadata
    max_concurrent: int = DEFAULT_MAX_CONCURRENT  # 0: no limit
    timeout_s: float = DEFAULT_TIMEOUT_S
    refresh_s: float = DEFAULT_REFRESH_S

    def check(self) -> GatewayConfig:
        """Return self after validating every field.

        Raises:
            UsageError: a negative limit, an empty key, or a folder that does not exist.
        """
        if self.max_concurrent < 0:
            raise UsageError(
                f"--max-concurrent must be >= 0 (0: no limit), not {self.max_concurrent}"
            )
        if self.timeout_s <= 0:
            raise UsageError(f"--timeout must be > 0 seconds, not {self.timeout_s}")
        if any(not key.strip() for key in self.api_keys):
            raise UsageError("an API key is empty: give a non-empty --api-key")
        if self.repository is not None and not Path(self.repository).is_dir():
            raise UsageError(
                f"--repository {self.repository} is not a folder: give a local model "
                "repository (the one `tritonkit repo build` or `tritonkit pull` writes)"
            )
        for name, folder in self.tokenizers.items():
            if not Path(folder).is_dir():
                raise UsageError(f"--tokenizer {name}={folder}: no such folder")
        return self


def parse_pairs(values: Iterable[str], flag: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}``.

    Raises:
        UsageError: an item without ``=``, an empty side, or a name given twice.
    """
    pairs: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UsageError(f"{flag} takes NAME=VALUE, not {item!r}")
        if name in pairs:
            raise UsageError(f"{flag} gives {name!r} twice")
        pairs[name] = value
    return pairs


def read_api_keys(path: str | Path) -> tuple[str, ...]:
    """The keys in ``path``: one a line; blank lines and ``#`` comments skipped.

    Raises:
        UsageError: the file cannot be read, or holds no key.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --api-keys-file {path}: {exc.strerror}") from exc
    keys = tuple(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise UsageError(f"--api-keys-file {path} holds no key: write one key per line")
    return keys


def tokenizers_from(pairs: Mapping[str, str]) -> dict[str, Path]:
    """The ``--tokenizer`` pairs with their folders as paths."""
    return {name: Path(folder) for name, folder in pairs.items()}
