"""The two engines the scheduler drives, one per graph kind, behind one small interface.

    reserve() -> handle | None     a row for a new request (None: every row is taken)
    admit(prompt) -> (handle, n)   the same, for this prompt: its first n tokens are
                                   already in the row (a kept prefix), or None
    prefill(handle, ids) -> logits append prompt tokens to the row (a chunk at a time);
                                   the last one's logits (vocab,)
    decode(handles, tokens)        one token for each row; logits (n, vocab) in that order
    release(handle)                the request left; its row is free
    reset()                        forget every row (after a failure of the engine itself)

``FusedEngine`` runs the fused-attention graph over preallocated KV rows
(``FusedDecoder``): joining and leaving copy nothing, and a finished request's row keeps
its tokens' KV until the row is needed (automatic prefix caching, below).
``ConcatEngine`` runs the concat graph (``OnnxDecoder``): a row's cache grows by
concatenation while it is prefilled, then joins the left-padded running batch
(``KVBatch``), which copies the batch's cache when a row joins or leaves.
``open_engine`` picks one from the export report.

Imports only numpy and onnxruntime: this module runs inside the Triton container.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tritonkit.core.layout import ExportReport

from .decoder import OnnxDecoder
from .fused_decoder import CacheShape, FusedDecoder
from .kvbatch import KVBatch

_FUSED_KV_DTYPES: dict[str, Any] = {"float32": np.float32, "float16": np.float16}


class Engine(Protocol):
    """What the scheduler needs from an engine (see the module docstring)."""

    def reserve(self) -> Any | None: ...

    def admit(self, prompt_ids: list[int]) -> tuple[Any, int] | None: ...

    def free_rows(self) -> int: ...

    def copy_row(self, src: Any, dst: Any) -> None: ...

    def prefill(self, handle: Any, ids: list[int]) -> np.ndarray: ...

    def decode(self, handles: list[Any], tokens: list[int]) -> np.ndarray: ...

    def release(self, handle: Any, keep: bool = True) -> None: ...

    def reset(self) -> None: ...


MIN_COPY_TOKENS = 16  # a shared prefix shorter than this is prefilled, not copied


@dataclass
class PrefixStats:
    """What the prefix cache did, counted since the engine opened."""

    hits: int = 0  # requests that started from a kept prefix
    misses: int = 0  # requests that prefilled from nothing
    evictions: int = 0  # kept prefixes overwritten by other work
    cached_tokens: int = 0  # prompt tokens not prefilled thanks to the cache
    kept: int = 0  # free rows holding a prefix now


class FusedEngine:
    """Rows are slots of the preallocated cache.

    Automatic prefix caching (``prefix_cache``): a released row keeps its tokens and
    their KV. ``admit`` compares the prompt with what every row holds and starts it from
    the longest shared prefix: in place when that row is free (the row is truncated to
    the prefix), else copied into a free row inside the buffers (a prefix another running
    request holds, the same system prompt, say). A request always leaves at least one
    prompt token to prefill, for its logits. Fresh work takes an empty free row, else the
    least recently used kept one (evicting its prefix): a kept prefix never makes a
    request wait. Rows are compared token by token: at most ``max_batch`` rows are kept,
    so this costs well under a millisecond and matches to the token (mid-chunk
    included), where hashing fixed blocks pays off only with thousands of paged blocks.
    """

    def __init__(self, decoder: FusedDecoder, prefix_cache: bool = True) -> None:
        self.decoder = decoder
        self.prefix_cache = prefix_cache
        self._free = list(range(decoder.shape.max_batch))
        self._clock = itertools.count(1)
        self._used = [0] * decoder.shape.max_batch  # when each row was last released
        self.stats = PrefixStats()

    def reserve(self) -> int | None:
        admitted = self.admit([])
        return None if admitted is None else admitted[0]

    def admit(self, prompt_ids: list[int]) -> tuple[int, int] | None:
        if not self._free:
            return None
        best, shared = None, 0  # the row with the longest usable prefix, and its length
        if self.prefix_cache and len(prompt_ids) > 1:
            prompt = np.asarray(prompt_ids, np.int32)  # (P,)
            lengths = self.decoder.lengths
            for slot in range(len(lengths)):
                row = self.decoder.token_ids[slot, : lengths[slot]]  # (held,)
                n = min(_common_prefix(row, prompt), len(prompt_ids) - 1)
                if n > shared or (n == shared and n and slot in self._free):
                    best, shared = slot, n
        if shared < MIN_COPY_TOKENS:  # a BOS or a template header: not worth a row
            best, shared = None, 0
        held = 0 if best is None else int(self.decoder.lengths[best])
        empty = any(not self.decoder.lengths[s] for s in self._free)
        if best in self._free and (held - shared < MIN_COPY_TOKENS or not empty):
            # In place: the same conversation grown (or no empty row to copy into); what
            # the row held past the shared prefix is dropped.
            self._free.remove(best)
            self.decoder.truncate(best, shared)
            self.stats.evictions += held - shared >= MIN_COPY_TOKENS
            slot = best
        else:  # a prefix of a running row, or of a kept row worth keeping whole: copied
            slot = self._evict()
            if best is not None:
                try:
                    self.decoder.copy_prefix(best, slot, shared)
                except Exception:  # a failed copy costs a prefill, never the loop
                    self.decoder.release(slot)
                    shared = 0
        if prompt_ids:
            self.stats.hits += shared > 0
            self.stats.misses += shared == 0
            self.stats.cached_tokens += shared
        self._count_kept()
        return slot, shared

    def _evict(self) -> int:
        """A free row for new work: an empty one (the lowest), else the least recently
        used kept one, whose prefix is dropped."""
        empty = [s for s in self._free if not self.decoder.lengths[s]]
        slot = min(empty) if empty else min(self._free, key=lambda s: self._used[s])
        if not empty:
            self.stats.evictions += 1
        self._free.remove(slot)
        self.decoder.release(slot)
        return slot

    def free_rows(self) -> int:
        return len(self._free)

    def copy_row(self, src: int, dst: int) -> None:
        """Row ``dst`` holds what row ``src`` holds (n > 1: a prompt's KV, forked)."""
        self.decoder.copy_prefix(src, dst, int(self.decoder.lengths[src]))

    def _count_kept(self) -> None:
        self.stats.kept = sum(1 for s in self._free if self.decoder.lengths[s])

    def prefill(self, handle: int, ids: list[int]) -> np.ndarray:
        return self.decoder.prefill(handle, ids)

    def decode(self, handles: list[int], tokens: list[int]) -> np.ndarray:
        return self.decoder.decode(handles, tokens)

    def release(self, handle: int, keep: bool = True) -> None:
        """Free row ``handle``; with ``keep`` (and prefix caching) it keeps its tokens for
        later prompts. A row whose request failed is never kept."""
        # A kept row holds at most capacity - 1 tokens (the last token generated is never
        # fed), so a decode step's dummy write at its length stays inside it.
        if not (self.prefix_cache and keep):
            self.decoder.release(handle)
        self._used[handle] = next(self._clock)
        if handle not in self._free:
            self._free.append(handle)
        self._count_kept()

    def reset(self) -> None:
        """Forget every row and every kept prefix (after a failure of the engine)."""
        for slot in range(self.decoder.shape.max_batch):
            self.decoder.release(slot)
            if slot not in self._free:
                self._free.append(slot)
        self._count_kept()


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` (int32 ids) share."""
    m = min(a.size, b.size)
    if not m or a[0] != b[0]:
        return 0
    diff = np.flatnonzero(a[:m] != b[:m])  # (k,) the mismatches
    return int(diff[0]) if diff.size else m


@dataclass(eq=False)
class _ConcatRow:
    past: list[Any] = field(default_factory=list)  # 2L tensors (1, kv, P, hd) while prefilling
    length: int = 0
    joined: bool = False


class ConcatEngine:
    """The concat graph: per-row caches while prefilling, then one left-padded batch."""

    def __init__(self, decoder: OnnxDecoder, max_rows: int) -> None:
        self.decoder = decoder
        self.max_rows = max_rows
        self._rows: set[_ConcatRow] = set()
        self._batch = KVBatch()
        self._order: list[_ConcatRow] = []  # the joined rows, in KVBatch's row order

    def reserve(self) -> _ConcatRow | None:
        if len(self._rows) >= self.max_rows:
            return None
        row = _ConcatRow()
        self._rows.add(row)
        return row

    def admit(self, prompt_ids: list[int]) -> tuple[_ConcatRow, int] | None:
        """A fresh row: the concat graph keeps no prefixes (its batch is re-padded as
        rows come and go)."""
        row = self.reserve()
        return None if row is None else (row, 0)

    def free_rows(self) -> int:
        return self.max_rows - len(self._rows)

    def copy_row(self, src: _ConcatRow, dst: _ConcatRow) -> None:
        """``dst`` starts from ``src``'s prefilled cache (its arrays are never changed in
        place: each step makes new ones, so sharing them is safe)."""
        if src.joined:
            raise ValueError("a row is forked after its prefill, before it joins the batch")
        dst.past, dst.length = list(src.past), src.length

    def prefill(self, handle: _ConcatRow, ids: list[int]) -> np.ndarray:
        start, n = handle.length, len(ids)
        past = handle.past or self.decoder.empty_past(1)
        input_ids = np.asarray(ids, np.int64)[None]  # (1, n)
        mask = np.ones((1, start + n), np.int64)  # (1, P + n)
        positions = np.arange(start, start + n, dtype=np.int64)[None]  # (1, n)
        logits, presents = self.decoder.forward(input_ids, mask, positions, past)
        handle.past, handle.length = presents, start + n
        return logits[0]

    def decode(self, handles: list[_ConcatRow], tokens: list[int]) -> np.ndarray:
        for row in handles:
            if not row.joined:
                self._batch.join(row.past, row.length)
                self._order.append(row)
                row.joined, row.past = True, []
        index = {id(row): i for i, row in enumerate(self._order)}
        if len(index) != len(handles):
            raise ValueError("decode must step every running row together")
        ids = np.zeros((len(self._order), 1), np.int64)  # (B, 1) in batch order
        for row, token in zip(handles, tokens):
            ids[index[id(row)], 0] = token
        mask, positions = self._batch.step_inputs()  # (B, P+1), (B, 1)
        logits, presents = self.decoder.forward(ids, mask, positions, self._batch.past)
        self._batch.advance(presents, mask)
        return logits[[index[id(row)] for row in handles]]  # (n, vocab) in the asked order

    def release(self, handle: _ConcatRow, keep: bool = True) -> None:
        self._rows.discard(handle)
        if handle.joined and handle in self._order:
            i = self._order.index(handle)
            self._batch.remove([i])
            del self._order[i]

    def reset(self) -> None:
        self._rows.clear()
        self._order.clear()
        self._batch = KVBatch()


def tensorrt_provider_options(
    report: ExportReport, max_rows: int, max_context: int, cache_dir: str
) -> dict[str, str]:
    """onnxruntime's TensorRT execution provider options for this graph: explicit shape
    ranges for every input (without them it rebuilds its engine whenever a shape leaves
    the range it saw first, mid-request) and an engine cache, so a second instance loads
    the engine instead of building it again (minutes on a large model); a restart does too
    when ``cache_dir`` (the entry config's ``tensorrt_cache_dir``) is a persistent volume.
    For the concat graph only: the fused graph's attention is no TensorRT op (the build
    refuses the accelerator for it).

    Shapes: ``input_ids``/``position_ids`` (B, S), ``attention_mask`` (B, T), the past
    (B, kv, P, hd): P from 0 to the context for the concat graph, the fixed row capacity
    for the fused graph's KV rows.
    """
    d = report.dims
    ranges: dict[str, tuple[str, str, str]] = {}  # name: (min, opt, max) as AxBxC
    for entry in report.inputs:
        name = entry.name
        if name.startswith("past_key_values."):
            p = (max_context, max_context, max_context) if report.fused else (0, 255, max_context)
            dims = [(1, p[0]), (max(max_rows // 2, 1), p[1]), (max_rows, p[2])]
            ranges[name] = tuple(  # type: ignore[assignment]
                f"{b}x{d.num_kv_heads}x{length}x{d.head_dim}" for b, length in dims
            )
        elif name == "attention_mask":
            ranges[name] = ("1x1", f"{max(max_rows // 2, 1)}x256", f"{max_rows}x{max_context}")
        else:  # input_ids, position_ids
            ranges[name] = ("1x1", f"{max(max_rows // 2, 1)}x1", f"{max_rows}x{max_context}")
    options = {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache_dir,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache_dir,
        "trt_fp16_enable": "True" if report.dtype == "float16" else "False",
    }
    for i, key in enumerate(("min", "opt", "max")):
        options[f"trt_profile_{key}_shapes"] = ",".join(f"{n}:{r[i]}" for n, r in ranges.items())
    return options


def open_engine(
    decoder_path: str,
    report: ExportReport,
    max_rows: int,
    max_context: int,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    device_id: int = 0,
    provider_options: dict[str, dict[str, str]] | None = None,
    prefix_cache: bool = True,
) -> Engine:
    """The engine for the graph in ``decoder_path``, per its export report (export.json).

    ``max_context`` is a row's capacity in tokens (prompt plus generated);
    ``prefix_cache``: finished rows keep their prefixes for later prompts (fused graph).

    Raises:
        ValueError: a KV cache type this runtime cannot hold (bfloat16).
        GpuUnavailable: a GPU provider was asked for and the session would run on the CPU.
    """
    if report.fused:
        d = report.dims
        if report.dtype not in _FUSED_KV_DTYPES:
            raise ValueError(
                f"the fused graph's KV cache is {report.dtype}; this runtime holds "
                f"{' or '.join(_FUSED_KV_DTYPES)} only: export with --dtype float32 or float16"
            )
        shape = CacheShape(
            num_layers=d.num_layers,
            num_kv_heads=d.num_kv_heads,
            head_dim=d.head_dim,
            max_batch=max_rows,
            capacity=max_context,
            dtype=_FUSED_KV_DTYPES[report.dtype],
        )
        return FusedEngine(
            FusedDecoder(
                decoder_path, shape, providers, intra_op_threads, device_id, provider_options
            ),
            prefix_cache=prefix_cache,
        )
    decoder = OnnxDecoder(decoder_path, providers, intra_op_threads, device_id, provider_options)
    return ConcatEngine(decoder, max_rows)
