"""Shared fixtures: tiny random models built from configs with fixed seeds (no network)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Nothing in the tests may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Small configs per architecture: 2 layers, GQA where the architecture has it.
TINY_CONFIGS: dict[str, dict] = {
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
    "llama": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    "qwen2": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    "mistral": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=256,
        sliding_window=None,
    ),
}


def save_tiny_model(arch: str, folder: Path, seed: int = 0, **overrides) -> Path:
    """Save a random ``arch`` model with the tiny-llama tokenizer to ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tritonkit.export import tiny

    tokenizer = tiny.build_tokenizer()
    kwargs = {**TINY_CONFIGS[arch], **overrides}
    config = AutoConfig.for_model(
        arch, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **kwargs
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_model_folder("gpt2")`` saves a tiny random model and returns its folder."""

    def make(arch: str, **overrides) -> Path:
        return save_tiny_model(arch, tmp_path / f"hf-{arch}", **overrides)

    return make
