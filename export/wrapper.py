"""The module that is exported: a causal LM whose KV cache is flat tensors in and out.

ONNX has no notion of a ``Cache`` object, so the wrapper takes the past keys and
values as flat arguments, rebuilds a ``DynamicCache`` inside ``forward`` and returns
the logits followed by the flat presents. The same graph serves prefill (past 0)
and decode (sequence 1).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .architectures import ModelDims


def input_names(num_layers: int) -> list[str]:
    """The graph's inputs, in order."""
    names = ["input_ids", "attention_mask", "position_ids"]
    for i in range(num_layers):
        names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    return names


def output_names(num_layers: int) -> list[str]:
    """The graph's outputs, in order."""
    names = ["logits"]
    for i in range(num_layers):
        names += [f"present.{i}.key", f"present.{i}.value"]
    return names


def build_cache(past: tuple[torch.Tensor, ...] | list[torch.Tensor], config: Any) -> Any:
    """A ``DynamicCache`` holding the flat ``(key0, value0, key1, ...)`` tensors."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for layer in range(len(past) // 2):
        # (B, kv_heads, past, head_dim) each
        cache.update(past[2 * layer], past[2 * layer + 1], layer)
    return cache


def flatten_cache(cache: Any) -> list[torch.Tensor]:
    """The cache's tensors as ``[key0, value0, key1, value1, ...]``."""
    flat: list[torch.Tensor] = []
    for layer in cache.layers:
        flat += [layer.keys, layer.values]
    return flat


class DecoderWithPast(torch.nn.Module):
    """``(input_ids, attention_mask, position_ids, *past) -> (logits, *presents)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        # transformers 5 renamed `past_key_values` to `cache`; accept either.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S) int64
        attention_mask: torch.Tensor,  # (B, P+S) int64, 0 marks padding
        position_ids: torch.Tensor,  # (B, S) int64
        *past: torch.Tensor,  # 2*L tensors, each (B, kv_heads, P, head_dim)
    ) -> tuple[torch.Tensor, ...]:
        cache = build_cache(past, self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self._cache_arg: cache},
        )
        presents = getattr(out, "cache", None) or out.past_key_values
        # logits (B, S, vocab); presents (B, kv_heads, P+S, head_dim)
        return (out.logits, *flatten_cache(presents))


def example_inputs(
    dims: ModelDims, dtype: torch.dtype, device: str, batch: int = 2, seq: int = 3, past: int = 4
) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing. No dimension may be 0 or 1: torch.export would specialise it."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, dims.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    pos = torch.arange(past, past + seq).unsqueeze(0).expand(batch, seq).contiguous()
    shape = (batch, dims.num_kv_heads, past, dims.head_dim)
    kv = [torch.randn(shape, generator=g).to(dtype) for _ in range(2 * dims.num_layers)]
    return tuple(t.to(device) for t in (ids, mask, pos, *kv))
