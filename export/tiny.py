"""``tiny-llama``: the embedded default model, built from a fixed seed with no network.

A Llama-architecture decoder of about 2 M parameters with random weights and a
byte-level BPE tokenizer trained on the short corpus below. It exercises every code
path of a real model (grouped-query attention, RoPE, a KV cache, a chat template) in
seconds on a CPU; its text is gibberish, by design.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAME = "tiny-llama"
SEED = 0

# Llama dims: 4 layers, 6 query heads sharing 2 KV heads (GQA), head_dim 32.
CONFIG: dict[str, Any] = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,  # the context window the server enforces
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

VOCAB_TARGET = 1024  # BPE stops earlier when the corpus runs out of merges (about 600)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2, as in CONFIG

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

# Text the tokenizer is trained on: English prose, code and a little non-ASCII, so
# that merges exist for spaces and multi-byte characters are split across tokens.
CORPUS = (
    """\
Triton Inference Server serves models over HTTP and gRPC. A client sends a request,
the server runs the model on a GPU, and the response streams back token by token.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Language models predict the next token from the tokens before it. A key-value cache
keeps the attention keys and values of earlier tokens, so each new token costs one step.
def generate(prompt, max_tokens=32):
    return model.generate(prompt, max_new_tokens=max_tokens)
Batching many requests together keeps the GPU busy; in-flight batching lets a request
join the running batch at the next step and leave it as soon as it is done.
Ünïcödé tëxt, naïve café, résumé, Grüße, 東京, こんにちは, 🙂 and 🚀 are bytes too.
Azure Blob Storage holds the model repository; each version is verified before use.
"""
    * 4
)


def build_tokenizer() -> Any:
    """Train the byte-level BPE tokenizer; the same corpus always gives the same vocab.

    Returns a ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model() -> Any:
    """Build the random-weight Llama from ``SEED``; returns a ``LlamaForCausalLM``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # The vocabulary is whatever the tokenizer learned, so every id decodes.
    config = LlamaConfig(vocab_size=len(build_tokenizer()), **CONFIG)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = CONFIG["eos_token_id"]
    model.generation_config.pad_token_id = CONFIG["pad_token_id"]
    return model.eval()


def save(directory: str | Path) -> Path:
    """Write ``tiny-llama`` as a Hugging Face folder (config, weights, tokenizer)."""
    directory = Path(directory)
    build_model().save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory
