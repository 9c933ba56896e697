"""Immutable releases in a real Azurite (no mock of the Blob SDK), pulled and served by a
real Triton.

What cannot exist here is KServe itself: a pulled release folder stands in for what its
storage initializer downloads into /mnt/models (``verify_release_dir`` is what checks it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from tritonkit.blob import (
    BlobError,
    BlobStore,
    ChecksumError,
    NothingPublished,
    VersionConflict,
    create_release,
    list_releases,
    promote,
    publish_repository,
    pull_release,
    verify_release_dir,
)
from tritonkit.blob.manifest import release_folder
from tritonkit.blob.versions import with_policy
from tritonkit.cli import run
from tritonkit.client import LLMClient
from tritonkit.errors import UsageError
from tritonkit.model_repository import config as cfg
from tritonkit.serve import TritonServer

pytest_plugins = ["azurite"]
pytestmark = pytest.mark.slow
MODELS = ("llm", "llm_decoder", "llm_sync")


class Counted:
    """A BlobStore whose client counts the bytes it sends and receives (request bodies and
    response Content-Length), to show that copies never pass through this machine."""

    def __init__(self, azurite: Any, container: str, prefix: str) -> None:
        self.sent = self.received = 0
        client = ContainerClient.from_connection_string(
            azurite.connection_string(),
            container,
            raw_request_hook=self._request,
            raw_response_hook=self._response,
        )
        self.store = BlobStore(client, prefix)

    def _request(self, request: Any) -> None:
        body = request.http_request.body
        self.sent += len(body) if isinstance(body, bytes | bytearray) else 0

    def _response(self, response: Any) -> None:
        self.received += int(response.http_response.headers.get("Content-Length") or 0)

    def reset(self) -> None:
        self.sent = self.received = 0


def snapshot(store: Any, under: str = "") -> dict[str, bytes]:
    """blob name -> bytes of every blob under the folder ``under`` of the prefix."""
    return {name: store.read(name)[0] for name in store.names(under)}


def names(store: Any) -> dict[str, str]:
    """blob name -> etag of every blob under the prefix (a write changes one)."""
    start = store.name("") + "/" if store.prefix else ""
    return {b.name: b.etag for b in store.client.list_blobs(name_starts_with=start)}


def pinned(text: bytes) -> list[int]:
    policy = cfg.parse(text.decode()).version_policy
    assert policy.WhichOneof("policy_choice") == "specific"
    return sorted(policy.specific.versions)


@pytest.fixture(scope="module")
def released(azurite: Any, blob_repos: dict[str, Path]) -> dict[str, Any]:
    """Repository a published and released as 1; then b promoted and released as 2."""
    counted = Counted(azurite, azurite.new_container(), "team/tiny")
    store = counted.store
    publish_repository(blob_repos["a"], store)
    counted.reset()
    first = create_release(store)
    traffic = (counted.sent, counted.received)
    before = snapshot(store, "releases/000001")
    publish_repository(blob_repos["b"], store, promote=False)
    promote(store, "llm")
    second = create_release(store)
    return {"store": store, "first": first, "second": second, "traffic": traffic,
            "before": before}  # fmt: skip


def test_release_copies_the_served_versions_server_side(released: dict[str, Any]) -> None:
    store, first = released["store"], released["first"]
    assert first.number == 1 and first.models == {m: [1] for m in sorted(MODELS)}
    assert first.storage_uri.endswith("/team/tiny/releases/000001")
    doc = store.read("releases", release_folder(1), "release.json")[0]
    assert hashlib.sha256(doc).hexdigest() == first.sha256
    release = json.loads(doc)
    assert release["release"] == 1 and release["format"] == 1 and release["tritonkit_version"]
    assert release["created_at"] and release["models"] == first.models
    files = {f["path"]: f for f in release["files"]}
    copied = 0
    for model in MODELS:
        assert pinned(store.read("releases", release_folder(1), model, "config.pbtxt")[0]) == [1]
        manifest = json.loads(store.read(model, 1, "manifest.json")[0])
        for entry in manifest["files"]:
            path = f"{model}/1/{entry['path']}"
            assert (files[path]["size"], files[path]["sha256"]) == (entry["size"], entry["sha256"])
            props = store.blob("releases", release_folder(1), path).get_blob_properties()
            assert props.copy.status == "success"  # a Copy Blob inside the account
            assert props.copy.source.split("?")[0].endswith(store.name(model, 1, entry["path"]))
            assert props.size == entry["size"]
            copied += entry["size"]
        assert (
            files[f"{model}/1/manifest.json"]["sha256"]
            == hashlib.sha256(store.read(model, 1, "manifest.json")[0]).hexdigest()
        )
    assert first.bytes_copied == copied
    # Only the claim, pinned configs, manifests and release.json went up from here, and
    # far less came down than the versions hold (listings, manifests, configs).
    sent, received = released["traffic"]
    assert sent == first.bytes_written < copied / 4
    assert received < copied / 2, (received, copied)


def test_release_1_stays_as_it_was_and_release_2_pins_the_promoted_versions(
    released: dict[str, Any],
) -> None:
    store, first, second = released["store"], released["first"], released["second"]
    assert snapshot(store, "releases/000001") == released["before"]  # byte for byte, etc.
    assert second.number == 2
    assert second.models == {"llm": [2], "llm_decoder": [2], "llm_sync": [1]}
    assert pinned(store.read("releases", release_folder(2), "llm", "config.pbtxt")[0]) == [2]
    assert not store.names("releases/000002/llm/1")  # only what is served
    rows = list_releases(store)
    assert [(r.number, r.complete, r.sha256) for r in rows] == [
        (1, True, first.sha256), (2, True, second.sha256),
    ]  # fmt: skip
    assert rows[1].models == second.models and rows[1].files == second.files
    # The releases folder is not a model: versions and pulls of the prefix ignore it.
    from tritonkit.blob import list_versions

    assert {r.model for r in list_versions(store)} == set(MODELS)


@pytest.fixture(scope="module")
def pulled(released: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / "release-1"
    result = pull_release(released["store"], out, 1, expect_sha256=released["first"].sha256)
    assert result.release_sha256 == released["first"].sha256 and result.bytes_downloaded > 0
    return out


def test_pulled_release_is_served_by_a_real_triton(
    released: dict[str, Any], pulled: Path, served: Any, tmp_path: Path
) -> None:
    assert verify_release_dir(pulled, released["first"].sha256).models == released["first"].models
    prompt, params = "the quick brown fox", {"max_tokens": 8, "min_tokens": 8}
    with LLMClient(served.grpc_url, model="llm") as client:  # repository a's weights
        expected = client.generate(prompt, **params).text
    server = TritonServer(
        pulled, http_port=0, grpc_port=0, metrics_port=0, model_control_mode="explicit",
        load_models=["llm"], exit_timeout_s=3, log_file=tmp_path / "server.log",
    )  # fmt: skip
    with server, LLMClient(server.grpc_url, model="llm") as client:
        assert client.generate(prompt, **params).text == expected
    # A pinned digest that is not release.json's: nothing is pulled.
    with pytest.raises(ChecksumError, match="not the pinned"):
        pull_release(released["store"], tmp_path / "x", 1, expect_sha256="0" * 64)
    assert not (tmp_path / "x").exists()


def _flip_byte(folder: Path) -> str:
    biggest = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.unlink()  # it may be a hard link into the pull cache's files
    biggest.write_bytes(bytes(data))
    return "does not match release.json"


BROKEN = {
    "flipped byte": _flip_byte,
    "extra file": lambda d: (d / "llm" / "1" / "evil.py").write_text("x") and "not part of",
    "extra model": lambda d: (d / "other").mkdir() or "a folder release 1 does not list",
    "another release's folder": lambda d: (d / "0").mkdir() or "releases/000001/ by itself",
    "missing file": lambda d: (d / "llm" / "config.pbtxt").unlink() or "is missing",
}


@pytest.mark.parametrize("case", BROKEN)
def test_verify_catches_a_changed_release(
    released: dict[str, Any], pulled: Path, tmp_path: Path, case: str
) -> None:
    sha = released["first"].sha256
    folder = tmp_path / "models"
    shutil.copytree(pulled, folder)
    cache = folder / "llm" / "1" / "__pycache__"  # what Triton's python backend writes
    cache.mkdir(exist_ok=True)
    (cache / "model.cpython-311.pyc").write_bytes(b"x")
    verify_release_dir(folder, sha)  # intact: passes
    expected = BROKEN[case](folder)
    with pytest.raises(ChecksumError, match=expected) as err:
        verify_release_dir(folder, sha)
    assert "\n" not in str(err.value)


def test_verify_refuses_a_wrong_or_malformed_digest_and_a_folder_without_release_json(
    pulled: Path, tmp_path: Path
) -> None:
    with pytest.raises(ChecksumError, match="not the pinned"):
        verify_release_dir(pulled, "a" * 64)
    with pytest.raises(UsageError, match="64 lowercase hex"):
        verify_release_dir(pulled, "A" * 64)
    with pytest.raises(ChecksumError, match=r"holds no release\.json"):
        verify_release_dir(tmp_path)
    verify_release_dir(pulled)  # no pin: the files are still checked


def test_hostile_inputs_write_nothing(
    released: dict[str, Any], azurite: Any, blob_repos: dict[str, Path]
) -> None:
    store = released["store"]
    before = names(store)
    with pytest.raises(VersionConflict, match="immutable"):
        create_release(store, number=1)
    for prefix in ("team/../tiny", "team//tiny", "team/tiny/releases"):
        bad = azurite.store(store.client.container_name, prefix)
        with pytest.raises(UsageError, match="--prefix"):
            create_release(bad)
    for model in ("../llm", "releases", "a/b"):
        with pytest.raises(UsageError, match="--model"):
            create_release(store, models=[model])
    with pytest.raises(UsageError, match=r"whole number in 1\.\.999999"):
        create_release(store, number=0)
    assert names(store) == before
    # A served version without a manifest; a manifest naming a blob that is missing.
    other = azurite.store(azurite.new_container(), "p")
    publish_repository(blob_repos["a"], other)
    publish_repository(blob_repos["b"], other, promote=False)
    other.delete("llm", 2, "manifest.json")
    config = other.read("llm", "config.pbtxt")[0].decode()
    other.write(with_policy(config, [2], "llm").encode(), "llm", "config.pbtxt")
    before = names(other)
    with pytest.raises(NothingPublished, match=r"serves version 2, which has no manifest\.json"):
        create_release(other)
    assert names(other) == before
    promote(other, "llm", 1)
    other.delete("llm_decoder", 1, "model.onnx")
    before = names(other)
    with pytest.raises(BlobError, match=r"lists model\.onnx, which is missing"):
        create_release(other)
    assert names(other) == before


def test_incomplete_release_is_listed_never_pulled_and_its_number_never_reused(
    released: dict[str, Any], tmp_path: Path
) -> None:
    store = released["store"]
    store.write(
        b"left by a creator that died", "releases", release_folder(3), "llm", "config.pbtxt"
    )
    rows = {r.number: r for r in list_releases(store)}
    assert not rows[3].complete and rows[1].complete
    with pytest.raises(NothingPublished, match="release 3 is not complete"):
        pull_release(store, tmp_path / "r3", 3)
    with pytest.raises(VersionConflict, match="release 3 already exists"):
        create_release(store, number=3)
    assert create_release(store).number == 4


def test_release_commands(
    released: dict[str, Any], azurite: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = released["store"]
    where = ["--container", store.client.container_name, "--prefix", store.prefix,
             "--connection-string", azurite.connection_string()]  # fmt: skip
    assert run(["release", "create", "--version", "9", *where]) == 0
    out = capsys.readouterr().out
    digest = out.split("TRITONKIT_RELEASE_SHA256): ")[1].strip()
    assert "release 9: llm:2 llm_decoder:2 llm_sync:1" in out
    assert (
        hashlib.sha256(store.read("releases", release_folder(9), "release.json")[0]).hexdigest()
        == digest
    )
    assert run(["release", "list", *where]) == 0
    assert digest in capsys.readouterr().out
    target = tmp_path / "r9"
    pull = ["pull", *where, "--output", str(target), "--release", "9", "--quiet"]
    assert run([*pull, "--expect-release-sha256", digest]) == 0
    assert f"release.json SHA-256: {digest}" in capsys.readouterr().out
    assert run(["release", "verify", str(target), "--sha256", digest]) == 0
    assert "release 9 verified" in capsys.readouterr().out
    with pytest.raises(UsageError, match="leave out --model"):
        run([*pull, "--model", "llm"])


def test_release_folders_are_fixed_width_so_none_is_a_prefix_of_another() -> None:
    from tritonkit.blob.manifest import release_number

    folders = [release_folder(n) for n in (1, 2, 10, 19, 100, 999_999)]
    assert folders[0] == "000001"
    assert not any(a != b and b.startswith(a) for a in folders for b in folders)
    assert [release_number(f) for f in folders] == [1, 2, 10, 19, 100, 999_999]
    for not_a_release in ("1", "0000001", "000000", "00001a", ".claims"):
        assert release_number(not_a_release) is None
    for bad in (0, -1, 1_000_000, True, 1.0):
        with pytest.raises(ValueError):
            release_folder(bad)  # type: ignore[arg-type]


def test_deploy_manifests_pin_the_release_read_from_blob(
    released: dict[str, Any], azurite: Any, capsys: Any
) -> None:
    """Without --release-sha256 the release's digest is read from Blob (Azurite here) and
    pinned; a release that is not there is refused; --allow-unpinned writes no pin."""
    from tritonkit.cli import run
    from tritonkit.errors import ManifestError

    store = released["store"]
    base = ["deploy", "kserve", "--container", store.client.container_name, "--prefix", "team/tiny",
            "--account-url", "https://acct.blob.core.windows.net", "--image", "acr.io/t:1",
            "--connection-string", azurite.connection_string(), "--dry-run"]  # fmt: skip
    assert run([*base, "--release", "1"]) == 0
    out, err = capsys.readouterr()
    pin = released["first"].sha256
    assert f"value: {pin}" in out and "TRITONKIT_RELEASE_SHA256" in out
    assert f"pinned release 1: release.json SHA-256 {pin}" in err
    with pytest.raises(ManifestError, match=r"release 7 .* cannot be pinned"):
        run([*base, "--release", "7"])
    assert run([*base, "--release", "7", "--allow-unpinned"]) == 0
    out, err = capsys.readouterr()
    assert "TRITONKIT_RELEASE_SHA256" not in out and "not pinned" in err


def test_model_sync_pulls_the_release_its_environment_pins(
    released: dict[str, Any], azurite: Any, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    """compose's model-sync: TRITONKIT_RELEASE (MODEL_RELEASE) with its pin pulls that
    release; a wrong pin or no pin is refused before anything is written."""
    from tritonkit.cli import run
    from tritonkit.errors import ChecksumError

    store = released["store"]
    pin = released["first"].sha256
    pull = ["pull", "--container", store.client.container_name, "--prefix", "team/tiny",
            "--connection-string", azurite.connection_string(), "--quiet"]  # fmt: skip
    monkeypatch.delenv("TRITONKIT_RELEASE", raising=False)
    monkeypatch.setenv("TRITONKIT_RELEASE_SHA256", pin)  # a pin without its release
    with pytest.raises(UsageError, match="without a release"):
        run([*pull, "--output", str(tmp_path / "z")])
    monkeypatch.setenv("TRITONKIT_RELEASE", "1")
    monkeypatch.delenv("TRITONKIT_RELEASE_SHA256", raising=False)
    with pytest.raises(UsageError, match=r"has no pin: set \$TRITONKIT_RELEASE_SHA256"):
        run([*pull, "--output", str(tmp_path / "a")])
    monkeypatch.setenv("TRITONKIT_RELEASE_SHA256", "0" * 64)
    with pytest.raises(ChecksumError):
        run([*pull, "--output", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()
    monkeypatch.setenv("TRITONKIT_RELEASE_SHA256", pin)
    assert run([*pull, "--output", str(tmp_path / "c")]) == 0
    assert f"release.json SHA-256: {pin}" in capsys.readouterr().out
    assert (tmp_path / "c" / "release.json").is_file()


def test_verify_content_reads_each_copy_back(azurite: Any, blob_repos: dict[str, Path]) -> None:
    """A source blob whose bytes changed while its MD5 property still claims the old ones
    (what a copy that lies in its metadata looks like): the metadata check passes it,
    --verify-content refuses the release before it is complete."""
    from azure.storage.blob import ContentSettings

    from tritonkit.errors import ChecksumError

    store = azurite.store(azurite.new_container(), "team/worm")
    publish_repository(blob_repos["a"], store)
    tampered = store.blob("llm", 1, "tokenizer", "tokenizer.json")
    props = tampered.get_blob_properties()
    data = tampered.download_blob().readall()
    flipped = bytes([data[0] ^ 1]) + data[1:]  # same size, one bit off
    tampered.upload_blob(flipped, overwrite=True)
    tampered.set_http_headers(
        ContentSettings(content_md5=props.content_settings.content_md5)
    )  # the old MD5 again: metadata alone cannot tell
    with pytest.raises(ChecksumError, match=r"tokenizer.json .* does not match"):
        create_release(store, verify_content=True)
    assert store.read("releases", release_folder(1), "release.json") is None  # incomplete
    assert create_release(store).number == 2  # metadata-only checks let it through
