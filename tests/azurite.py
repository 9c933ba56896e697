"""A real Azurite Blob emulator on a free loopback port, for tests and benchmarks.

``scripts/install_azurite.sh`` (run by ``make setup``) installs the npm package into
``.tools/azurite``. Each ``Azurite`` keeps its data in a temporary folder and is
stopped (and the folder removed) on ``stop()``. Test modules get the session's one
instance through the ``azurite`` fixture (``pytest_plugins = ["azurite"]``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    """One ``azurite-blob`` process with its own data folder."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.location = Path(tempfile.mkdtemp(prefix="tritonkit-azurite-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={self.account_url};"
        )

    def start(self, timeout_s: float = 30.0) -> Azurite:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `bash scripts/install_azurite.sh`")
        self.process = subprocess.Popen(
            [str(BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--location", str(self.location), "--skipApiVersionCheck", "--disableTelemetry",
             "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"azurite exited at start: {err.strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"azurite did not listen on {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.location, ignore_errors=True)

    def new_container(self) -> str:
        """Create a fresh container (a unique name) and return its name."""
        from azure.storage.blob import BlobServiceClient

        name = f"t{uuid.uuid4().hex[:12]}"
        service = BlobServiceClient.from_connection_string(self.connection_string())
        service.create_container(name)
        return name

    def store(self, container: str, prefix: str = "") -> object:
        """A ``tritonkit.blob.BlobStore`` on ``container``/``prefix``."""
        from tritonkit.blob import connect

        return connect(container, prefix, connection_string=self.connection_string())


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """The session's Azurite (started once, stopped at the end)."""
    server = Azurite().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def blob_repos(served: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two local repositories of an ``llm`` with different weights, from the session's exports.

    ``a``: tiny-llama (what ``served`` serves as ``llm``); ``b``: the tiny Llama of seed 0
    (what ``served`` serves as ``llama``), renamed ``llm``; so their greedy texts differ.
    """
    from tritonkit.model_repository import RepositorySpec, build_repository

    exports = served.repository.parent / "exports"
    root = tmp_path_factory.mktemp("blob-repos")
    repos = {}
    for key, export in (("a", "llm"), ("b", "llama")):
        assert (exports / export / "export.json").is_file(), exports
        repos[key] = build_repository(
            exports / export, root / key, spec=RepositorySpec(name="llm", sync_instances=1)
        ).path
    return repos
