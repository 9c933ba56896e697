"""Idempotent publishing, in a real Azurite: only what changed since the latest version is
written, an unchanged model keeps its version, and the result still pulls and serves."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tritonkit.blob import (
    PublishResult,
    list_versions,
    publish_repository,
    pull_repository,
    server_versions,
)
from tritonkit.client import LLMClient
from tritonkit.model_repository import RepositorySpec, build_repository, validate_repository
from tritonkit.model_repository import config as cfg
from tritonkit.serve import TritonServer

pytest_plugins = ["azurite"]
pytestmark = pytest.mark.slow

MODELS = ("llm_decoder", "llm", "llm_sync")
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def snapshot(store: Any) -> dict[str, tuple[str, int]]:
    """Every blob under the store's prefix: name -> (etag, size)."""
    start = store.name("") + "/" if store.prefix else ""
    return {
        b.name: (str(b.etag), int(b.size)) for b in store.client.list_blobs(name_starts_with=start)
    }


def written(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> dict:
    """The blobs created or rewritten between two snapshots: name -> size."""
    return {n: size for n, (etag, size) in after.items() if before.get(n, ("", 0))[0] != etag}


def outcome(result: PublishResult) -> dict[str, tuple[int, bool]]:
    """model -> (version after the publish, whether it is a new one)."""
    return {m.model: (m.version, m.changed) for m in result.models}


def served_versions(store: Any, model: str) -> list[int]:
    text = store.read(model, "config.pbtxt")[0].decode()
    return sorted(cfg.parse(text).version_policy.specific.versions)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def changed_files(old: Path, new: Path) -> dict[str, int]:
    """Files of ``new`` that ``old`` lacks or holds with other bytes: relative path -> size."""
    return {
        p.relative_to(new).as_posix(): p.stat().st_size
        for p in sorted(new.rglob("*"))
        if p.is_file()
        and "__pycache__" not in p.parts
        and not ((old / p.relative_to(new)).is_file() and sha(old / p.relative_to(new)) == sha(p))
    }


def edit_template(export: Path) -> None:
    (export / "chat_template.jinja").write_text(TEMPLATE)


def edit_tokenizer(export: Path) -> None:
    path = export / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["model_max_length"] = 4096  # what a tokenizer-only fix looks like
    path.write_text(json.dumps(config, indent=2))


CHANGES: dict[str, Callable[[Path], None]] = {
    "template": edit_template,
    "tokenizer": edit_tokenizer,
}


@pytest.fixture(scope="module")
def rebuilt(served: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Repository ``a`` (see ``blob_repos``) rebuilt from its export with one edit each:
    the chat template, or the tokenizer config. Same weights, same decoder."""
    repos = {}
    for name, change in CHANGES.items():
        root = tmp_path_factory.mktemp(f"rebuilt-{name}")
        shutil.copytree(served.repository.parent / "exports" / "llm", root / "export")
        change(root / "export")
        repos[name] = build_repository(
            root / "export", root / "repo", spec=RepositorySpec(name="llm", sync_instances=1)
        ).path
    return repos


def test_unchanged_republish_writes_nothing_and_keeps_every_version(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    store = azurite.store(azurite.new_container(), "team/tiny")
    first = publish_repository(blob_repos["a"], store)
    before = snapshot(store)
    again = publish_repository(blob_repos["a"], store)
    assert outcome(again) == {m: (1, False) for m in MODELS}
    assert [m.previous for m in again.models] == [1, 1, 1]
    assert again.bytes_written == 0 and again.stats.files_copied == 0
    assert all(m.stats.bytes_written == 0 for m in again.models)
    assert snapshot(store) == before  # not one blob created or rewritten: no claim, no config
    assert [(m.files, m.size) for m in again.models] == [(m.files, m.size) for m in first.models]
    assert [m.served for m in again.models] == [[1], [1], [1]]
    assert {(r.model, r.version) for r in list_versions(store)} == {(m, 1) for m in MODELS}
    # A single model, or numbering asked for: still nothing new.
    cases: list[dict[str, Any]] = [{"models": ["llm"]}, {"version": 5}]
    for kwargs in cases:
        r = publish_repository(blob_repos["a"], store, **kwargs)
        assert {m.changed for m in r.models} == {False} and r.bytes_written == 0
    assert snapshot(store) == before
    pulled = pull_repository(store, tmp_path / "pulled")
    assert pulled.versions == {m: [1] for m in sorted(MODELS)}
    assert validate_repository(tmp_path / "pulled").ok


def test_force_makes_new_versions_by_server_side_copies(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    store = azurite.store(azurite.new_container())
    first = publish_repository(blob_repos["a"], store)
    second = publish_repository(blob_repos["a"], store, force=True)
    assert outcome(second) == {m: (2, True) for m in MODELS}
    assert second.stats.bytes_uploaded == 0 and second.stats.files_uploaded == 0
    assert second.stats.files_copied == first.stats.files_uploaded  # decoder.json is rewritten
    assert second.stats.bytes_copied == first.stats.bytes_uploaded
    ref = json.loads(store.read("llm", 2, "decoder.json")[0])
    assert ref == {"model": "llm_decoder", "version": 2}
    manifest = json.loads(store.read("llm", 2, "manifest.json")[0])
    entry = next(f for f in manifest["files"] if f["path"] == "decoder.json")
    assert entry["sha256"] == hashlib.sha256(store.read("llm", 2, "decoder.json")[0]).hexdigest()
    # Pulling one version of the entry model brings the decoder version it runs.
    pulled = pull_repository(store, tmp_path / "one", models=["llm"], version=2)
    assert pulled.versions == {"llm": [2], "llm_decoder": [2]}
    assert validate_repository(tmp_path / "one").ok


@pytest.mark.parametrize("change", CHANGES)
def test_tokenizer_or_template_change_writes_only_the_entry_model(
    azurite: Any,
    blob_repos: dict[str, Path],
    rebuilt: dict[str, Path],
    tmp_path: Path,
    change: str,
) -> None:
    store = azurite.store(azurite.new_container(), "p")
    publish_repository(blob_repos["a"], store)
    before = snapshot(store)
    repo = rebuilt[change]
    result = publish_repository(repo, store)
    assert outcome(result) == {"llm_decoder": (1, False), "llm": (2, True), "llm_sync": (1, False)}
    # What landed in the container: the entry model's version 2, its claim and its config.
    new = written(before, snapshot(store))
    assert {n for n in new if not n.startswith("p/llm/2/")} == {
        "p/llm/2.claim", "p/llm/config.pbtxt",
    }  # fmt: skip
    assert sum(new.values()) == result.bytes_written  # the figure is what the container got
    # Uploaded: exactly the files that differ; the entry's other files copied server-side.
    edited = changed_files(blob_repos["a"] / "llm" / "1", repo / "llm" / "1")
    assert set(edited) <= {"tokenizer/chat_template.jinja", "tokenizer/tokenizer_config.json"}
    assert edited and result.stats.bytes_uploaded == sum(edited.values())
    entry_bytes = sum(p.stat().st_size for p in (repo / "llm" / "1").rglob("*") if p.is_file())
    assert result.stats.bytes_uploaded + result.stats.bytes_copied == entry_bytes  # no weights
    stats = {m.model: m.stats for m in result.models}
    assert stats["llm_decoder"].bytes_written == 0 and stats["llm_sync"].bytes_written == 0
    # Version 2 runs the decoder version already there.
    assert json.loads(store.read("llm", 2, "decoder.json")[0]) == {
        "model": "llm_decoder", "version": 1,
    }  # fmt: skip
    manifest = json.loads(store.read("llm", 2, "manifest.json")[0])
    assert manifest["decoder"] == {"model": "llm_decoder", "version": 1}
    assert served_versions(store, "llm") == [2] and served_versions(store, "llm_decoder") == [1]
    # Publishing the edited repository again: nothing new.
    after = snapshot(store)
    again = publish_repository(repo, store)
    assert outcome(again) == {"llm_decoder": (1, False), "llm": (2, False), "llm_sync": (1, False)}
    assert again.bytes_written == 0 and snapshot(store) == after
    # Both pull into repositories that validate; version 2 alone brings decoder version 1.
    everything = pull_repository(store, tmp_path / "all")
    assert everything.versions == {"llm": [1, 2], "llm_decoder": [1], "llm_sync": [1]}
    assert validate_repository(tmp_path / "all").ok
    one = pull_repository(store, tmp_path / "one", models=["llm"], version=2)
    assert one.versions == {"llm": [2], "llm_decoder": [1]}
    assert validate_repository(tmp_path / "one").ok
    for rel in edited:
        assert sha(tmp_path / "one" / "llm" / "2" / rel) == sha(repo / "llm" / "1" / rel)


def test_decoder_change_makes_new_decoder_and_entry_versions(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store)
    result = publish_repository(blob_repos["b"], store)
    # The weights differ; the twin's files and config do not, so it keeps its version.
    assert outcome(result) == {"llm_decoder": (2, True), "llm": (2, True), "llm_sync": (1, False)}
    weights = blob_repos["b"] / "llm_decoder" / "1" / "model.onnx.data"
    stats = {m.model: m.stats for m in result.models}
    assert stats["llm_decoder"].bytes_uploaded >= weights.stat().st_size
    assert stats["llm_sync"].bytes_written == 0 and not store.names("llm_sync/2")
    assert json.loads(store.read("llm", 2, "decoder.json")[0]) == {
        "model": "llm_decoder", "version": 2,
    }  # fmt: skip
    one = pull_repository(store, tmp_path / "one", models=["llm"], version=2)
    assert one.versions == {"llm": [2], "llm_decoder": [2]}
    assert validate_repository(tmp_path / "one").ok
    assert sha(tmp_path / "one" / "llm_decoder" / "2" / "model.onnx.data") == sha(weights)
    everything = pull_repository(store, tmp_path / "all")
    assert everything.versions == {"llm": [1, 2], "llm_decoder": [1, 2], "llm_sync": [1]}
    assert validate_repository(tmp_path / "all").ok


def test_the_latest_version_is_the_highest_complete_one_served_or_not(
    azurite: Any, blob_repos: dict[str, Path]
) -> None:
    store = azurite.store(azurite.new_container())
    publish_repository(blob_repos["a"], store)
    staged = publish_repository(blob_repos["b"], store, promote=False)
    assert outcome(staged)["llm"] == (2, True) and served_versions(store, "llm") == [1]
    # b again equals version 2 (staged, not served): kept, and now served as a publish would.
    before = snapshot(store)
    again = publish_repository(blob_repos["b"], store)
    assert outcome(again) == {"llm_decoder": (2, False), "llm": (2, False), "llm_sync": (1, False)}
    assert served_versions(store, "llm") == [2] and served_versions(store, "llm_decoder") == [2]
    new = written(before, snapshot(store))
    assert set(new) == {"llm/config.pbtxt", "llm_decoder/config.pbtxt"}  # no version, no claim
    assert again.bytes_written == sum(new.values())
    # a equals version 1, but the latest is 2: a is a change, and becomes version 3.
    back = publish_repository(blob_repos["a"], store)
    assert outcome(back) == {"llm_decoder": (3, True), "llm": (3, True), "llm_sync": (1, False)}
    assert back.stats.bytes_uploaded == 0  # every file was in the container: copied
    assert json.loads(store.read("llm", 3, "decoder.json")[0])["version"] == 3


def test_entry_version_running_an_older_decoder_version_serves(
    azurite: Any,
    blob_repos: dict[str, Path],
    rebuilt: dict[str, Path],
    served: Any,
    tmp_path: Path,
) -> None:
    """Pulled and served by a real Triton: llm version 2 runs llm_decoder version 1."""
    store = azurite.store(azurite.new_container(), "prod")
    publish_repository(blob_repos["a"], store)
    publish_repository(rebuilt["template"], store)
    repository = tmp_path / "repository"
    pull_repository(store, repository)
    assert sorted(p.name for p in (repository / "llm_decoder").iterdir() if p.is_dir()) == ["1"]
    prompt = "the quick brown fox"
    params: dict[str, Any] = {"max_tokens": 12, "min_tokens": 12}
    with LLMClient(served.grpc_url, model="llm") as client:  # the same weights as version 1
        expected = client.generate(prompt, **params).text
    server = TritonServer(
        repository, http_port=0, grpc_port=0, metrics_port=0, model_control_mode="explicit",
        load_models=["llm"], exit_timeout_s=3, log_file=tmp_path / "server.log",
    )  # fmt: skip
    with server, LLMClient(server.grpc_url, model="llm") as client:
        ready = [r.version for r in server_versions(server.grpc_url, "llm") if r.state == "READY"]
        assert ready == [2]
        assert client.generate(prompt, **params).text == expected
        assert client.chat_template().source == TEMPLATE  # version 2's config is served


def test_config_is_compared_as_a_message_and_a_broken_one_differs(
    blob_repos: dict[str, Path],
) -> None:
    from google.protobuf import text_format

    from tritonkit.blob import Manifest
    from tritonkit.blob.changes import same_config

    config = cfg.read(blob_repos["a"] / "llm")
    text = cfg.to_text(config)
    published = Manifest("llm", 3, [], "", "", "")
    for variant, same in (
        (text, True),
        ("# by hand\n" + text_format.MessageToString(config, as_one_line=True), True),
        (text.replace("max_context", "max_kontext"), False),
        ("backend: [not a config", False),  # unreadable: a new version replaces it
    ):
        published.config = variant
        assert same_config(config, published) is same, variant


@pytest.mark.parametrize("graph", ["model.onnx", "model.plan"])
def test_the_published_decoder_json_keeps_the_graph_file(tmp_path: Path, graph: str) -> None:
    # A TensorRT repository's entry model runs llm_decoder/N/model.plan: publishing rewrites
    # decoder.json to name the published decoder version, and must keep the file.
    from tritonkit.blob.manifest import LocalModel
    from tritonkit.blob.publish import _decoder_item
    from tritonkit.core import layout

    version_dir = tmp_path / "llm" / "1"
    version_dir.mkdir(parents=True)
    ref = layout.DecoderRef("llm_decoder", 1, graph)
    (version_dir / layout.DECODER_REF).write_text(layout.decoder_ref_text(ref))
    model = LocalModel("llm", tmp_path / "llm", 1, None, [Path(layout.DECODER_REF)])
    item = _decoder_item(model, model.decoder_ref() or {}, 5)
    assert item.data is not None
    assert layout.parse_decoder_ref(item.data.decode()) == layout.DecoderRef(
        "llm_decoder", 5, graph
    )
