"""``tritonkit.serve`` against the real tritonserver of the nvidia-pytriton wheel."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import TOY_REPOSITORY, broken_repository, toy_server

from tritonkit import cli
from tritonkit.errors import ServerError, UsageError
from tritonkit.serve import (
    TritonServer,
    backend_directory,
    failure_reason,
    find_distribution,
    is_remote_repository,
    port_in_use,
    server_environment,
)

pytestmark = pytest.mark.slow

# Lines of a real failed start (model load failure, then the final error).
FAILED_START_LOG = [
    'E1129 10:39:33.071197 4895 server.cc:241] "CudaDriverHelper has not been initialized."',
    'I1129 10:39:34.411455 4895 pb_stub.cc:366] "Failed to initialize Python stub: '
    'RuntimeError: boom\\n\\nAt:\\n  /tmp/broken/1/model.py(3): initialize\\n"',
    "E1129 10:39:34.655595 4895 model_lifecycle.cc:642] \"failed to load 'broken' version 1: "
    'Internal: RuntimeError: boom\\n\\nAt:\\n  /tmp/broken/1/model.py(3): initialize\\n"',
    "error: creating server: Internal - failed to load all models",
]


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_failure_reason_prefers_the_model_load_error() -> None:
    assert failure_reason(FAILED_START_LOG) == (
        "failed to load 'broken' version 1: Internal: RuntimeError: boom"
    )
    assert failure_reason(FAILED_START_LOG[:1]) is None  # harmless on a machine without GPU
    assert failure_reason(["error: creating server: x"]) == "error: creating server: x"


def test_backend_directory_and_environment() -> None:
    dist = find_distribution()
    python = backend_directory(dist) / "python"
    assert (python / "libtriton_python.so").is_file()
    assert (python / "triton_python_backend_stub").is_file()
    env = server_environment(dist, {"LD_LIBRARY_PATH": "/old", "PATH": "/usr/bin"})
    ld = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert ld[1:] == [str(dist.libs), "/old"]  # the interpreter's LIBDIR first
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.prefix) / "bin")


def test_start_ready_stop() -> None:
    server = toy_server()
    with server:
        assert server.is_running and server.is_ready()
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as r:
            assert r.status == 200
        with urllib.request.urlopen(server.endpoints()["metrics"]) as r:
            assert b"nv_inference_request_success" in r.read()
        assert server.http_url.startswith("127.0.0.1:")
        assert server.grpc_url in server.describe()
        assert server.log.wait_for("Started GRPCInferenceService", timeout=1)
        ports = [int(u.rsplit(":", 1)[1]) for u in (server.http_url, server.grpc_url)]
        pid = server.pid
    assert not server.is_running
    assert server.stop() == 0  # idempotent, and the exit was clean
    with pytest.raises(ProcessLookupError):
        os.kill(pid or 0, 0)
    assert not any(port_in_use(p) for p in ports)


def test_port_in_use_fails_fast(listener: int) -> None:
    start = time.monotonic()
    with pytest.raises(ServerError, match=f"grpc port {listener} is already in use"):
        toy_server(grpc_port=listener).start()
    assert time.monotonic() - start < 1


def test_server_bind_error_is_quoted(listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Skip our own check, as when another process takes the port between check and bind:
    # the server's own bind error must end the start.
    monkeypatch.setattr("tritonkit.serve.server.port_in_use", lambda port, host: False)
    with pytest.raises(ServerError, match=r"failed to start GRPC service.*already in use"):
        toy_server(grpc_port=listener).start()


def test_model_that_fails_to_load_stops_the_start(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ServerError) as info:
        toy_server(broken_repository(tmp_path / "repo")).start()
    message = str(info.value)
    assert "exited during startup" in message
    assert "failed to load 'broken' version 1" in message
    assert "weights file model.onnx is missing" in message
    assert "\n" not in message
    assert time.monotonic() - start < 20


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        toy_server(tmp_path / "nothing").start()


def test_bad_options() -> None:
    with pytest.raises(UsageError, match="explicit"):
        TritonServer(TOY_REPOSITORY, load_models=["llm"])
    with pytest.raises(UsageError, match="must differ"):
        TritonServer(TOY_REPOSITORY, http_port=9000, grpc_port=9000).start()
    with pytest.raises(ServerError, match="start the server first"):
        _ = toy_server().grpc_url


def test_remote_repository_is_passed_through() -> None:
    url = "as://myaccount/models/tiny-llama"
    assert is_remote_repository(url) and not is_remote_repository(str(TOY_REPOSITORY))
    server = TritonServer(url, model_control_mode="explicit", load_models=["llm"])
    assert f"--model-repository={url}" in server.command()
    assert "--load-model=llm" in server.command()


def test_cli_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.run(["serve", "--help"])
    assert info.value.code == 0
    assert "tritonkit serve --repository" in capsys.readouterr().out


def test_cli_serve_explicit_mode_and_sigterm(tmp_path: Path) -> None:
    # The broken model is in the repository but not loaded: explicit mode starts anyway.
    repo = broken_repository(tmp_path / "repo")
    argv = [sys.executable, "-m", "tritonkit", "serve", "--repository", str(repo)]
    argv += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--exit-timeout", "2"]
    argv += ["--model-control-mode", "explicit", "--load-model", "llm", "--startup-timeout", "60"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("tritonserver ready"), first
        rest = "".join(process.stdout.readline() for _ in range(4))
        grpc_url = re.search(r"grpc://(\S+)", rest)
        assert grpc_url, rest
        from tritonkit.client import LLMClient

        with LLMClient(grpc_url.group(1)) as client:
            assert client.generate("a b", exclude_input_in_output=True).text == " a b"
            states = {m.name: m.state for m in client.models()}
        assert states["llm"] == "READY" and states["broken"] != "READY"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
