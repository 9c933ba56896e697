"""GGUF checkpoints, written the way llama.cpp converts a model, loaded and exported for real.

Each tiny random model is saved as a Hugging Face folder (the reference) and converted to
GGUF by ``gguf_writer``; transformers reads the GGUF back (dequantizing it), tritonkit
exports it, and onnxruntime runs the result. Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from gguf_writer import (
    GGUF_ARCH,
    PERMUTED_QK,
    save_tiny_source,
    write_foreign_gguf,
    write_gguf_from_folder,
    write_not_gguf,
    write_truncated_copy,
)

from tritonkit.errors import ModelSourceError, UnsupportedModelError
from tritonkit.export import main_export, supported_architectures
from tritonkit.export.architectures import dims_of
from tritonkit.export.loading import load
from tritonkit.export.onnx_export import GREEDY_PROMPT

F32 = gguf.LlamaFileType.ALL_F32.name
Q8_0 = gguf.LlamaFileType.MOSTLY_Q8_0.name

# Text the tokenizers must split identically: English, Portuguese with accents and
# emoji (multi-byte UTF-8, so byte-level tokens and merges across bytes are exercised).
TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Olá! A ação e a informação não são só úteis: são essenciais, coração.",
    "Emoji: 🙂🚀👍🏽 e café ☕ em São Paulo",
)
MESSAGES = [{"role": "user", "content": "Olá, tudo bem? 🙂"}]


Checkpoints = Callable[..., tuple[Path, Path]]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    """Factory: ``checkpoints(arch, quantize=False)`` -> (Hugging Face folder, .gguf file).

    Built once per module. Each GGUF sits alone in its own folder, as a download would,
    so ``--model FOLDER --gguf-file NAME`` has a folder without config.json to read.
    """
    root = tmp_path_factory.mktemp("gguf")
    made: dict[tuple[str, bool], tuple[Path, Path]] = {}

    def make(arch: str, quantize: bool = False) -> tuple[Path, Path]:
        if (arch, quantize) not in made:
            src = root / f"hf-{arch}"
            if not src.exists():
                save_tiny_source(arch, src)
            kind = "q8_0" if quantize else "f32"
            folder = root / f"gguf-{arch}-{kind}"
            folder.mkdir()
            path = write_gguf_from_folder(src, folder / f"tiny-{arch}-{kind}.gguf", quantize)
            made[arch, quantize] = (src, path)
        return made[arch, quantize]

    return make


def _require_transformers_gguf(arch: str) -> None:
    """Skip ``arch`` when transformers cannot read its GGUF architecture at all."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:  # the newer reader's architectures (transformers >= 5.2x)
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    except ImportError:
        GGUF_CONFIG_ARCHS = {}
    # An architecture gguf_writer does not know is looked up under its own name: if
    # transformers reads it, the test then fails in the writer, which is what to extend.
    name = GGUF_ARCH.get(arch, arch)
    if name not in {*GGUF_SUPPORTED_ARCHITECTURES, *GGUF_CONFIG_ARCHS}:
        pytest.skip(f"transformers reads no GGUF of architecture {name!r}")


def _source(src: Path) -> tuple[Any, Any]:
    """The reference model (float32, eval) and tokenizer from the Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(src)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _all_f32(path: Path) -> dict[str, int]:
    """``tensor_types`` of an all-F32 file: every tensor the GGUF reader lists."""
    return {"F32": len(gguf.GGUFReader(str(path)).tensors)}


def _assert_same_tokenizer(tokenizer: Any, reference: Any) -> None:
    """``tokenizer`` splits, decodes and templates text exactly as ``reference`` does."""
    assert tokenizer.chat_template == reference.chat_template
    chat = reference.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == chat
    # The rendered chat holds the special tokens, which must stay whole (one id each).
    for text in (*TEXTS, chat):
        ids = reference(text)["input_ids"]
        assert tokenizer(text)["input_ids"] == ids, text
        assert tokenizer.decode(ids) == reference.decode(ids)
    assert tokenizer.bos_token_id == reference.bos_token_id
    assert tokenizer.eos_token_id == reference.eos_token_id
    assert tokenizer.pad_token_id == reference.pad_token_id


def _assert_gguf_export(
    out: Path, path: Path, src: Path, arch: str, quantization: str, tensor_types: dict[str, int]
) -> dict:
    """``out`` is a passed export of the GGUF ``path`` whose report describes that file."""
    from transformers import AutoTokenizer

    report = json.loads((out / "export.json").read_text())
    assert report["passed"] is True and report["greedy_match"] is True
    assert report["architecture"] == GGUF_ARCH[arch]
    digest = _sha256(path)
    model, tokenizer = _source(src)
    # The dims the export used are the source's, head size included (transformers alone
    # would read 128 for qwen3 and 1024 positions for gpt2).
    assert report["dims"] == dims_of(model.config).to_dict()
    source = report["source"]
    assert source["kind"] == "gguf"
    assert source["revision"] == f"sha256:{digest}"
    assert source["gguf"] == {
        "file": path.name,
        "sha256": digest,
        "size_bytes": path.stat().st_size,
        "architecture": GGUF_ARCH[arch],
        "quantization": quantization,
        "tensor_types": tensor_types,
        "has_chat_template": True,
        "head_dim": None if arch == "gpt2" else report["dims"]["head_dim"],  # key_length
    }
    # The export is a plain model: nothing says "gguf" to whoever loads config.json.
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    # Serving tokenizes with the exported tokenizer: it must be the source's.
    _assert_same_tokenizer(AutoTokenizer.from_pretrained(out), tokenizer)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no .partial-* left
    return report


# ---- every architecture ------------------------------------------------------------------


@pytest.mark.parametrize("arch", supported_architectures())
def test_gguf_loads_like_its_source(arch, checkpoints):
    """An F32 GGUF gives back the source's exact weights, tokenizer and chat template."""
    _require_transformers_gguf(arch)
    src, path = checkpoints(arch)
    model, tokenizer = _source(src)

    loaded = load(str(path))

    assert loaded.kind == "gguf" and loaded.revision == f"sha256:{_sha256(path)}"
    assert loaded.gguf is not None and loaded.gguf.quantization == F32
    # llama.cpp writes Mistral as a Llama (there is no GGUF "mistral"), and it is one:
    # same weights and, without a sliding window, the same forward pass.
    assert loaded.model.config.model_type == GGUF_ARCH[arch]
    assert dims_of(loaded.model.config) == dims_of(model.config)
    assert getattr(loaded.model.config, "quantization_config", None) is None
    expected, got = model.state_dict(), loaded.model.state_dict()
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    if GGUF_ARCH[arch] in PERMUTED_QK:
        # The file holds q in llama.cpp's permuted row order, so the equality above
        # shows that transformers undid the permutation (not that there was none).
        stored = {t.name: t.data for t in gguf.GGUFReader(str(path)).tensors}
        q_proj = expected["model.layers.0.self_attn.q_proj.weight"].numpy()
        assert stored["blk.0.attn_q.weight"].shape == q_proj.shape
        assert not np.array_equal(stored["blk.0.attn_q.weight"], q_proj)
    assert loaded.tokenizer is not None
    _assert_same_tokenizer(loaded.tokenizer, tokenizer)


@pytest.mark.parametrize("arch", supported_architectures())
def test_gguf_export_passes(arch, checkpoints, tmp_path):
    """``main_export`` of an F32 .gguf passes every check and records the file it read."""
    _require_transformers_gguf(arch)
    src, path = checkpoints(arch)

    result = main_export(str(path), tmp_path / "exports" / arch)

    assert result.passed
    report = _assert_gguf_export(result.output, path, src, arch, F32, _all_f32(path))
    assert report["source"]["model"] == str(path)


# ---- a quantized file --------------------------------------------------------------------


def _q8_0_bound(weight: torch.Tensor) -> torch.Tensor:
    """The largest error Q8_0 can leave on each value of ``weight`` (rows, cols).

    Q8_0 stores each run of 32 values along a row as int8 times one float16 scale
    ``d = max|x| / 127``: rounding to the int8 grid costs up to ``d / 2``, the scale's
    float16 rounding (relative 2**-11) up to ``127 * d * 2**-11`` more.
    """
    blocks = weight.reshape(weight.shape[0], -1, 32)  # (rows, cols / 32, 32)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    bound = d / 2 + 127 * d * 2**-11
    return bound.expand_as(blocks).reshape(weight.shape) * (1 + 1e-4) + 1e-9


def _onnx_logits(out: Path, report: dict, ids: list[int]) -> np.ndarray:
    """The last prompt position's logits (vocab,) of the exported graph under onnxruntime,
    with an empty KV cache (either graph kind: the fused one has no position_ids)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    n, dims = len(ids), report["dims"]
    # (batch, kv_heads, past_sequence_length = 0, head_dim) for every past key and value
    empty = np.zeros((1, dims["num_kv_heads"], 0, dims["head_dim"]), dtype=np.float32)
    values = {
        "input_ids": np.array([ids], dtype=np.int64),  # (1, n)
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
    }
    feeds = {i.name: values.get(i.name, empty) for i in session.get_inputs()}
    return session.run(["logits"], feeds)[0][0, -1]


def test_q8_0_exports_against_the_dequantized_model(checkpoints, tmp_path):
    """A Q8_0 file is dequantized (close to the source, not equal) and verified as dequantized."""
    _require_transformers_gguf("llama")
    src, path = checkpoints("llama", quantize=True)
    model, _ = _source(src)
    expected = model.state_dict()

    loaded = load(str(path))

    matrices = [name for name, t in expected.items() if t.ndim == 2]
    assert loaded.gguf is not None and loaded.gguf.quantization == Q8_0
    # llama.cpp quantizes every weight matrix and keeps the norms in F32.
    assert loaded.gguf.tensor_types == {"Q8_0": len(matrices), "F32": len(expected) - len(matrices)}
    got = loaded.model.state_dict()
    for name, tensor in expected.items():
        if tensor.ndim == 2:
            error = (got[name] - tensor).abs()
            assert not torch.equal(got[name], tensor), f"{name} was not quantized"
            assert bool((error <= _q8_0_bound(tensor)).all()), f"{name}: beyond Q8_0's error"
        else:
            assert torch.equal(got[name], tensor), name

    result = main_export(str(path), tmp_path / "exports" / "llama-q8_0")

    report = _assert_gguf_export(result.output, path, src, "llama", Q8_0, loaded.gguf.tensor_types)
    # onnxruntime agrees with the dequantized model far more closely than the dequantized
    # model agrees with the source: the export's reference is the dequantized model.
    ids = loaded.tokenizer(GREEDY_PROMPT)["input_ids"]
    with torch.no_grad():
        dequantized = loaded.model(torch.tensor([ids])).logits.numpy()[0, -1]  # (vocab,)
        original = model(torch.tensor([ids])).logits.numpy()[0, -1]
    onnx = _onnx_logits(result.output, report, ids)
    quantization_error = float(np.abs(dequantized - original).max())
    assert quantization_error > 0
    assert float(np.abs(onnx - dequantized).max()) < quantization_error / 10


# ---- the command line --------------------------------------------------------------------


def test_cli_exports_a_gguf_file_named_inside_a_folder(checkpoints, tmp_path, capsys):
    """``--model FOLDER --gguf-file NAME`` exports that file from the folder."""
    from tritonkit.cli import run

    _require_transformers_gguf("qwen2")
    src, path = checkpoints("qwen2")
    out = tmp_path / "exports" / "qwen2"
    argv = ["export", "onnx", "--model", str(path.parent), "--gguf-file", path.name]

    assert run([*argv, "--output", str(out), "--quiet"]) == 0

    assert "passed=true greedy_match=true" in capsys.readouterr().out
    report = _assert_gguf_export(out, path, src, "qwen2", F32, _all_f32(path))
    assert report["source"]["model"] == str(path.parent)


# ---- inputs that must be refused -----------------------------------------------------------


def _not_gguf(root: Path, checkpoints: Checkpoints) -> dict:
    return {"model": str(write_not_gguf(root / "model.gguf"))}


def _truncated(where: str) -> Callable[[Path, Checkpoints], dict]:
    def make(root: Path, checkpoints: Checkpoints) -> dict:
        _, good = checkpoints("llama")
        return {"model": str(write_truncated_copy(good, root / "model.gguf", where))}

    return make


def _foreign(arch: str) -> Callable[[Path, Checkpoints], dict]:
    def make(root: Path, checkpoints: Checkpoints) -> dict:
        return {"model": str(write_foreign_gguf(root / "model.gguf", arch))}

    return make


def _path_as_gguf_file(root: Path, checkpoints: Checkpoints) -> dict:
    # A real GGUF waits at ../x.gguf: the refusal is about the path, not a missing file.
    _, good = checkpoints("llama")
    shutil.copy(good, root / "x.gguf")
    (root / "models").mkdir()
    return {"model": str(root / "models"), "gguf_file": "../x.gguf"}


def _missing(root: Path, checkpoints: Checkpoints) -> dict:
    return {"model": str(root / "missing.gguf")}


SUPPORTED = "supported: " + ", ".join(supported_architectures())

# case -> (build the main_export arguments, error class, fragments of its message)
BAD_INPUTS = {
    "not-gguf": (_not_gguf, ModelSourceError, ["model.gguf is not a GGUF file", "b'GGUF'"]),
    "truncated-in-tensors": (_truncated("tensors"), ModelSourceError, ["truncated", "again"]),
    "truncated-in-header": (_truncated("header"), ModelSourceError, ["truncated", "again"]),
    "phi3": (_foreign("phi3"), UnsupportedModelError, ["'phi3'", SUPPORTED]),
    "starcoder2": (_foreign("starcoder2"), UnsupportedModelError, ["'starcoder2'", SUPPORTED]),
    "unreadable-arch": (
        _foreign("rwkv6"),
        UnsupportedModelError,
        ["cannot be read by transformers"],
    ),
    "gguf-file-is-a-path": (_path_as_gguf_file, ModelSourceError, ["'../x.gguf'", "not a path"]),
    "missing": (_missing, ModelSourceError, ["missing.gguf", "does not exist"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_gguf_is_refused_and_leaves_nothing(case, checkpoints, tmp_path):
    """Each bad input stops with its own one-line error before any output is written."""
    build, error, fragments = BAD_INPUTS[case]
    kwargs = build(tmp_path, checkpoints)
    exports = tmp_path / "exports"
    exports.mkdir()

    with pytest.raises(ModelSourceError) as info:
        main_export(kwargs.pop("model"), exports / "model", **kwargs)

    assert type(info.value) is error
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert list(exports.iterdir()) == []  # no output folder, no .model.partial-*


@pytest.mark.parametrize("case", ["not-gguf", "phi3"])
def test_cli_bad_gguf_prints_one_error_line(case, checkpoints, tmp_path):
    """``python -m tritonkit`` turns a refused GGUF into exactly one stderr line."""
    build, _, fragments = BAD_INPUTS[case]
    model = build(tmp_path, checkpoints)["model"]
    exports = tmp_path / "exports"
    exports.mkdir()
    command = [sys.executable, "-m", "tritonkit", "export", "onnx", "--model", model]
    proc = subprocess.run(
        [*command, "--output", str(exports / "model")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tritonkit: error:")
    assert all(fragment in lines[0] for fragment in fragments)
    assert list(exports.iterdir()) == []
