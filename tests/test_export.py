"""Real exports of tiny random models, verified by real onnxruntime against real PyTorch."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import save_tiny_model

from tritonkit.errors import (
    ExportError,
    ModelSourceError,
    UnsupportedModelError,
    UsageError,
    VerificationError,
)
from tritonkit.export import main_export, onnx_export, supported_architectures
from tritonkit.export.verify import CHECK_POINTS
from tritonkit.export.verify_fused import FUSED_CHECKS


def _assert_complete(out: Path, arch: str) -> dict:
    report = json.loads((out / "export.json").read_text())
    assert report["passed"] is True and report["greedy_match"] is True
    assert report["architecture"] == arch
    fused = report["graph"] == "fused"
    assert fused == (arch in ("llama", "qwen2", "mistral", "qwen3"))  # auto picks fused there
    assert len(report["checks"]) == len(FUSED_CHECKS if fused else CHECK_POINTS)
    layers = report["dims"]["num_layers"]
    for check in report["checks"]:
        assert check["passed"] and check["finite"]
        assert check["onnx_err"] <= check["limit"]
        assert check["top1_agree"] + check["top1_near_ties"] == check["top1_positions"] > 0
        # logits and every present.{i}.key/value were compared
        assert len(check["outputs"]) == 1 + 2 * layers
    names = [i["name"] for i in report["inputs"]]
    first = ["input_ids", "attention_mask"] + ([] if fused else ["position_ids"])
    assert names[: len(first)] == first
    k = len(first)
    layers = report["dims"]["num_layers"]
    cache = {f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")}
    assert set(names[k:]) == cache  # (the fused graph lists every key, then every value)
    assert report["inputs"][k]["shape"][0] == "batch_size"
    assert report["inputs"][k]["shape"][2] == "past_sequence_length"
    assert report["inputs"][k]["shape"][3] == report["dims"]["head_dim"]
    assert [o["name"] for o in report["outputs"]][:2] == ["logits", "present.0.key"]
    assert report["greedy"]["new_tokens"] >= 32
    assert report["greedy"]["onnx_tokens"] == report["greedy"]["torch_tokens"]
    for key in ("torch", "transformers", "onnx", "onnxruntime"):
        assert report["versions"][key]
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "generation.json").read_text())["eos_token_ids"] == [2]
    assert not list(out.parent.glob(f".{out.name}.partial-*"))
    return report


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "mistral"])
def test_export_architecture_passes_every_check(arch, tiny_model_folder, tmp_path):
    src = tiny_model_folder(arch)
    result = main_export(str(src), tmp_path / "out", new_tokens=32)
    report = _assert_complete(result.output, arch)
    assert report["source"]["kind"] == "folder"
    assert report["source"]["revision"].startswith("sha256:")


def test_cli_exports_tiny_llama(tmp_path):
    from tritonkit.cli import run

    assert (
        run(["export", "onnx", "--model", "tiny-llama", "--output", str(tmp_path / "t"), "--quiet"])
        == 0
    )
    report = _assert_complete(tmp_path / "t", "llama")
    assert report["source"]["kind"] == "embedded"
    # The embedded model is deterministic: same seed, same weights.
    again = main_export("tiny-llama", tmp_path / "t2")
    assert again.report["source"]["revision"] == report["source"]["revision"]


def _perturb_first_weight(path: Path) -> None:
    model = onnx.load(str(path))
    big = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    array = onnx.numpy_helper.to_array(big).copy()
    array += np.float32(0.05) * np.sign(array + 1e-9)  # small, but far beyond tolerance
    big.CopyFrom(onnx.numpy_helper.from_array(array, big.name))
    onnx.save(model, str(path))


def test_broken_export_fails_verification(tiny_model_folder, tmp_path, monkeypatch):
    real = onnx_export._export_graph

    def export_then_break(model, dims, path, *args):
        external = real(model, dims, path, *args)
        _perturb_first_weight(path)
        return external

    monkeypatch.setattr(onnx_export, "_export_graph", export_then_break)
    out = tmp_path / "broken"
    with pytest.raises(VerificationError, match="verification failed"):
        main_export(str(tiny_model_folder("llama")), out, graph="concat")
    report = json.loads((out / "export.json").read_text())
    assert report["passed"] is False
    assert any(not c["passed"] for c in report["checks"])


def test_external_data_is_one_relative_file(tiny_model_folder, tmp_path):
    out = tmp_path / "ext"
    main_export(str(tiny_model_folder("gpt2")), out, external_data_threshold=0)
    report = _assert_complete(out, "gpt2")
    assert report["files"]["external_data"] == "model.onnx.data"
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    locations = {
        entry.value
        for t in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.initializer
        for entry in t.external_data
        if entry.key == "location"
    }
    assert locations == {"model.onnx.data"}


# ---- bad input -------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        main_export(str(tmp_path / "nope"), tmp_path / "out")


def test_unreachable_hub_id(tmp_path):
    with pytest.raises(ModelSourceError, match="cannot load the config"):
        main_export("no-such-org/no-such-model", tmp_path / "out")


def test_not_a_causal_lm(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(UnsupportedModelError, match="not a causal language model"):
        main_export(str(tmp_path / "bert"), tmp_path / "out")


def test_unsupported_architecture_names_the_supported(tmp_path):
    from transformers import GPTNeoXConfig

    GPTNeoXConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "neox"
    )
    with pytest.raises(UnsupportedModelError) as info:
        main_export(str(tmp_path / "neox"), tmp_path / "out")
    for arch in supported_architectures():
        assert arch in str(info.value)


def test_non_empty_output_refused_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="--force"):
        main_export("tiny-llama", out)
    assert (out / "keep.txt").read_text() == "mine"  # nothing lost


def test_failing_disk_leaves_nothing(tmp_path, monkeypatch):
    # A full disk cannot be made here without root-only tricks; the write is made to fail.
    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    from torch.onnx._internal.exporter._onnx_program import ONNXProgram

    monkeypatch.setattr(ONNXProgram, "save", full_disk)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="No space left on device"):
        main_export("tiny-llama", out, graph="concat")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial folder left behind


def test_bfloat16_on_cpu_is_refused_clearly(tmp_path):
    out = tmp_path / "bf16"
    with pytest.raises(ExportError, match="lack bfloat16"):
        main_export(str(save_tiny_model("llama", tmp_path / "hf")), out, dtype="bfloat16")
    assert not out.exists()  # nothing that looks complete


def test_float16_export_passes(tiny_model_folder, tmp_path):
    result = main_export(str(tiny_model_folder("qwen2")), tmp_path / "fp16", dtype="float16")
    assert result.report["dtype"] == "float16" and result.passed
    assert result.report["inputs"][3]["dtype"] == "FLOAT16"


def test_cli_prints_one_line_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonkit",
            "export",
            "onnx",
            "--model",
            str(tmp_path / "x"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tritonkit: error: model folder")


def test_a_head_size_grouped_query_attention_refuses_gets_the_concat_graph(
    tmp_path, tiny_model_folder
):
    """A small custom Llama with head size 8: auto exports the graph that runs (concat);
    --graph fused refuses it up front in one line (onnxruntime would refuse the graph)."""
    from tritonkit.errors import UsageError

    src = str(tiny_model_folder("llama", num_attention_heads=8, num_key_value_heads=2))
    result = main_export(src, tmp_path / "auto")
    assert result.report["graph"] == "concat" and result.passed
    with pytest.raises(UsageError, match=r"multiple of 16.*this model's is 8"):
        main_export(src, tmp_path / "fused", graph="fused")


def test_the_greedy_check_compares_like_with_like_when_the_model_reaches_eos(
    tmp_path, tiny_model_folder
):
    """A model whose greedy path reaches its EOS at the third new token: the graph and the
    reference both take the plain argmax, so a correct graph passes (``generate`` with
    min_new_tokens suppressed that EOS on one side only, and refused the export)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tritonkit.export.onnx_export import GREEDY_PROMPT

    src = tiny_model_folder("llama")
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    ids = AutoTokenizer.from_pretrained(src)(GREEDY_PROMPT)["input_ids"]
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(3):
            logits = model(torch.tensor([ids + tokens])).logits[0, -1]
            tokens.append(int(logits.argmax()))
    eos = tokens[2]
    assert eos not in tokens[:2]
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    model.save_pretrained(tmp_path / "eos-early")
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / "eos-early")
    result = main_export(str(tmp_path / "eos-early"), tmp_path / "out", graph="concat")
    assert result.passed and result.report["greedy_match"]
    assert result.report["greedy"]["onnx_tokens"][:3] == tokens
