"""Publish, pull and version model repositories in a real Azurite (no mock of the Blob SDK)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tritonkit.blob import (
    BlobAuthError,
    BlobError,
    ChecksumError,
    ContainerNotFound,
    NothingPublished,
    VersionConflict,
    connect,
    list_versions,
    promote,
    publish_repository,
    pull_repository,
    rollback,
)
from tritonkit.blob import pull as pull_module
from tritonkit.blob.upload import Uploader
from tritonkit.errors import UsageError
from tritonkit.model_repository import config as cfg
from tritonkit.model_repository import validate_repository

pytest_plugins = ["azurite"]
pytestmark = pytest.mark.slow


def tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder``, caches left out."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def served_versions(store: Any, model: str) -> list[int]:
    text = store.read(model, "config.pbtxt")[0].decode()
    return sorted(cfg.parse(text).version_policy.specific.versions)


@pytest.fixture(scope="module")
def published(azurite: Any, blob_repos: dict[str, Path]) -> dict[str, Any]:
    """Repository a published once as version 1 into a fresh container."""
    container = azurite.new_container()
    store = azurite.store(container, "team/tiny")
    result = publish_repository(blob_repos["a"], store)
    return {"container": container, "store": store, "result": result}


def test_publish_writes_verified_versions_with_manifests(
    published: dict[str, Any], blob_repos: dict[str, Path]
) -> None:
    store, result = published["store"], published["result"]
    assert [(m.model, m.version) for m in result.models] == [
        ("llm_decoder", 1), ("llm", 1), ("llm_sync", 1),
    ]  # fmt: skip
    local = blob_repos["a"]
    sizes = {
        f"{m}/{p}": (local / m / "1" / p).stat().st_size
        for m in ("llm", "llm_decoder", "llm_sync")
        for p in tree(local / m / "1")
    }
    # Every file went up, but decoder.json: rewritten to name the decoder version published.
    assert result.stats.bytes_uploaded == sum(sizes.values()) - sizes["llm/decoder.json"]
    assert result.stats.files_uploaded == len(sizes) - 1
    manifest = json.loads(store.read("llm", 1, "manifest.json")[0])
    files = {f["path"]: f for f in manifest["files"]}
    assert {p: f["sha256"] for p, f in files.items()} == tree(local / "llm" / "1")
    assert manifest["decoder"] == {"model": "llm_decoder", "version": 1}
    assert manifest["export"]["passed"] is True and manifest["source"]["model"]["model"]
    assert manifest["published_at"] and manifest["tritonkit_version"]
    assert "specific" in manifest["config"] and served_versions(store, "llm") == [1]
    # Every blob carries Content-MD5 and its SHA-256, equal to the manifest's.
    props = store.blob("llm", 1, "tokenizer/tokenizer.json").get_blob_properties()
    entry = files["tokenizer/tokenizer.json"]
    assert base64.b64encode(bytes(props.content_settings.content_md5)).decode() == entry["md5"]
    assert props.metadata["sha256"] == entry["sha256"]


def test_pull_verifies_and_builds_a_valid_repository(
    published: dict[str, Any], blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    result = pull_repository(published["store"], tmp_path / "pulled")
    assert result.versions == {"llm": [1], "llm_decoder": [1], "llm_sync": [1]}
    pulled, local = tmp_path / "pulled", blob_repos["a"]
    for model in ("llm", "llm_decoder", "llm_sync"):
        got = {p: h for p, h in tree(pulled / model / "1").items() if p != "manifest.json"}
        assert got == tree(local / model / "1"), model
    assert validate_repository(pulled).ok
    # The output is refused when it is not empty, unless forced.
    with pytest.raises(UsageError, match="--force"):
        pull_repository(published["store"], pulled)
    again = pull_repository(published["store"], pulled, force=True)
    assert again.bytes_downloaded == 0 and again.files_reused == again.files  # resumed from it


def test_promote_and_rollback_in_blob(azurite: Any, blob_repos: dict[str, Path]) -> None:
    store = azurite.store(azurite.new_container(), "p")
    publish_repository(blob_repos["a"], store)
    publish_repository(blob_repos["b"], store, promote=False)
    assert served_versions(store, "llm") == [1]  # staged, not served
    switches = promote(store, "llm")
    assert [(s.model, s.before, s.after) for s in switches] == [
        ("llm_decoder", [1], [2]), ("llm", [1], [2]),
    ]  # fmt: skip
    assert served_versions(store, "llm") == [2] and served_versions(store, "llm_decoder") == [2]
    rollback(store, "llm")
    assert served_versions(store, "llm") == [1] and served_versions(store, "llm_decoder") == [1]
    rows = {(r.model, r.version): r for r in list_versions(store, ["llm"])}
    assert rows[("llm", 1)].served and not rows[("llm", 2)].served
    with pytest.raises(NothingPublished, match="no complete older"):
        rollback(store, "llm")


def test_concurrent_publishers_never_share_a_version(
    azurite: Any, blob_repos: dict[str, Path]
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store, models=["llm_sync"])
    outcomes: list[Any] = []
    barrier = threading.Barrier(3)

    def publish(version: int | None) -> None:
        barrier.wait()
        try:
            r = publish_repository(
                blob_repos["a"], store, models=["llm_sync"], version=version, force=True
            )
            outcomes.append(r.models[0].version)
        except VersionConflict as exc:
            outcomes.append(exc)

    for version in (None, 5):  # free numbering, then all three asking for version 5
        outcomes.clear()
        threads = [threading.Thread(target=publish, args=(version,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        numbers = [o for o in outcomes if isinstance(o, int)]
        if version is None:
            assert sorted(numbers) == [2, 3, 4]
        else:
            assert numbers == [5] and len(outcomes) == 3  # exactly one got 5
            assert all("version 5 of llm_sync" in str(o) for o in outcomes if o not in numbers)
    rows = list_versions(store, ["llm_sync"])
    assert [(r.version, r.complete) for r in rows] == [(v, True) for v in (1, 2, 3, 4, 5)]


def test_interrupted_upload_is_invisible_and_the_next_publish_completes_it(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store)
    before = {m: served_versions(store, m) for m in ("llm", "llm_decoder")}
    real_upload, calls = Uploader.upload, []

    def failing_upload(self: Uploader, item: Any) -> Any:
        calls.append(item.dest)
        if len(calls) == 3:
            raise ConnectionResetError("network dropped mid-upload")
        return real_upload(self, item)

    monkeypatch.setattr(Uploader, "upload", failing_upload)
    with pytest.raises(ConnectionResetError):
        publish_repository(blob_repos["b"], store)
    monkeypatch.undo()
    # Files of version 2 are there, but no manifest: nothing shows it, nothing serves it.
    assert store.names("llm_decoder/2") and not store.read("llm_decoder", 2, "manifest.json")
    assert {m: served_versions(store, m) for m in ("llm", "llm_decoder")} == before
    rows = {(r.model, r.version): r for r in list_versions(store)}
    assert not rows[("llm_decoder", 2)].complete
    assert pull_repository(store, tmp_path / "p").versions["llm_decoder"] == [1]
    # The next publish takes version 2 over and completes it (the twin is unchanged: kept).
    result = publish_repository(blob_repos["b"], store)
    assert [(m.version, m.changed) for m in result.models] == [(2, True), (2, True), (1, False)]
    assert result.stats.files_present >= 1  # what the interrupted try had uploaded
    assert served_versions(store, "llm") == [2]
    pulled = pull_repository(store, tmp_path / "q", models=["llm"], version=2)
    assert (
        tree(tmp_path / "q" / "llm_decoder" / "2")["model.onnx"]
        == tree(blob_repos["b"] / "llm_decoder" / "1")["model.onnx"]
    )
    assert pulled.versions["llm_decoder"] == [2]


def test_corrupted_blob_fails_the_pull_and_leaves_nothing(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store)
    store.blob("llm", 1, "model.py").upload_blob(b"print('tampered')\n", overwrite=True)
    output = tmp_path / "out"
    with pytest.raises(ChecksumError, match=r"llm/1/model\.py: SHA-256 .* does not match"):
        pull_repository(store, output)
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder, no cache


def test_interrupted_pull_resumes(
    published: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = pull_module._download, []

    def flaky(*args: Any) -> str:
        calls.append(args[1])
        if len(calls) >= 4:
            raise ConnectionResetError("network dropped mid-pull")
        return real(*args)

    monkeypatch.setattr(pull_module, "_download", flaky)
    output = tmp_path / "out"
    with pytest.raises(ConnectionResetError):
        pull_repository(published["store"], output, concurrency=1)
    monkeypatch.undo()
    assert not output.exists()
    cached = list((tmp_path / ".out.pull-cache").iterdir())
    assert len(cached) == 3  # verified downloads survive, the half-done one does not
    result = pull_repository(published["store"], output)
    assert result.files_reused >= 3 and result.bytes_downloaded > 0
    assert validate_repository(output).ok and not (tmp_path / ".out.pull-cache").exists()


def test_bad_credentials_container_and_prefix_are_one_line_errors(
    published: dict[str, Any], azurite: Any, tmp_path: Path
) -> None:
    wrong_key = base64.b64encode(b"0" * 64).decode()
    bad = connect(published["container"], connection_string=azurite.connection_string(wrong_key))
    with pytest.raises(BlobAuthError, match=r"refused access|rejected the credentials") as err:
        list_versions(bad)
    missing = azurite.store("no-such-container")
    with pytest.raises(ContainerNotFound, match=r"does not exist.*--create-container") as err2:
        pull_repository(missing, tmp_path / "x")
    empty = azurite.store(published["container"], "nothing/here")
    with pytest.raises(NothingPublished, match="no published model repository") as err3:
        pull_repository(empty, tmp_path / "y")
    with pytest.raises(UsageError, match="--version needs --model"):
        pull_repository(empty, tmp_path / "z", version=1)
    for e in (err, err2, err3):
        assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


# ---- hostile containers: a manifest must not reach outside the output --------------------


def _tamper(store: Any, change: Any) -> None:
    """Rewrite llm/1/manifest.json with ``change(manifest_dict)`` applied."""
    raw = json.loads(store.read("llm", 1, "manifest.json")[0])
    change(raw)
    store.blob("llm", 1, "manifest.json").upload_blob(json.dumps(raw).encode(), overwrite=True)


HOSTILE = {
    "path climbs out": (
        lambda m: m["files"][0].update(path="../../../../victim/.bashrc"),
        "leaves the version folder",
    ),
    "absolute path": (lambda m: m["files"][0].update(path="/etc/cron.d/x"), "absolute"),
    "backslash path": (lambda m: m["files"][0].update(path="..\\..\\x"), "backslash"),
    "sha256 names a file": (
        lambda m: m["files"][0].update(sha256="/abs/secret.key"),
        "64 lowercase hex",
    ),
    "path listed twice": (
        lambda m: m["files"].append(dict(m["files"][0])),
        "listed twice",
    ),
    "overwrites the manifest": (lambda m: m["files"][0].update(path="manifest.json"), "manifest"),
    "another model's manifest": (lambda m: m.update(model="llm_decoder"), "not llm version 1"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_manifest_is_refused_and_nothing_is_written(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path, case: str
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store)
    change, message = HOSTILE[case]
    _tamper(store, change)
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / ".bashrc").write_text("mine\n")
    output = work / "out"
    with pytest.raises(BlobError, match=message) as info:
        pull_repository(store, output)
    assert "\n" not in str(info.value)
    assert not output.exists() and list(work.iterdir()) == []  # no staging, no cache
    assert (victim / ".bashrc").read_text() == "mine\n"  # nothing outside was touched


def test_pull_pins_the_manifest_it_trusts(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store)
    first = pull_repository(store, tmp_path / "a", models=["llm"], version=1)
    digest = first.manifest_sha256["llm/1"]
    assert digest == hashlib.sha256(store.read("llm", 1, "manifest.json")[0]).hexdigest()
    again = pull_repository(
        store, tmp_path / "b", models=["llm"], version=1, expect_manifest_sha256=digest
    )
    assert again.files == first.files
    # Someone with write access rewrites code and manifest consistently: the pin refuses it.
    code = b"import os  # tampered\n"
    store.blob("llm", 1, "model.py").upload_blob(code, overwrite=True)

    def consistent(m: dict[str, Any]) -> None:
        entry = next(f for f in m["files"] if f["path"] == "model.py")
        entry.update(
            sha256=hashlib.sha256(code).hexdigest(),
            size=len(code),
            md5=base64.b64encode(hashlib.md5(code).digest()).decode(),
        )

    _tamper(store, consistent)
    with pytest.raises(ChecksumError, match="not the pinned"):
        pull_repository(
            store, tmp_path / "c", models=["llm"], version=1, expect_manifest_sha256=digest
        )
    assert not (tmp_path / "c").exists()
    with pytest.raises(UsageError, match="--model and --version"):
        pull_repository(store, tmp_path / "d", expect_manifest_sha256=digest)


def test_publish_refuses_a_link_out_of_the_version_folder(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from tritonkit.errors import RepositoryError

    repo = tmp_path / "repo"
    shutil.copytree(blob_repos["a"], repo)
    secret = tmp_path / "secret.key"
    secret.write_text("do not publish\n")
    (repo / "llm" / "1" / "notes.txt").symlink_to(secret)
    store = azurite.store(azurite.new_container())
    with pytest.raises(RepositoryError, match="outside"):
        publish_repository(repo, store)
    assert store.read("llm", 1, "notes.txt") is None


def test_names_with_non_ascii_digits_are_not_versions():
    """``"²".isdigit()`` is true and ``int("²")`` raises: such a blob name is ignored."""
    from tritonkit.blob.remote import _parse

    assert _parse("llm/²/model.py") is None
    assert _parse("llm/².claim") is None
    assert _parse("llm/3/model.py") == ("llm", 3, "model.py")
