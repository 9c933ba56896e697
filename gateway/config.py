"""``GatewayConfig``: what one gateway serves, and the parsing of its command-line pieces."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.errors import UsageError

from .discovery import split_host_port

DEFAULT_PORT = 9000
DEFAULT_MAX_CONCURRENT = 128  # generations in flight; one more gets 429
DEFAULT_TIMEOUT_S = 600.0  # one whole generation, a stream included
DEFAULT_REFRESH_S = 5.0  # how long the list of Triton's ready models is trusted
DEFAULT_DISCOVER_INTERVAL_S = 5.0  # --triton-discover: how often HOST is resolved again
DEFAULT_MAX_BODY_BYTES = 1 << 20  # a request body over this gets 413 before it is read
DEFAULT_MAX_PROMPT_CHARS = 1 << 18  # characters of the prompt / all messages (~64k tokens)
DEFAULT_LIMIT_CONCURRENCY = 256  # HTTP requests in flight before 503 (connections never count)
DEFAULT_MAX_CONNECTIONS = 4096  # open sockets (clamped to the file descriptors there are)
DEFAULT_HEADER_TIMEOUT_S = 10.0  # from a connection's start (or last response) to a full header
DEFAULT_BODY_TIMEOUT_S = 30.0  # from a request's header to its last body byte
DEFAULT_TEMPLATE_TIMEOUT_S = 2.0  # one chat-template rendering
DEFAULT_TEMPLATE_MAX_CHARS = 1 << 20  # characters one chat-template rendering may produce
API_KEY_ENV = "TRITONKIT_GATEWAY_API_KEY"  # the key, when no flag gives one
METRICS_KEY_ENV = "TRITONKIT_GATEWAY_METRICS_KEY"  # the /metrics key, when no flag gives one
# What deploy/triton-entrypoint.sh restricts Triton's model-repository API with. The gateway
# never sends it (it needs no admin API); the CLI warns when it finds it in its environment.
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of one gateway; ``check()`` validates them.

    ``model_map`` maps the model ids clients send to Triton model names; when it is empty
    every ready entry model (decoupled, ``text_input`` in, ``text_output`` out) is served
    under its own name: the models of ``repository`` when one is given, else those of
    Triton's repository index (an API Triton may restrict to an admin key; the map or a
    repository need none of it). ``tokenizers`` maps a model id to a folder holding its
    chat template; ``repository`` is a local model repository whose ``NAME/V/tokenizer/``
    folders give the rest. A model with neither gets the plain template (see
    ``chat.PLAIN_TEMPLATE``). ``triton_headers`` go with every call to Triton; like the
    API keys and the metrics keys, they are never shown.

    Limits on what one request may ask for: ``max_body_bytes`` (413), ``max_prompt_chars``
    (400, counted before any tokenizing or rendering), ``template_timeout_s`` and
    ``template_max_chars`` (400: the chat template took too long or wrote too much),
    ``max_concurrent`` generations in all and ``max_concurrent_per_key`` per API key (429);
    ``limit_concurrency`` HTTP requests in flight (503 beyond it). What the network may
    hold open, separately (``connections.py``): ``max_connections`` sockets, and a
    connection that takes over ``header_timeout_s`` for a request header or a request over
    ``body_timeout_s`` for its body is closed with 408, so half-open connections cannot
    deny the gateway. 0 turns a count limit off. ``ssl_certfile`` and ``ssl_keyfile``
    (PEM) serve HTTPS.

    Triton replicas (``replicas.ReplicaPool``): ``triton_urls``, when given, replaces
    ``triton_url`` (each request goes to the replica with the fewest in flight);
    ``triton_discover`` (``HOST:PORT``, instead of URLs) makes every A/AAAA address of
    HOST a replica, resolved again every ``discover_interval_s`` seconds.
    """

    triton_url: str = "127.0.0.1:8001"  # Triton's gRPC HOST:PORT (one replica)
    triton_urls: tuple[str, ...] = ()  # several replicas; replaces triton_url
    triton_discover: str | None = None  # HOST:PORT whose addresses are the replicas
    discover_interval_s: float = DEFAULT_DISCOVER_INTERVAL_S
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: no key asked
    model_map: Mapping[str, str] = field(default_factory=dict)  # OpenAI id -> Triton model
    repository: Path | None = None  # local model repository with NAME/V/tokenizer/
    tokenizers: Mapping[str, Path] = field(default_factory=dict)  # model id -> tokenizer folder
    triton_headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # gRPC metadata
    max_concurrent: int = DEFAULT_MAX_CONCURRENT  # 0: no limit
    timeout_s: float = DEFAULT_TIMEOUT_S
    refresh_s: float = DEFAULT_REFRESH_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY  # requests in flight; 0: no limit
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open sockets; 0: file descriptors only
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_concurrent_per_key: int = 0  # 0: no limit per key
    template_timeout_s: float = DEFAULT_TEMPLATE_TIMEOUT_S
    template_max_chars: int = DEFAULT_TEMPLATE_MAX_CHARS
    metrics_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: /metrics is open
    ssl_certfile: Path | None = None  # PEM certificate (chain): serve HTTPS
    ssl_keyfile: Path | None = None  # PEM private key of that certificate
    tool_parser: str = "auto"  # the tool-call format: auto (from the chat template) or one of
    # tools.TOOL_FORMATS

    def check(self) -> GatewayConfig:
        """Return self after validating every field.

        Raises:
            UsageError: a negative or inconsistent limit, an empty key, or a file or folder
                that does not exist.
        """
        for flag, value in (
            ("--max-concurrent", self.max_concurrent),
            ("--limit-concurrency", self.limit_concurrency),
            ("--max-connections", self.max_connections),
            ("--max-concurrent-per-key", self.max_concurrent_per_key),
        ):
            if value < 0:
                raise UsageError(f"{flag} must be >= 0 (0: no limit), not {value}")
        for flag, size in (
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-prompt-chars", self.max_prompt_chars),
            ("--template-max-chars", self.template_max_chars),
        ):
            if size <= 0:
                raise UsageError(f"{flag} must be > 0, not {size}")
        for flag, seconds in (
            ("--timeout", self.timeout_s),
            ("--header-timeout", self.header_timeout_s),
            ("--body-timeout", self.body_timeout_s),
        ):
            if seconds <= 0:
                raise UsageError(f"{flag} must be > 0 seconds, not {seconds}")
        self._check_replicas()
        from .tools import TOOL_FORMATS

        if self.tool_parser not in ("auto", *TOOL_FORMATS):
            raise UsageError(
                f"--tool-parser must be auto or one of {', '.join(TOOL_FORMATS)}, "
                f"not {self.tool_parser!r}"
            )
        if self.template_timeout_s <= 0:
            raise UsageError(
                f"--template-timeout must be > 0 seconds, not {self.template_timeout_s}"
            )
        if self.template_max_chars < self.max_prompt_chars:
            raise UsageError(
                f"--template-max-chars ({self.template_max_chars}) must be at least "
                f"--max-prompt-chars ({self.max_prompt_chars}): a template writes the messages"
            )
        if self.limit_concurrency and self.limit_concurrency <= self.max_concurrent:
            raise UsageError(
                f"--limit-concurrency ({self.limit_concurrency}) must be above --max-concurrent "
                f"({self.max_concurrent}): requests would get 503 before the 429"
            )
        if self.max_concurrent_per_key and not self.api_keys:
            raise UsageError("--max-concurrent-per-key needs API keys (--api-keys-file)")
        if any(not key.strip() for key in self.api_keys):
            raise UsageError("an API key is empty: give a non-empty --api-key")
        if any(not key.strip() for key in self.metrics_keys):
            raise UsageError("a metrics key is empty: give a non-empty --metrics-key")
        if self.repository is not None and not Path(self.repository).is_dir():
            raise UsageError(
                f"--repository {self.repository} is not a folder: give a local model "
                "repository (the one `tritonkit repo build` or `tritonkit pull` writes)"
            )
        for name, folder in self.tokenizers.items():
            if not Path(folder).is_dir():
                raise UsageError(f"--tokenizer {name}={folder}: no such folder")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise UsageError("--ssl-certfile and --ssl-keyfile go together: give both")
        for flag, path in (
            ("--ssl-certfile", self.ssl_certfile),
            ("--ssl-keyfile", self.ssl_keyfile),
        ):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{flag} {path}: no such file")
        return self

    def _check_replicas(self) -> None:
        if self.triton_discover is not None:
            if self.triton_urls:
                raise UsageError(
                    "--triton-discover and --triton-url exclude each other: give one of them"
                )
            try:
                split_host_port(self.triton_discover)
            except ValueError:
                raise UsageError(
                    f"--triton-discover takes HOST:PORT (Triton's gRPC port behind a headless "
                    f"Service, e.g. triton-headless:8001), not {self.triton_discover!r}"
                ) from None
            if not 0 < self.discover_interval_s <= 3600:
                raise UsageError(
                    f"--discover-interval must be > 0 and <= 3600 seconds, "
                    f"not {self.discover_interval_s}"
                )
            return
        urls = self.replica_urls
        for url in urls:
            try:
                split_host_port(url.partition("://")[2] or url)
            except ValueError:
                raise UsageError(
                    f"--triton-url takes Triton's gRPC HOST:PORT (e.g. 127.0.0.1:8001), not {url!r}"
                ) from None
        repeated = sorted({url for url in urls if urls.count(url) > 1})
        if repeated:
            raise UsageError(f"--triton-url {repeated[0]} is given twice: give each replica once")

    @property
    def replica_urls(self) -> tuple[str, ...]:
        """The static replicas: ``triton_urls``, else ``triton_url`` (none with discovery)."""
        if self.triton_discover is not None:
            return ()
        return self.triton_urls or (self.triton_url,)

    @property
    def tls(self) -> bool:
        """Whether the gateway serves HTTPS."""
        return self.ssl_certfile is not None


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


def read_api_keys(path: str | Path, flag: str = "--api-keys-file") -> tuple[str, ...]:
    """The keys in ``path``: one a line; blank lines and ``#`` comments skipped.

    ``flag`` names the option in the messages (``--metrics-key-file`` reads the same way).

    Raises:
        UsageError: the file cannot be read, or holds no key.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {flag} {path}: {exc.strerror}") from exc
    keys = tuple(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise UsageError(f"{flag} {path} holds no key: write one key per line")
    return keys


def tokenizers_from(pairs: Mapping[str, str]) -> dict[str, Path]:
    """The ``--tokenizer`` pairs with their folders as paths."""
    return {name: Path(folder) for name, folder in pairs.items()}
