"""``TritonServer``: the real ``tritonserver`` process, started, waited on and stopped.

    with TritonServer("model_repository", http_port=0, grpc_port=0, metrics_port=0) as server:
        LLMClient(server.grpc_url).generate("Hello")

``start()`` returns once ``/v2/health/ready`` answers 200 and fails fast, with the
server's own error line, when the process exits during startup (a model that does not
load, a port already bound) or the startup timeout passes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from tritonkit.errors import ServerError, UsageError

from .binary import backend_directory, find_distribution, server_environment
from .log import LogSink, ServerLog
from .ports import free_ports, port_in_use
from .python_env import python_environment

ModelControlMode = Literal["none", "explicit", "poll"]

# Repositories Triton reads itself (its build has Azure, S3 and GCS support). They are
# passed through unchanged; credentials travel in ``env`` (for Azure: AZURE_STORAGE_ACCOUNT
# and AZURE_STORAGE_KEY), which is the hook for publishing to and serving from Blob.
REMOTE_SCHEMES = ("as://", "s3://", "gs://")

POLL_INTERVAL_S = 0.1  # between readiness probes during startup

# Straight to the local server, whatever http_proxy says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_remote_repository(repository: str | os.PathLike[str]) -> bool:
    """Whether ``repository`` is a cloud URL (``as://ACCOUNT/CONTAINER/PREFIX``, s3://, gs://)."""
    return str(repository).startswith(REMOTE_SCHEMES)


class TritonServer:
    """One ``tritonserver`` process with the python backend, on loopback ports by default.

    A port of 0 or None picks a free port at ``start()``; the ``*_url`` properties give
    the chosen ``HOST:PORT``. The server's output is always captured (``log``), and can be
    forwarded (``forward_log``: ``sys.stderr`` or a callable) and written to ``log_file``.
    """

    def __init__(
        self,
        repository: str | os.PathLike[str],
        *,
        http_port: int | None = 8000,
        grpc_port: int | None = 8001,
        metrics_port: int | None = 8002,
        host: str = "127.0.0.1",  # address the three services bind to; 0.0.0.0 exposes them
        model_control_mode: ModelControlMode = "none",  # none: load every model at start
        load_models: Sequence[str] = (),  # with "explicit": the models to load at start
        log_verbose: int = 0,
        exit_timeout_s: int = 30,  # how long a stopping server waits for in-flight requests
        startup_timeout_s: float = 300.0,  # large models take minutes to load
        forward_log: LogSink | None = None,
        log_file: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,  # added to the environment (cloud credentials)
        # The virtual environment python models import from; "auto": vLLM's for a local
        # repository with a vLLM entry model (serve/python_env.py), else this one.
        python_env: str | os.PathLike[str] | None = "auto",
    ) -> None:
        if model_control_mode not in ("none", "explicit", "poll"):
            raise UsageError(
                f"model_control_mode must be none, explicit or poll, not {model_control_mode!r}"
            )
        if load_models and model_control_mode != "explicit":
            raise UsageError("load_models needs model_control_mode='explicit'")
        self.repository = str(repository)
        self.host = host
        self._ports = {"http": http_port or 0, "grpc": grpc_port or 0, "metrics": metrics_port or 0}
        self.model_control_mode = model_control_mode
        self.load_models = list(load_models)
        self.log_verbose = log_verbose
        self.exit_timeout_s = exit_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)
        self._forward = forward_log
        self._log_file = log_file
        self._env = dict(env or {})
        self._python_env = python_env
        self._process: subprocess.Popen[bytes] | None = None
        self._log: ServerLog | None = None

    # -- addresses ---------------------------------------------------------------------

    def _address(self, service: str) -> str:
        port = self._ports[service]
        if not port:
            raise ServerError(f"the {service} port is picked at start(): start the server first")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{port}"

    @property
    def http_url(self) -> str:
        """``HOST:PORT`` of the HTTP/REST service (health, metadata, generate).

        Raises:
            ServerError: the port is picked at start and the server has not started.
        """
        return self._address("http")

    @property
    def grpc_url(self) -> str:
        """``HOST:PORT`` of the gRPC service (streaming inference)."""
        return self._address("grpc")

    @property
    def metrics_url(self) -> str:
        """``HOST:PORT`` of the Prometheus metrics service (``/metrics``)."""
        return self._address("metrics")

    def endpoints(self) -> dict[str, str]:
        """The three services as full URLs."""
        return {
            "http": f"http://{self.http_url}",
            "grpc": f"grpc://{self.grpc_url}",
            "metrics": f"http://{self.metrics_url}/metrics",
        }

    def describe(self) -> str:
        """A few lines for a terminal: the endpoints and how to call them."""
        e = self.endpoints()
        return "\n".join(
            [
                f"tritonserver ready (pid {self.pid}), repository {self.repository}",
                f"  HTTP     {e['http']}    (health: {e['http']}/v2/health/ready)",
                f"  gRPC     {e['grpc']}",
                f"  metrics  {e['metrics']}",
                f"try: tritonkit generate 'Hello!' --chat --url {self.grpc_url}",
            ]
        )

    # -- process -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> ServerLog:
        """The captured server output.

        Raises:
            ServerError: the server was never started.
        """
        if self._log is None:
            raise ServerError("the server has not been started")
        return self._log

    def command(self, backend_dir: str | os.PathLike[str] = "BACKEND_DIR") -> list[str]:
        """The ``tritonserver`` arguments after the binary (ports as resolved so far)."""
        args = [
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self._ports['http']}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self._ports['grpc']}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self._ports['metrics']}",
            f"--model-control-mode={self.model_control_mode}",
            *(f"--load-model={m}" for m in self.load_models),
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        return args + self.extra_args

    def _check_before_start(self) -> None:
        if not is_remote_repository(self.repository):
            path = Path(self.repository)
            if not path.is_dir():
                raise ServerError(
                    f"model repository {self.repository} does not exist: pass the folder that "
                    "holds MODEL/config.pbtxt (or an as:// URL)"
                )
            self.repository = str(path.resolve())
        wanted = [p for p in self._ports.values() if p]
        if len(set(wanted)) != len(wanted):
            raise UsageError(f"the HTTP, gRPC and metrics ports must differ: {self._ports}")
        bind_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        for service, port in self._ports.items():
            if port and port_in_use(port, bind_host):
                raise ServerError(
                    f"{service} port {port} is already in use (another tritonserver?): "
                    f"stop it or pick another port (0 picks a free one)"
                )
        missing = [s for s, p in self._ports.items() if not p]
        for service, port in zip(missing, free_ports(len(missing), bind_host)):
            self._ports[service] = port

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready.

        Raises:
            ServerError: already running; the repository path does not exist; a port is
                taken; the wheel is missing; the server exited during startup (the message
                quotes its error line, e.g. the model that failed to load); or it was not
                ready within ``startup_timeout_s``.
        """
        if self.is_running:
            raise ServerError(f"the server is already running (pid {self.pid})")
        self._check_before_start()
        dist = find_distribution()
        python_env = self._python_env
        if python_env == "auto":
            local = not is_remote_repository(self.repository)
            python_env = python_environment(self.repository) if local else None
        env = server_environment(dist, python_env=python_env)
        env.update(self._env)
        argv = [str(dist.binary), *self.command(backend_directory(dist))]
        try:
            self._process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            )
        except OSError as exc:
            raise ServerError(f"cannot run {dist.binary}: {exc}") from exc
        assert self._process.stdout is not None
        self._log = ServerLog(self._process.stdout, forward=self._forward, log_file=self._log_file)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _metrics_enabled(self) -> bool:
        return not any(a.replace(" ", "=") == "--allow-metrics=false" for a in self.extra_args)

    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _wait_ready(self) -> None:
        assert self._process is not None and self._log is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                self._log.join(timeout=5)
                reason = self._log.failure_reason() or "no error line in its log"
                raise ServerError(f"tritonserver exited during startup (code {code}): {reason}")
            # Triton starts its metrics service after HTTP answers ready: wait for both.
            metrics_up = not self._metrics_enabled() or port_in_use(
                self._ports["metrics"], self._connect_host()
            )
            if self.is_ready() and metrics_up:
                return
            if time.monotonic() > deadline:
                why = self._log.failure_reason()
                raise ServerError(
                    f"tritonserver was not ready after {self.startup_timeout_s:.0f}s"
                    + (f": {why}" if why else ": raise startup_timeout_s for large models")
                )
            time.sleep(POLL_INTERVAL_S)

    def is_ready(self, timeout: float = 1.0) -> bool:
        """Whether ``/v2/health/ready`` answers 200 now (False while starting or stopped)."""
        if not self._ports["http"]:
            return False
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with _NO_PROXY.open(url, timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait(self, timeout: float | None = None) -> int:
        """Block until the server exits; returns its exit code.

        Raises:
            ServerError: it was never started.
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        if self._process is None:
            raise ServerError("the server has not been started")
        return self._process.wait(timeout)

    def stop(self) -> int | None:
        """Stop the server: SIGTERM, wait for in-flight work, SIGKILL as a last resort.

        Returns the exit code (None if it never started). Safe to call twice.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.exit_timeout_s + 15)  # it waits exit_timeout_s, then unloads
            except subprocess.TimeoutExpired:
                # The group holds only what we started: the server and its python stubs.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.join(timeout=2)
            if self._log.is_reading():
                # A python-backend stub outlived the server and holds its output open.
                # Its group is the server's (start_new_session): nothing else is in it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                self._log.join(timeout=5)
        return process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
