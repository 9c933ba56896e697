"""Write GGUF files from tiny Hugging Face models, the way llama.cpp's convert script does.

``convert_hf_to_gguf.py`` (llama.cpp) turns a Hugging Face checkpoint into one GGUF file:
architecture metadata under ``{arch}.*`` keys, tensors renamed to GGUF's ``blk.N.*`` names
(with a few layout changes: GPT-2's Conv1D weights transposed, Llama's q/k rows permuted
for ggml's RoPE), the tokenizer as metadata, and every 2-D weight optionally quantized.
This module does the same for the tiny random models of ``conftest.save_tiny_model``, so
the tests read GGUF files shaped like real downloads without any network.

It also writes the broken inputs the tests need: an architecture transformers reads but
tritonkit does not export, a truncated copy and a file that is not GGUF at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from conftest import TINY_CONFIGS, save_tiny_model

# Tiny configs the GGUF round trip needs beyond conftest's TINY_CONFIGS. Their sizes are
# ones transformers' GGUF reader alone gets wrong (tritonkit repairs them, from_gguf.py):
# conftest's gpt2 has 256 positions, not GPT2Config's default 1024 (transformers maps the
# GGUF context length onto ``n_ctx``, which GPT2Config ignores); qwen3 gets head_dim 16,
# not Qwen3Config's default 128 (transformers does not read ``attention.key_length``).
GGUF_TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "qwen3": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention, as in every Qwen3
        "head_dim": 16,
        "max_position_embeddings": 256,
    },
}

# Hugging Face model_type -> the GGUF architecture llama.cpp writes. Mistral has no GGUF
# architecture of its own: llama.cpp converts MistralForCausalLM with its Llama class.
GGUF_ARCH = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}

# GGUF architectures whose q/k projections llama.cpp permutes (its LlamaModel.permute),
# which transformers' LlamaTensorProcessor undoes on load. Qwen2/Qwen3 are converted
# without it: their GGUF runs RoPE in NEOX mode, which uses Hugging Face's layout as is.
PERMUTED_QK = {"llama"}

# GPT-2 keeps these as Conv1D, weight shaped (in_features, out_features); llama.cpp
# transposes them to nn.Linear's (out_features, in_features).
GPT2_CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")

Q8_0 = gguf.GGMLQuantizationType.Q8_0


def save_tiny_source(arch: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny random ``arch`` model (and the tiny-llama tokenizer) that survives GGUF.

    ``gpt2``, ``llama``, ``mistral`` and ``qwen2`` are conftest's tiny models with
    ``GGUF_TINY_OVERRIDES`` applied; ``qwen3`` is built here the same way.
    """
    overrides = GGUF_TINY_OVERRIDES.get(arch, {})
    if arch in TINY_CONFIGS:
        return save_tiny_model(arch, folder, seed=seed, **overrides)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tritonkit.export import tiny

    tokenizer = tiny.build_tokenizer()
    config = AutoConfig.for_model(
        arch, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **overrides
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_gguf_from_folder(folder: Path, path: Path, quantize: bool = False) -> Path:
    """Convert the Hugging Face folder ``folder`` to the GGUF file ``path``; see ``write_gguf``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return write_gguf(model, tokenizer, path, quantize=quantize)


def write_gguf(model: Any, tokenizer: Any, path: Path, quantize: bool = False) -> Path:
    """Write ``model`` and ``tokenizer`` to the GGUF file ``path``.

    ``quantize=False`` writes every tensor as F32 (``convert_hf_to_gguf.py --outtype f32``);
    ``quantize=True`` stores each 2-D weight matrix as Q8_0 (``--outtype q8_0``), leaving
    norms, biases and position embeddings in F32, as llama.cpp does.
    """
    config = model.config
    arch = GGUF_ARCH[config.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    # general.name is a display name ("Mistral 7B Instruct" in real files), so
    # transformers reads a Mistral GGUF as the Llama it is written as. Only a name of
    # exactly "mistral" makes it try a "mistral" model_type, which gguf-py cannot map.
    writer.add_name(f"tiny-{config.model_type}")
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hyperparameters(writer, config, arch)
    _add_tokenizer(writer, tokenizer, config.vocab_size)
    for name, data in gguf_tensors(model):
        _add_tensor(writer, name, data, quantize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_hyperparameters(writer: gguf.GGUFWriter, config: Any, arch: str) -> None:
    """The ``{arch}.*`` keys llama.cpp writes for this model."""
    if arch == "gpt2":
        writer.add_context_length(config.n_positions)
        writer.add_embedding_length(config.n_embd)
        writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if arch == "llama":
        # llama.cpp's LlamaModel also states the rotary width and the vocabulary size.
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(config.vocab_size)


def _rope_theta(config: Any) -> float:
    """RoPE's base frequency; transformers 5 keeps it in ``rope_parameters``."""
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: Any, vocab_size: int) -> None:
    """A byte-level BPE tokenizer as llama.cpp's ``_set_vocab_gpt2`` writes it.

    Tokens are listed by id in the byte-level alphabet (``Ġthe``), padded with
    ``[PAD{id}]`` up to the model's vocabulary size; special added tokens are CONTROL.
    """
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            special = added[i].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's split regex, which the tiny tokenizer uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(tokenizer))
    for token, add in (
        (tokenizer.bos_token, writer.add_bos_token_id),
        (tokenizer.eos_token, writer.add_eos_token_id),
        (tokenizer.pad_token, writer.add_pad_token_id),
    ):
        if token is not None:
            add(tokenizer.convert_tokens_to_ids(token))
    # Whether encoding adds BOS/EOS is read off the tokenizer's behaviour, not a flag that
    # may be stale: llama.cpp takes it from the tokenizer's post-processor the same way.
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(ids) and ids[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(ids) and ids[-1] == tokenizer.eos_token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _merges(tokenizer: Any) -> list[str]:
    """The BPE merges as ``"a b"`` strings (tokenizer.json holds pairs or such strings)."""
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def gguf_tensors(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    """``model``'s weights as ``(GGUF name, float32 array)``, in llama.cpp's layout."""
    config = model.config
    arch = GGUF_ARCH[config.model_type]
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, _num_layers(config))
    embeddings = model.get_input_embeddings().weight
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2's causal-mask buffers, not weights
        if hf_name == "lm_head.weight" and tensor.data_ptr() == embeddings.data_ptr():
            continue  # a tied head is the embedding: no output.weight, as in llama.cpp
        base, suffix = hf_name.rsplit(".", 1)
        gguf_base = names.get_name(base)
        if gguf_base is None:
            raise ValueError(f"no GGUF name for {hf_name!r} in architecture {arch!r}")
        data = tensor.detach().float().cpu().numpy()
        yield f"{gguf_base}.{suffix}", _to_llama_cpp_layout(hf_name, data, config, arch)


def _num_layers(config: Any) -> int:
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


def _to_llama_cpp_layout(hf_name: str, data: np.ndarray, config: Any, arch: str) -> np.ndarray:
    """Reorder ``data`` the way convert_hf_to_gguf.py does for this tensor."""
    if arch == "gpt2" and hf_name.endswith(GPT2_CONV1D):
        return np.ascontiguousarray(data.T)  # (in, out) -> (out, in)
    if arch in PERMUTED_QK:
        heads = config.num_attention_heads
        if ".q_proj." in hf_name:
            return permute_qk(data, heads, heads)
        if ".k_proj." in hf_name:
            return permute_qk(data, heads, config.num_key_value_heads)
    return data


def permute_qk(data: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` of a q or k projection's rows (weight or bias).

    Hugging Face's RoPE rotates dimension ``i`` of a head with ``i + head_dim/2``; ggml's
    rotates ``2i`` with ``2i+1``. Per head, the rows go from ``[first half; second half]``
    to interleaved pairs:

        (n_head * head_dim, ...)
          -> (n_head, 2, head_dim/2, ...)   the two halves of each head
          -> (n_head, head_dim/2, 2, ...)   swapped: row j next to row j + head_dim/2
          -> (n_head * head_dim, ...)
    """
    if n_head_kv != n_head:
        n_head = n_head_kv  # a k projection has one block of rows per KV head
    rows = data.shape[0]
    split = data.reshape(n_head, 2, rows // n_head // 2, *data.shape[1:])
    return np.ascontiguousarray(split.swapaxes(1, 2).reshape(data.shape))


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, quantize: bool) -> None:
    """Add one tensor, as Q8_0 where llama.cpp's ``--outtype q8_0`` would quantize it."""
    # llama.cpp keeps 1-D tensors, norms and position embeddings in F32 at any outtype.
    keep_f32 = data.ndim < 2 or name.endswith("_norm.weight") or name.startswith("position_embd")
    if not quantize or keep_f32:
        writer.add_tensor(name, data.astype(np.float32))
        return
    try:
        writer.add_tensor(name, gguf.quants.quantize(data, Q8_0), raw_dtype=Q8_0)
    except gguf.quants.QuantError:
        # Rows not a multiple of Q8_0's 32-value block: llama.cpp falls back to F16.
        writer.add_tensor(name, data.astype(np.float16))


# ---- inputs that must be refused -------------------------------------------------------


def write_foreign_gguf(path: Path, arch: str = "phi3") -> Path:
    """A small GGUF of ``arch``, an architecture transformers reads but tritonkit does not export.

    The metadata is a plausible Phi-3 config and the file holds one real tensor (the
    embedding), enough for a GGUF reader to accept it: tritonkit must refuse the
    architecture from the config, before any weights are needed.
    """
    hidden, vocab = 64, 32
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // 4)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([gguf.TokenType.NORMAL] * vocab)
    # Ids inside this small vocabulary, or transformers warns about the config's defaults.
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((vocab, hidden), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_truncated_copy(src: Path, dst: Path, where: str = "tensors") -> Path:
    """``src`` cut short, as an interrupted download leaves it.

    ``where="tensors"`` cuts halfway through the tensor data (the metadata is whole);
    ``where="header"`` cuts halfway through the metadata, before any tensor data.
    """
    data = src.read_bytes()
    start = gguf.GGUFReader(str(src)).data_offset  # where the tensor data begins
    cut = start // 2 if where == "header" else (start + len(data)) // 2
    dst.write_bytes(data[:cut])
    return dst


def write_not_gguf(path: Path) -> Path:
    """A file with a ``.gguf`` name that is not GGUF (a zip header, as a mislabelled download)."""
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    return path
