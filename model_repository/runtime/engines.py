"""The two engines the scheduler drives, one per graph kind, behind one small interface.

    reserve() -> handle | None     a row for a new request (None: every row is taken)
    prefill(handle, ids) -> logits append prompt tokens to the row (a chunk at a time);
                                   the last one's logits (vocab,)
    decode(handles, tokens)        one token for each row; logits (n, vocab) in that order
    release(handle)                the request left; its row is free
    reset()                        forget every row (after a failure of the engine itself)

``FusedEngine`` runs the fused-attention graph over preallocated KV rows
(``FusedDecoder``): joining and leaving copy nothing. ``ConcatEngine`` runs the concat
graph (``OnnxDecoder``): a row's cache grows by concatenation while it is prefilled,
then joins the left-padded running batch (``KVBatch``), which copies the batch's cache
when a row joins or leaves. ``open_engine`` picks one from the export report.

Imports only numpy and onnxruntime: this module runs inside the Triton container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .decoder import OnnxDecoder
from .fused_decoder import CacheShape, FusedDecoder
from .kvbatch import KVBatch
from .layout import ExportReport

_FUSED_KV_DTYPES: dict[str, Any] = {"float32": np.float32, "float16": np.float16}


class Engine(Protocol):
    """What the scheduler needs from an engine (see the module docstring)."""

    def reserve(self) -> Any | None: ...

    def prefill(self, handle: Any, ids: list[int]) -> np.ndarray: ...

    def decode(self, handles: list[Any], tokens: list[int]) -> np.ndarray: ...

    def release(self, handle: Any) -> None: ...

    def reset(self) -> None: ...


class FusedEngine:
    """Rows are slots of the preallocated cache; the lowest free slot is taken first, so
    decode steps run over few rows when few requests run."""

    def __init__(self, decoder: FusedDecoder) -> None:
        self.decoder = decoder
        self._free = list(range(decoder.shape.max_batch))

    def reserve(self) -> int | None:
        if not self._free:
            return None
        self._free.sort()
        return self._free.pop(0)

    def prefill(self, handle: int, ids: list[int]) -> np.ndarray:
        return self.decoder.prefill(handle, ids)

    def decode(self, handles: list[int], tokens: list[int]) -> np.ndarray:
        return self.decoder.decode(handles, tokens)

    def release(self, handle: int) -> None:
        self.decoder.release(handle)
        if handle not in self._free:
            self._free.append(handle)

    def reset(self) -> None:
        for slot in range(self.decoder.shape.max_batch):
            self.release(slot)


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

    def release(self, handle: _ConcatRow) -> None:
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
) -> Engine:
    """The engine for the graph in ``decoder_path``, per its export report (export.json).

    ``max_context`` is a row's capacity in tokens (prompt plus generated).

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
            )
        )
    decoder = OnnxDecoder(decoder_path, providers, intra_op_threads, device_id, provider_options)
    return ConcatEngine(decoder, max_rows)
