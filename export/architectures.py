"""Which architectures export, and the decoder's dimensions from a Hugging Face config.

transformers maps every supported config onto the same attribute names (GPT-2's
``attribute_map`` turns ``num_hidden_layers`` into ``n_layer`` and so on), so the export
and the verification are the same code for every architecture. What transformers does
not say is which architectures this exporter has been checked on, and two defaults:
a config without ``num_key_value_heads`` (GPT-2) has one KV head per attention head,
and one without ``head_dim`` splits ``hidden_size`` evenly. To add an architecture whose
decoder takes a ``Cache`` and ``position_ids`` (most do), add its ``model_type`` to
``ARCHITECTURES`` and a tiny config to ``tests/conftest.py``.
"""

from __future__ import annotations

from typing import Any

from tritonkit.core.layout import ModelDims
from tritonkit.errors import UnsupportedModelError

__all__ = ["ModelDims", "check_architecture", "dims_of", "supported_architectures"]

# Dynamic-axis names, defined once and used by the exporter, the reports and the
# Triton configs.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "total_sequence_length"  # past + current, the attention mask's length


ARCHITECTURES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")  # Hugging Face model_type


def supported_architectures() -> list[str]:
    """The ``model_type`` values that can be exported, sorted."""
    return sorted(ARCHITECTURES)


def check_architecture(model_type: str) -> None:
    """Accept a ``model_type`` this exporter supports.

    Raises:
        UnsupportedModelError: any other.
    """
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"architecture {model_type!r} is not supported; supported: "
            f"{', '.join(supported_architectures())}"
        )


def dims_of(config: Any) -> ModelDims:
    """Read the decoder's dimensions from a Hugging Face config.

    Raises:
        UnsupportedModelError: the architecture is unknown or the config lacks a field.
    """
    check_architecture(config.model_type)

    def get(name: str) -> int:
        value = getattr(config, name, None)
        if value is None:
            raise UnsupportedModelError(
                f"config of {config.model_type!r} has no {name!r}; is it a valid config.json?"
            )
        return int(value)

    heads = get("num_attention_heads")
    hidden = get("hidden_size")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads  # None: GPT-2's MHA
    head_dim = getattr(config, "head_dim", None) or hidden // heads  # None: Qwen2, GPT-2
    return ModelDims(
        num_layers=get("num_hidden_layers"),
        num_attention_heads=heads,
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        hidden_size=hidden,
        vocab_size=get("vocab_size"),
        max_positions=get("max_position_embeddings"),
    )
