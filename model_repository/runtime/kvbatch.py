"""The running batch's KV cache: rows of different lengths, left-padded to one length.

Sequences join and leave between decode steps (in-flight batching). The graph takes
one past length for the whole batch, so shorter rows are left-padded with zeros and
masked out by the attention mask; positions come from ``position_ids``, so padding
never shifts a row's RoPE or learned positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class KVBatch:
    """Per-layer past tensors (B, kv_heads, P, head_dim), the mask (B, P) and positions (B,)."""

    def __init__(self) -> None:
        self.past: list[Any] = []  # 2L arrays or OrtValues, each (B, kv_heads, P, head_dim)
        self.mask = np.zeros((0, 0), np.int64)  # (B, P): 1 real, 0 left padding
        self.positions = np.zeros((0,), np.int64)  # (B,) position of each row's next token

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def _numpy_past(self) -> list[np.ndarray]:
        return [p if isinstance(p, np.ndarray) else p.numpy() for p in self.past]

    def join(self, presents: list[Any], length: int) -> None:
        """Append one prefilled row; ``presents`` are (1, kv_heads, length, head_dim) each."""
        new = [p if isinstance(p, np.ndarray) else p.numpy() for p in presents]
        if self.size == 0:
            self.past = new
            self.mask = np.ones((1, length), np.int64)
            self.positions = np.array([length], np.int64)
            return
        past = self._numpy_past()
        target = max(self.length, length)
        grow = target - self.length  # pad every existing row on the left
        pad_new = target - length  # pad the newcomer on the left
        merged = []
        for old, row in zip(past, new):
            old = np.pad(old, ((0, 0), (0, 0), (grow, 0), (0, 0)))  # (B, kv, target, hd)
            row = np.pad(row, ((0, 0), (0, 0), (pad_new, 0), (0, 0)))  # (1, kv, target, hd)
            merged.append(np.concatenate([old, row], axis=0))  # (B+1, kv, target, hd)
        mask = np.pad(self.mask, ((0, 0), (grow, 0)))
        row_mask = np.concatenate([np.zeros(pad_new, np.int64), np.ones(length, np.int64)])
        self.past = merged
        self.mask = np.concatenate([mask, row_mask[None]], axis=0)  # (B+1, target)
        self.positions = np.append(self.positions, length)

    def remove(self, rows: list[int]) -> None:
        """Drop ``rows`` and trim the columns that are padding in every remaining row."""
        if not rows:
            return
        keep = [i for i in range(self.size) if i not in set(rows)]
        if not keep:
            self.__init__()  # type: ignore[misc]
            return
        mask = self.mask[keep]
        real = np.flatnonzero(mask.any(axis=0))
        start = int(real[0]) if real.size else 0  # leading all-padding columns
        self.past = [p[keep][:, :, start:, :] for p in self._numpy_past()]
        self.mask = np.ascontiguousarray(mask[:, start:])
        self.positions = self.positions[keep]

    def step_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The mask (B, P+1) and position ids (B, 1) for one decode step."""
        mask = np.concatenate([self.mask, np.ones((self.size, 1), np.int64)], axis=1)
        return mask, self.positions[:, None]

    def advance(self, presents: list[Any], mask: np.ndarray) -> None:
        """Take the step's presents (B, kv, P+1, hd) and mask (B, P+1) as the new state."""
        self.past = presents
        self.mask = mask
        self.positions = self.positions + 1
