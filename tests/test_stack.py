"""The compose stack, run for real on this machine's CPU (marked ``docker``).

A Docker engine of our own (scripts/dockerd.sh), the base image made with debootstrap
(no registry is reachable), the CPU image of the stack and an Azurite image built here;
then compose.yaml + compose.cpu.yaml exactly as deployed: the real SmolLM2 published to
the stack's Azurite, ``model-sync`` pulling it into the models volume as the image's
non-root user, Triton serving it through the real entrypoint (admin key, restricted
APIs), the gateway as the public port. The openai SDK through the gateway and
tritonkit's client in its own container must get the same answer (Paris); Triton's
repository API without the key is refused; an int4 version published and promoted under
load fails no request. ``tritonkit deploy`` runs over a real sshd on loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
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


def _compose_v2() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
TRITON_PORTS = ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT")


pytest_plugins = ["azurite"]
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("dockerd") or not _compose_v2(),
        reason="needs root, dockerd and compose v2 (scripts/install_deploy_tools.sh)",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
CLIENT_IMAGE = "tritonkit-client:latest"  # scripts/build_cpu_image.sh builds it


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


def _engine_answers(env: dict[str, str]) -> bool:
    probe = subprocess.run(["docker", "info"], capture_output=True, env=env, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """A Docker engine with the stack's images built: the one that answers already (the
    caller's ``DOCKER_HOST`` or default socket, or ours from an earlier run), else one of
    our own (scripts/dockerd.sh: own socket and exec root; images cached under
    ``TRITONKIT_CACHE``), stopped at the end. Where none can start, the tests skip."""
    env = {**os.environ}
    if not _engine_answers(env):
        env.pop("DOCKER_HOST", None)
        proc = subprocess.run(["bash", "scripts/dockerd.sh", "start"], capture_output=True,
                              text=True, env=env, cwd=ROOT, timeout=120, check=False)  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"no Docker engine could start: {proc.stderr.strip()[-300:]}")
        env["DOCKER_HOST"] = proc.stdout.strip().split("=", 1)[1]
        ours = True
    else:
        ours = False
    try:
        _sh("bash", "scripts/build_cpu_image.sh", env=env, timeout=900)
        _sh("bash", "scripts/build_azurite_image.sh", env=env, timeout=900)
        yield env
    finally:
        if ours:
            _sh("bash", "scripts/dockerd.sh", "stop", env=env, timeout=120)


@pytest.fixture(scope="module")
def repos(
    smollm2_export: Path, smollm2_int4_export: Path, tmp_path_factory: Any
) -> dict[str, Path]:
    """SmolLM2's repositories as ``llm``: float32 (version 1) and int4 (version 2)."""
    from tritonkit.model_repository import RepositorySpec, build_repository

    root = tmp_path_factory.mktemp("smol-repos")
    return {
        kind: build_repository(
            export, root / kind, spec=RepositorySpec(name="llm", sync_instances=1)
        ).path
        for kind, export in (("float32", smollm2_export), ("int4", smollm2_int4_export))
    }


@dataclass
class Stack:
    env: dict[str, str]
    compose: list[str]
    ports: dict[str, int]
    api_key: str
    admin_key: str
    blob: str = ""  # the stack's Azurite, as this machine reaches it

    def run(self, *args: str, timeout: float = 600) -> str:
        return _sh(*self.compose, *args, env=self.env, timeout=timeout)


@pytest.fixture(scope="module")
def stack(docker_env: dict[str, str], repos: dict[str, Path], tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    ports = {
        name: _free_port()
        for name in ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT",
                     "GATEWAY_PORT", "AZURITE_PORT")
    }  # fmt: skip
    api_key, admin_key = uuid.uuid4().hex, uuid.uuid4().hex
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
                "TRITON_ADMIN_KEY=" + admin_key,
                "AZURE_CONTAINER=models",
                "MODEL_PREFIX=smol",
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
    s = Stack(env, compose, ports, api_key, admin_key)
    try:
        s.run("up", "-d", "--no-build", "azurite")
        local = (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{ports['AZURITE_PORT']}/{account};"
        )
        s.blob = local
        _wait(lambda: _container(local), "azurite", 60)
        publish_repository(repos["float32"], connect("models", "smol", connection_string=local))
        s.run("up", "-d", "--no-build", "model-sync", "triton-cpu", "gateway")
        health = f"http://127.0.0.1:{ports['GATEWAY_PORT']}/health"
        _wait(lambda: httpx.get(health, timeout=2).status_code == 200 or None, "gateway", 240)
        yield s
    except BaseException:
        print(s.run("logs", "--tail", "60"))
        raise
    finally:
        s.run("down", "-v", "--remove-orphans", "-t", "5", timeout=300)
        label = f"label=com.docker.compose.project={project}"
        left = _sh("docker", "ps", "-aq", "--filter", label, env=env)
        left += _sh("docker", "volume", "ls", "-q", "--filter", label, env=env)
        assert left.strip() == "", f"left behind: {left}"


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


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gateway_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.ports['GATEWAY_PORT']}/v1",
        api_key=stack.api_key,
        max_retries=0,
    )


def _ask(client: openai.OpenAI) -> str:
    got = client.chat.completions.create(
        model="llm",
        messages=QUESTION,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    assert got.choices[0].finish_reason == "stop"
    return got.choices[0].message.content or ""


@pytest.fixture(scope="module")
def answer(gateway_client: openai.OpenAI) -> str:
    """SmolLM2's answer through the stack's gateway (the openai SDK, greedy)."""
    return _ask(gateway_client)


def test_gateway_in_the_stack_answers_with_the_real_model(
    gateway_client: openai.OpenAI, answer: str
):
    assert [m.id for m in gateway_client.models.list()] == ["llm"]
    assert "Paris" in answer
    wrong = openai.OpenAI(base_url=gateway_client.base_url, api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_client_container_calls_triton_over_grpc(stack: Stack, answer: str):
    out = stack.run(
        "run", "--rm", "--no-deps", "client", "generate", QUESTION[0]["content"], "--chat",
        "--url", "triton:8001", "--max-tokens", "24", "--temperature", "0", "--exclude-input",
    )  # fmt: skip
    assert out.strip() == answer.strip()  # the same tokens over gRPC, from its own container
    # ... from the client image: the base install, none of the server's weight
    found = _sh("docker", "run", "--rm", "--entrypoint", "python", CLIENT_IMAGE, "-c",
                "import importlib.util as u; print(' '.join(m for m in ('tritonclient', 'httpx', "
                "'jinja2', 'torch', 'onnxruntime', 'tritonserver', 'pytriton', 'fastapi') "
                "if u.find_spec(m)))", env=stack.env).split()  # fmt: skip
    assert found == ["tritonclient", "httpx", "jinja2"]
    sizes = {image: int(_sh("docker", "image", "inspect", "-f", "{{.Size}}", image, env=stack.env))
             for image in (CLIENT_IMAGE, "tritonkit-cpu:latest")}  # fmt: skip
    assert sizes[CLIENT_IMAGE] < 0.75 * sizes["tritonkit-cpu:latest"], sizes  # 363 vs 750 MB


def test_tritons_repository_api_is_refused_without_the_admin_key(stack: Stack):
    base = f"http://127.0.0.1:{stack.ports['TRITON_HTTP_PORT']}"
    refused = httpx.post(f"{base}/v2/repository/index")
    assert "restricted" in refused.text
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200


def test_a_version_published_and_promoted_under_load_fails_no_request(
    stack: Stack, repos: dict[str, Path], gateway_client: openai.OpenAI, answer: str
):
    # Version 2: SmolLM2 with 4-bit weights, published and pulled beside version 1.
    publish_repository(repos["int4"], connect("models", "smol", connection_string=stack.blob))
    stack.run("run", "--rm", "--no-deps", "model-sync")
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                answers.append(_ask(gateway_client))
            except Exception as exc:  # every failure is counted and shown
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    grpc = f"127.0.0.1:{stack.ports['TRITON_GRPC_PORT']}"
    env = {**stack.env, "TRITON_ADMIN_KEY": stack.admin_key}  # from the environment
    try:
        _wait(lambda: len(answers) >= 3, "answers from version 1", 120)
        out = _sh(sys.executable, "-m", "tritonkit", "versions", "promote", "--model", "llm",
                  "--version", "2", "--server", grpc, env=env)  # fmt: skip
        assert "serves 1 -> 2" in out
        switched = len(answers)
        _wait(lambda: len(answers) >= switched + 3, "answers from version 2", 120)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert failures == []
    assert all("Paris" in a for a in answers), set(answers)  # each whole, from one version
    listed = _sh(sys.executable, "-m", "tritonkit", "versions", "list", "--model", "llm",
                 "--server", grpc, env=env)  # fmt: skip
    ready = [line.split()[1] for line in listed.splitlines() if "READY" in line]
    assert ready == ["2"]


# ---- tritonkit deploy --host, over a real SSH server on loopback ---------------------------


@dataclass
class Sshd:
    host: str  # USER@127.0.0.1:PORT
    env: dict[str, str]  # PATH with an ssh that uses the test key; DOCKER_CONFIG


@pytest.fixture(scope="module")
def sshd(docker_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Sshd]:
    """An sshd of our own on a free loopback port, admitting one test key; its sessions
    reach this machine's test engine (DOCKER_HOST), as a VM's would reach its own."""
    tmp = tmp_path_factory.mktemp("sshd")
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "host_key"))
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id"))
    shutil.copy(tmp / "id.pub", tmp / "authorized_keys")
    port = _free_port()
    engine = docker_env.get("DOCKER_HOST")  # sessions reach the same engine, as on a VM
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        + (f"SetEnv DOCKER_HOST={engine}\n" if engine else "")
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    proc = subprocess.Popen(
        [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-f", str(tmp / "sshd_config"),
         "-E", str(tmp / "sshd.log")]
    )  # fmt: skip
    # ssh reads ~/.ssh of the passwd entry, not $HOME: an `ssh` first on PATH adds our
    # config (the test key, no host-key prompt) for docker's SSH helper and the deploy.
    (tmp / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {tmp / 'id'}\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    real_ssh = shutil.which("ssh") or "/usr/bin/ssh"
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec {real_ssh} -F {tmp / "ssh_config"} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    config = tmp / "docker-config"  # our contexts stay here, not in ~/.docker
    config.mkdir()
    (config / "cli-plugins").symlink_to(Path.home() / ".docker" / "cli-plugins")
    env = {**docker_env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_CONFIG": str(config)}
    host = f"root@127.0.0.1:{port}"
    try:
        _wait(lambda: _sh("ssh", f"ssh://{host}", "docker", "info", env=env, timeout=20),
              "sshd", 30)  # fmt: skip
        yield Sshd(host, env)
    finally:
        proc.terminate()
        proc.wait(10)


def test_deploy_over_ssh_brings_the_cpu_stack_up_and_down(
    sshd: Sshd, blob_repos: dict[str, Path], tmp_path: Path
):
    project = tmp_path / "vmstack"
    project.mkdir()
    for name in ("compose.yaml", "compose.cpu.yaml", "scripts"):
        (project / name).symlink_to(ROOT / name)
    gateway_port, azurite_port = _free_port(), _free_port()
    account = "devstoreaccount1"
    (project / "gateway_api_keys.txt").write_text("deploy-key\n")
    (project / ".env").write_text(
        f"TRITON_ADMIN_KEY={uuid.uuid4().hex}\nAZURE_CONTAINER=models\nMODEL_PREFIX=tiny\n"
        f"AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=http;AccountName={account};"
        f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://azurite:10000/{account};\n"
        f"GATEWAY_BIND=127.0.0.1\nGATEWAY_PORT={gateway_port}\nAZURITE_PORT={azurite_port}\n"
        + "".join(
            f"{k}={_free_port()}\n"
            for k in ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT")
        )
    )
    files = ["-f", str(project / "compose.yaml"), "-f", str(project / "compose.cpu.yaml")]
    compose = ["docker", "compose", "--project-directory", str(project), "--env-file",
               str(project / ".env"), *files, "--profile", "local", "--profile", "cpu"]  # fmt: skip
    env = {**sshd.env, "GATEWAY_API_KEYS_FILE": str(project / "gateway_api_keys.txt")}
    deploy = [sys.executable, "-m", "tritonkit", "deploy", "--host", sshd.host,
              "--project-dir", str(project), "--cpu", "--profile", "local"]  # fmt: skip
    health = f"http://127.0.0.1:{gateway_port}/health"
    try:
        _sh(*compose, "up", "-d", "--no-build", "azurite", env=env)
        local = (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{azurite_port}/{account};"
        )
        _wait(lambda: _container(local), "azurite", 60)
        publish_repository(blob_repos["a"], connect("models", "tiny", connection_string=local))
        for extra in ((), ("--ship-image",)):
            out = _sh(*deploy, *extra, env=env, timeout=900)
            assert f"deployed to {sshd.host}" in out and "copy the gateway's API keys" in out
            _wait(lambda: httpx.get(health, timeout=2).status_code == 200 or None, "gateway", 240)
            models = httpx.get(
                f"http://127.0.0.1:{gateway_port}/v1/models",
                headers={"Authorization": "Bearer deploy-key"},  # the key file shipped over SSH
            )
            assert [m["id"] for m in models.json()["data"]] == ["llm"]
            if extra:
                assert "docker save tritonkit-cpu:latest | gzip | ssh" in out
            out = _sh(*deploy, "--down", env=env, timeout=300)
            assert f"stopped on {sshd.host}" in out
            with pytest.raises(httpx.HTTPError):
                httpx.get(health, timeout=2)
            _sh(*compose, "up", "-d", "--no-build", "azurite", env=env)  # down stopped it too
    finally:
        _sh(*compose, "--profile", "client", "down", "-v", "--remove-orphans", "-t", "5", env=env)
