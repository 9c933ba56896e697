"""The compose stack, run for real on this machine's CPU (marked ``docker``).

A Docker engine of our own (scripts/dockerd.sh), the base image made with debootstrap
(no registry is reachable), the CPU image of the stack and an Azurite image built here;
then compose.yaml + compose.cpu.yaml exactly as deployed: a repository published to the
stack's Azurite, ``model-sync`` pulling it into the models volume as the image's
non-root user, Triton serving it through the real entrypoint (admin key, restricted
APIs), the gateway as the public port. The openai SDK through the gateway and
tritonkit's client in its own container must give the model's answer; Triton's
repository API without the key must be refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tritonkit.blob import connect, publish_repository
from tritonkit.client import LLMClient


def _compose_v2() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
PROMPT, TOKENS = "one two three four", 12


pytest_plugins = ["azurite"]
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("dockerd") or not _compose_v2(),
        reason="needs root, dockerd and compose v2 (scripts/install_deploy_tools.sh)",
    ),
]

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sh(*cmd: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """Our own engine (started here unless already up), with the stack's images built."""
    env = {**os.environ}
    env.pop("DOCKER_HOST", None)
    started = _sh("bash", "scripts/dockerd.sh", "start", env=env, timeout=120)
    env["DOCKER_HOST"] = started.strip().split("=", 1)[1]
    _sh("bash", "scripts/build_cpu_image.sh", env=env, timeout=900)
    _sh("bash", "scripts/build_azurite_image.sh", env=env, timeout=900)
    yield env
    # The engine keeps its images (cached for the next run); its containers are gone.


@dataclass
class Stack:
    env: dict[str, str]
    compose: list[str]
    ports: dict[str, int]
    api_key: str

    def run(self, *args: str, timeout: float = 600) -> str:
        return _sh(*self.compose, *args, env=self.env, timeout=timeout)


@pytest.fixture(scope="module")
def stack(
    docker_env: dict[str, str], blob_repos: dict[str, Path], tmp_path_factory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    ports = {
        name: _free_port()
        for name in ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT",
                     "GATEWAY_PORT", "AZURITE_PORT")
    }  # fmt: skip
    api_key = uuid.uuid4().hex
    keys = tmp / "keys.txt"
    keys.write_text(api_key + "\n")
    account = "devstoreaccount1"
    in_stack = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://azurite:10000/{account};"
    )
    env_file = tmp / "env"
    env_file.write_text(
        "\n".join(
            [
                "TRITON_ADMIN_KEY=" + uuid.uuid4().hex,
                "AZURE_CONTAINER=models",
                "MODEL_PREFIX=tiny",
                "AZURE_STORAGE_CONNECTION_STRING=" + in_stack,
                "GATEWAY_BIND=127.0.0.1",
                *(f"{k}={v}" for k, v in ports.items()),
            ]
        )
        + "\n"
    )
    env = {**docker_env, "GATEWAY_API_KEYS_FILE": str(keys)}
    project = f"tk{uuid.uuid4().hex[:8]}"
    compose = ["docker", "compose", "-p", project, "--env-file", str(env_file),
               "-f", "compose.yaml", "-f", "compose.cpu.yaml",
               "--profile", "local", "--profile", "cpu", "--profile", "client"]  # fmt: skip
    s = Stack(env, compose, ports, api_key)
    try:
        s.run("up", "-d", "--no-build", "azurite")
        local = (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{ports['AZURITE_PORT']}/{account};"
        )
        store = _wait(lambda: _container(local), "azurite", 60)
        publish_repository(blob_repos["a"], connect("models", "tiny", connection_string=local))
        assert store is not None
        s.run("up", "-d", "--no-build", "model-sync", "triton-cpu", "gateway")
        health = f"http://127.0.0.1:{ports['GATEWAY_PORT']}/health"
        _wait(lambda: httpx.get(health, timeout=2).status_code == 200 or None, "gateway", 240)
        yield s
    except BaseException:
        print(s.run("logs", "--tail", "60"))
        raise
    finally:
        s.run("down", "-v", "--remove-orphans", "-t", "5", timeout=300)


def _container(connection_string: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection_string)
    service.create_container("models")
    return service


def _wait(probe: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = probe()
            if got:
                return got
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"{what} did not come up within {timeout_s}s (last error: {last})")


@pytest.fixture(scope="module")
def expected(served: Any) -> str:
    """tiny-llama's greedy answer, from the session's own Triton (same weights)."""
    with LLMClient(served.grpc_url, model="llm") as client:
        return client.generate(
            PROMPT, max_tokens=TOKENS, temperature=0.0, exclude_input_in_output=True
        ).text


def test_gateway_in_the_stack_gives_the_models_answer(stack: Stack, expected: str):
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.ports['GATEWAY_PORT']}/v1",
        api_key=stack.api_key,
        max_retries=0,
    )
    assert [m.id for m in client.models.list()] == ["llm"]
    got = client.completions.create(model="llm", prompt=PROMPT, max_tokens=TOKENS, temperature=0)
    assert got.choices[0].text == expected and expected
    wrong = openai.OpenAI(base_url=client.base_url, api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_client_container_calls_triton_over_grpc(stack: Stack, expected: str):
    out = stack.run(
        "run", "--rm", "--no-deps", "client", "generate", PROMPT, "--url", "triton:8001",
        "--max-tokens", str(TOKENS), "--temperature", "0", "--exclude-input",
    )  # fmt: skip
    assert out.strip() == expected.strip()


def test_tritons_repository_api_is_refused_without_the_admin_key(stack: Stack):
    base = f"http://127.0.0.1:{stack.ports['TRITON_HTTP_PORT']}"
    refused = httpx.post(f"{base}/v2/repository/index")
    assert "restricted" in refused.text
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200
