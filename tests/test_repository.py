"""The model repository builder, its protobuf configs and the validator (no server needed)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.cli import run
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.export import main_export
from tritonkit.model_repository import (
    OnnxRuntime,
    RepositorySpec,
    build_repository,
    config,
    validate_repository,
)


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
    built = build_repository(
        export_dir, tmp_path / "repo", spec=RepositorySpec(name="chat", sync_instances=1)
    )
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
    repo = build_repository(
        export_dir, tmp_path / "repo", spec=RepositorySpec(sync_instances=1)
    ).path
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
    repo = build_repository(
        export_dir, tmp_path / "repo", spec=RepositorySpec(sync_instances=1)
    ).path
    dec = config.read(repo / "llm_decoder")
    del dec.input[-1]  # forget one past_key_values input
    config.write(dec, repo / "llm_decoder")
    failed = {(f.model, f.check) for f in validate_repository(repo).failures}
    assert failed == {("llm_decoder", "I/O matches ONNX")}


def test_build_refuses_bad_input(export_dir, tmp_path):
    with pytest.raises(RepositoryError, match=r"no export\.json"):
        build_repository(tmp_path, tmp_path / "out")
    with pytest.raises(UsageError, match="unknown target"):
        build_repository(export_dir, tmp_path / "out", spec=RepositorySpec(target="tpu"))
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
    assert build_repository(
        unverified, tmp_path / "o3", spec=RepositorySpec(allow_unverified=True)
    ).path.is_dir()


def test_context_and_prefill_chunk_reach_the_entry_config(export_dir, tmp_path):
    built = build_repository(
        export_dir,
        tmp_path / "repo",
        OnnxRuntime(prefill_chunk=32),
        RepositorySpec(max_context=128, max_batch_size=4),
    )
    params = config.read(built.path / "llm").parameters
    assert params["max_context"].string_value == "128"
    assert params["prefill_chunk"].string_value == "32"
    dims = json.loads((export_dir / "export.json").read_text())["dims"]
    # fused engine: keys and values, every layer, 4 rows of 128 tokens, float32
    rows = 2 * dims["num_layers"] * 4 * dims["num_kv_heads"] * 128 * dims["head_dim"] * 4
    assert built.kv_cache_bytes == rows
    with pytest.raises(UsageError, match="--max-context"):
        build_repository(
            export_dir, tmp_path / "r2", spec=RepositorySpec(max_context=dims["max_positions"] + 1)
        )
    with pytest.raises(UsageError, match="--prefill-chunk"):
        build_repository(export_dir, tmp_path / "r3", OnnxRuntime(prefill_chunk=0))
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


# ---- the slot for engines, and the runtime each repository carries ----------------------


def test_the_runtime_copy_imports_without_tritonkit(export_dir, tmp_path):
    """Inside Triton (the GPU image, vLLM's environment) tritonkit is not installed: the
    repository's tritonkit_runtime must import with tritonkit unimportable."""
    import subprocess
    import sys

    from tritonkit.core import layout
    from tritonkit.model_repository.builders.common import copy_runtime

    built = build_repository(export_dir, tmp_path / "repo", spec=RepositorySpec(sync_instances=1))
    runtime = built.path / "llm" / "1" / layout.RUNTIME_PACKAGE
    modules = sorted(p.stem for p in runtime.glob("*.py"))
    assert {"interface", "layout", "params", "scheduler", "vllm_params"} <= set(modules)
    for path in runtime.glob("*.py"):
        assert not re.search(r"^\s*(from|import) tritonkit\b", path.read_text(), re.M), path
    probe = (
        "import sys; sys.modules['tritonkit'] = None\n"  # any `import tritonkit...` now fails
        f"sys.path.insert(0, {str(runtime.parent)!r})\n"
        "import importlib\n"
        f"for m in {modules!r}: importlib.import_module('tritonkit_runtime.' + m)\n"
        "from tritonkit_runtime.params import parse_request\n"
        "from tritonkit_runtime.interface import ENTRY_INPUTS\n"
        "print(len(ENTRY_INPUTS))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # The probe can fail: an absolute core import the copy did not rewrite is caught.
    broken = tmp_path / "broken"
    import tritonkit.model_repository.builders.common as common

    original = common.SOURCES
    try:
        common.SOURCES = tmp_path / "bad"
        (tmp_path / "bad" / "runtime").mkdir(parents=True)
        (tmp_path / "bad" / "runtime" / "x.py").write_text("from tritonkit.errors import E\n")
        with pytest.raises(RepositoryError, match=r"imports tritonkit outside tritonkit\.core"):
            copy_runtime(broken)
    finally:
        common.SOURCES = original


def test_an_engine_is_one_spec_and_one_builder(export_dir, tmp_path, monkeypatch):
    """A further engine plugs in through the slot alone: its spec names its builder module,
    ``build_repository`` checks the shared settings and the engine's, then calls it."""
    import dataclasses
    import sys
    import types
    from typing import ClassVar

    from tritonkit.model_repository import EngineSpec, engine_spec
    from tritonkit.model_repository.spec import ENGINES, BuiltRepository

    calls = []

    def build(source, output, spec, engine, force):
        calls.append((source, output, spec, engine, force))
        output.mkdir()
        return BuiltRepository(output, spec.name, "", spec.version, spec.target, engine.kind)

    monkeypatch.setitem(sys.modules, "toy_builder", types.SimpleNamespace(build=build))

    @dataclasses.dataclass(frozen=True)
    class Toy(EngineSpec):
        kind: ClassVar[str] = "toy"
        builder: ClassVar[str] = "toy_builder"
        source: ClassVar[str] = "any folder"
        width: int = 1

        def check(self, spec: RepositorySpec) -> None:
            if self.width < 1:
                raise UsageError("--width must be >= 1")

    built = build_repository(export_dir, tmp_path / "t", Toy(width=2), RepositorySpec(name="t"))
    assert (built.engine, built.entry_model) == ("toy", "t")
    assert calls[0][0] == export_dir.resolve() and calls[0][3] == Toy(width=2)
    with pytest.raises(UsageError, match="--width"):
        build_repository(export_dir, tmp_path / "t2", Toy(width=0))
    with pytest.raises(UsageError, match="model name"):
        build_repository(export_dir, tmp_path / "t3", Toy(), RepositorySpec(name="a b"))
    assert len(calls) == 1  # checks run before the builder is called
    # The CLI's engines: each spec comes from flags, other engines' flags ignored.
    assert set(ENGINES) == {"onnxruntime", "tensorrt", "vllm"}
    flags = {"prefill_chunk": 64, "dtype": "bfloat16", "cpu_kv_cache_gib": None, "plan": None}
    assert engine_spec("onnxruntime", **flags) == OnnxRuntime(prefill_chunk=64)
    assert engine_spec("vllm", **flags).dtype == "bfloat16"  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="unknown engine 'trtllm'"):
        engine_spec("trtllm")


def test_the_cli_refuses_options_of_another_engine(export_dir, tmp_path):
    """An option only another engine reads is refused, not silently ignored; the engine's
    own options reach its spec (and the entry config)."""
    base = ["repo", "build", "--export", str(export_dir)]
    for engine, flag, value in (
        ("vllm", "--prefill-chunk", "32"),
        ("vllm", "--tensorrt-accelerator", None),
        ("onnxruntime", "--dtype", "bfloat16"),
        ("onnxruntime", "--cpu-kv-cache-gib", "2"),
        ("onnxruntime", "--plan", str(tmp_path)),
    ):
        extra = [flag] if value is None else [flag, value]
        out = tmp_path / f"r-{engine}-{flag}"
        with pytest.raises(UsageError, match=rf"{flag} do\(es\) not apply to --engine {engine}"):
            run([*base, "--output", str(out), "--engine", engine, *extra])
        assert not out.exists()
    built = tmp_path / "ok"
    assert run([*base, "--output", str(built), "--prefill-chunk", "32", "--stall-factor", "3"]) == 0
    params = config.read(built / "llm").parameters
    assert params["prefill_chunk"].string_value == "32"
    assert params["stall_factor"].string_value == "3"
