"""Run the gateway: ``serve`` (blocking, for the CLI) and ``GatewayServer`` (a background thread).

Both run uvicorn on one event loop; ``AsyncLLMClient`` multiplexes every generation over
one gRPC connection per Triton model, so one process serves many concurrent streams.
uvicorn runs with ``connections.py``'s guarded h11 protocol (a cap on open sockets,
deadlines for headers and bodies) and the app behind ``RequestLimit`` (requests in
flight); with ``ssl_certfile``/``ssl_keyfile`` it serves HTTPS.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from tritonkit.errors import ServerError, UsageError

from .app import create_app
from .auth import KeyChecker
from .config import DEFAULT_PORT, GatewayConfig
from .connections import RequestLimit, guarded_protocol, usable_connections


def serve(
    config: GatewayConfig,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    log_level: str = "info",
    access_log: bool = True,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn's handlers; in-flight streams get 10 s).

    ``on_listening`` gets ``http(s)://HOST:PORT`` once the socket is bound (port 0 picks
    one); connections made from then on wait in the backlog until uvicorn takes them. The
    ``tritonkit.gateway`` log (what a 5xx was about, by request id) goes to stderr with
    uvicorn's.

    Raises:
        UsageError: an invalid setting, a certificate or key that cannot be loaded, or
            ``host:port`` cannot be bound.
    """
    app = create_app(config)
    check_tls(config)
    sock = bind(host, port)
    if on_listening is not None:
        bound_host, bound_port = sock.getsockname()[:2]
        on_listening(_url(bound_host, bound_port, config.tls))
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["tritonkit.gateway"] = {"handlers": ["default"], "level": "INFO"}
    uv_config = _uvicorn_config(app, config, host, log_level, access_log, log_config)
    _CleanExitServer(uv_config).run(sockets=[sock])


class _CleanExitServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM / SIGINT after its graceful stop (the process then dies by
    the signal); a stop on request is a clean exit (0) here, as for ``tritonkit serve``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


class GatewayServer:
    """The gateway on a background thread, for tests, benchmarks and notebooks.

    ``with GatewayServer(GatewayConfig(triton_url=URL)) as gw:`` then point an OpenAI
    client at ``gw.url + "/v1"``.
    """

    def __init__(
        self,
        config: GatewayConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        """Build the app and bind ``host:port`` (0: a free port) now.

        Raises:
            UsageError: an invalid setting, a certificate or key that cannot be loaded, or
                the port cannot be bound.
        """
        self.app = create_app(config)
        check_tls(config)
        self.tls = config.tls
        self._sock = bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        uv_config = _uvicorn_config(self.app, config, host, log_level, False)
        self._server = uvicorn.Server(uv_config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http(s)://HOST:PORT`` (the OpenAI base URL is this plus ``/v1``)."""
        return _url(self.host, self.port, self.tls)

    def start(self, timeout_s: float = 30.0) -> GatewayServer:
        """Start serving and wait until it accepts requests.

        Raises:
            ServerError: uvicorn did not start within ``timeout_s``.
        """
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="tritonkit-gateway"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the gateway did not start on {self.url}; see its log above")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (open streams are closed) and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (0: a free port), bound now so no one races us.

    Raises:
        UsageError: the address is taken or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it Nagle holds a response's body behind its headers for the client's delayed ACK
    # (40 ms on every keep-alive request here).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from exc
    return sock


def check_tls(config: GatewayConfig) -> None:
    """Load the certificate and key now, so a bad pair fails before anything listens.

    Raises:
        UsageError: the files are not a PEM certificate and its private key.
    """
    if config.ssl_certfile is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot load --ssl-certfile {config.ssl_certfile} with --ssl-keyfile "
            f"{config.ssl_keyfile}: {exc}; give a PEM certificate and its unencrypted key"
        ) from exc


def _url(host: str, port: int, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _uvicorn_config(
    app: Any,
    config: GatewayConfig,
    host: str,
    log_level: str,
    access_log: bool,
    log_config: dict[str, Any] | None = None,
) -> uvicorn.Config:
    max_connections = usable_connections(config.max_connections) if config.max_connections else 0
    return uvicorn.Config(
        RequestLimit(app, config.limit_concurrency, KeyChecker(config.api_keys)),
        host=host,
        http=guarded_protocol(max_connections, config.header_timeout_s, config.body_timeout_s),
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
        limit_concurrency=None,  # uvicorn's counts idle and half-open connections too
        ssl_certfile=str(config.ssl_certfile) if config.ssl_certfile else None,
        ssl_keyfile=str(config.ssl_keyfile) if config.ssl_keyfile else None,
        log_config=LOGGING_CONFIG if log_config is None else log_config,
    )
