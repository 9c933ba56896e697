"""One small declarative config per supported architecture, registered in one place.

A spec only says where a Hugging Face config keeps the numbers the export needs;
the export and the verification are the same code for every architecture. To add an
architecture whose decoder takes a ``Cache`` and ``position_ids`` (most do), register a
spec here and add a tiny config to ``tests/test_export.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonkit.errors import UnsupportedModelError

# Dynamic-axis names, defined once and used by the exporter, the reports and the
# Triton configs.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "total_sequence_length"  # past + current, the attention mask's length


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where an architecture's config keeps the decoder's dimensions."""

    model_type: str
    num_layers: str = "num_hidden_layers"
    num_attention_heads: str = "num_attention_heads"
    num_kv_heads: str | None = "num_key_value_heads"  # None: same as attention heads (MHA)
    hidden_size: str = "hidden_size"
    head_dim: str | None = "head_dim"  # None or unset: hidden_size // num_attention_heads
    max_positions: str = "max_position_embeddings"


@dataclass(frozen=True)
class ModelDims:
    """The numbers that shape the decoder's inputs and outputs."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_REGISTRY: dict[str, ArchitectureSpec] = {}


def register(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add ``spec`` to the registry (keyed by its ``model_type``) and return it."""
    _REGISTRY[spec.model_type] = spec
    return spec


register(
    ArchitectureSpec(
        model_type="gpt2",
        num_layers="n_layer",
        num_attention_heads="n_head",
        num_kv_heads=None,
        hidden_size="n_embd",
        head_dim=None,
        max_positions="n_positions",
    )
)
register(ArchitectureSpec(model_type="llama"))
register(ArchitectureSpec(model_type="mistral"))
register(ArchitectureSpec(model_type="qwen2"))
register(ArchitectureSpec(model_type="qwen3"))


def supported_architectures() -> list[str]:
    """The ``model_type`` values that can be exported, sorted."""
    return sorted(_REGISTRY)


def spec_for(model_type: str) -> ArchitectureSpec:
    """The spec for ``model_type``.

    Raises:
        UnsupportedModelError: no spec is registered for it.
    """
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"architecture {model_type!r} is not supported; supported: "
            f"{', '.join(supported_architectures())}"
        ) from None


def dims_of(config: Any) -> ModelDims:
    """Read the decoder's dimensions from a Hugging Face config.

    Raises:
        UnsupportedModelError: the architecture is unknown or the config lacks a field.
    """
    spec = spec_for(config.model_type)

    def get(name: str) -> int:
        value = getattr(config, name, None)
        if value is None:
            raise UnsupportedModelError(
                f"config of {config.model_type!r} has no {name!r}; is it a valid config.json?"
            )
        return int(value)

    heads = get(spec.num_attention_heads)
    hidden = get(spec.hidden_size)
    kv_heads = get(spec.num_kv_heads) if spec.num_kv_heads else heads
    head_dim = getattr(config, spec.head_dim, None) if spec.head_dim else None
    return ModelDims(
        num_layers=get(spec.num_layers),
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(head_dim) if head_dim else hidden // heads,
        hidden_size=hidden,
        vocab_size=get("vocab_size"),
        max_positions=get(spec.max_positions),
    )
