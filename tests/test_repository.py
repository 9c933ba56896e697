"""The model repository builder, its protobuf configs and the validator (no server needed)."""

from __future__ import annotations

import json
import shutil

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.cli import run
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.export import main_export
from tritonkit.model_repository import build_repository, config, validate_repository


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from conftest import save_tiny_model

    root = tmp_path_factory.mktemp("repo")
    return main_export(str(save_tiny_model("llama", root / "hf")), root / "export").output


def test_config_round_trips_through_the_protobuf_schema():
    entry = config.entry_config("llm", "llm_decoder", "cpu", max_batch_size=8, max_context=256)
    config.set_versions(entry, [3, 1])
    text = config.to_text(entry)
    parsed = config.parse(text)
    assert parsed == entry
    assert list(parsed.version_policy.specific.versions) == [1, 3]
    assert parsed.model_transaction_policy.decoupled
    assert {i.name for i in parsed.input} >= {"text_input", "max_tokens", "stop_words"}
    with pytest.raises(RepositoryError, match="not a valid Triton model config"):
        config.parse(text.replace("decoupled: true", "decoupled: maybe"))


def test_build_writes_a_valid_repository(export_dir, tmp_path):
    built = build_repository(export_dir, tmp_path / "repo", name="chat", sync_instances=1)
    report = validate_repository(built.path)
    assert report.ok, report.table()
    assert {p.name for p in built.path.iterdir()} == {"chat", "chat_decoder", "chat_sync"}
    # the weights are stored once: in the decoder's version folder, not in the entry model
    assert (built.path / "chat_decoder" / "1" / "model.onnx").is_file()
    assert not list((built.path / "chat").rglob("*.onnx"))
    ref = json.loads((built.path / "chat" / "1" / "decoder.json").read_text())
    assert ref == {"model": "chat_decoder", "version": 1}
    entry = config.read(built.path / "chat")
    assert entry.backend == "python" and entry.max_batch_size == 0
    decoder = config.read(built.path / "chat_decoder")
    # a Llama exports with fused attention: no position_ids (positions follow the mask)
    assert json.loads((export_dir / "export.json").read_text())["graph"] == "fused"
    assert [i.name for i in decoder.input][:3] == [
        "input_ids",
        "attention_mask",
        "past_key_values.0.key",
    ]
    assert decoder.input[2].data_type == mc.TYPE_FP32 and list(decoder.input[2].dims) == [
        -1,
        2,
        -1,
        16,
    ]


def test_validate_finds_what_is_broken(export_dir, tmp_path):
    repo = build_repository(export_dir, tmp_path / "repo", sync_instances=1).path
    (repo / "llm" / "1" / "tokenizer" / "tokenizer.json").unlink()
    shutil.rmtree(repo / "llm_decoder" / "1")
    text = (repo / "llm_sync" / "config.pbtxt").read_text()
    (repo / "llm_sync" / "config.pbtxt").write_text(text + "\nno_such_field: 1\n")
    report = validate_repository(repo)
    failed = {(f.model, f.check) for f in report.failures}
    assert ("llm", "has tokenizer/tokenizer.json") in failed
    assert ("llm", "v1 decoder graph") in failed
    assert ("llm_decoder", "versions present") in failed
    assert ("llm_sync", "config parses") in failed
    with pytest.raises(RepositoryError, match="check"):
        run(["repo", "validate", str(repo)])


def test_decoder_config_must_match_its_graph(export_dir, tmp_path):
    repo = build_repository(export_dir, tmp_path / "repo", sync_instances=1).path
    dec = config.read(repo / "llm_decoder")
    del dec.input[-1]  # forget one past_key_values input
    config.write(dec, repo / "llm_decoder")
    failed = {(f.model, f.check) for f in validate_repository(repo).failures}
    assert failed == {("llm_decoder", "I/O matches ONNX")}


def test_build_refuses_bad_input(export_dir, tmp_path):
    with pytest.raises(RepositoryError, match=r"no export\.json"):
        build_repository(tmp_path, tmp_path / "out")
    with pytest.raises(UsageError, match="unknown target"):
        build_repository(export_dir, tmp_path / "out", target="tpu")
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep").write_text("mine")
    with pytest.raises(UsageError, match="--force"):
        build_repository(export_dir, out)
    assert (out / "keep").read_text() == "mine"
    unverified = tmp_path / "unverified"
    shutil.copytree(export_dir, unverified)
    report = json.loads((unverified / "export.json").read_text())
    (unverified / "export.json").write_text(json.dumps({**report, "passed": False}))
    with pytest.raises(RepositoryError, match="failed verification"):
        build_repository(unverified, tmp_path / "o2")
    assert build_repository(unverified, tmp_path / "o3", allow_unverified=True).path.is_dir()


def test_context_and_prefill_chunk_reach_the_entry_config(export_dir, tmp_path):
    built = build_repository(
        export_dir, tmp_path / "repo", max_context=128, prefill_chunk=32, max_batch_size=4
    )
    params = config.read(built.path / "llm").parameters
    assert params["max_context"].string_value == "128"
    assert params["prefill_chunk"].string_value == "32"
    dims = json.loads((export_dir / "export.json").read_text())["dims"]
    # fused engine: keys and values, every layer, 4 rows of 128 tokens, float32
    rows = 2 * dims["num_layers"] * 4 * dims["num_kv_heads"] * 128 * dims["head_dim"] * 4
    assert built.kv_cache_bytes == rows
    with pytest.raises(UsageError, match="--max-context"):
        build_repository(export_dir, tmp_path / "r2", max_context=dims["max_positions"] + 1)
    with pytest.raises(UsageError, match="--prefill-chunk"):
        build_repository(export_dir, tmp_path / "r3", prefill_chunk=0)
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()
