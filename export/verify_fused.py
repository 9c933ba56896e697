"""Verify a fused-attention graph the way it serves: through ``FusedDecoder``'s KV rows.

The same measure as ``verify.py`` (onnxruntime's error against a float64 PyTorch run
within ``factor`` times PyTorch's own error, plus a few units of rounding; top-1 equal to
float64's; greedy equal to ``generate``), on the checks the serving engine depends on:
a prefill, an extension of a prefilled row (a chunk after a chunk), a decode step, a
prompt prefilled in chunks, and decode steps over rows of different lengths with a free
row between them (in-flight batching). The past of every row is PyTorch's own, written
into the cache rows, so each check measures one run's error, not an accumulation.
PyTorch runs each row alone with no padding: nothing about the batch can leak into the
reference. The graph outputs the last position's logits only, so logits are compared
there and the new keys and values at every position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tritonkit.errors import ExportError
from tritonkit.model_repository.runtime.fused_decoder import CacheShape, FusedDecoder

from .architectures import ModelDims
from .quality import MAX_TOKENS
from .verify import (
    CheckResult,
    GreedyResult,
    OutputError,
    Verification,
    check_result,
    greedy_against_transformers,
    measure,
    run,
    top1_agreement,
)
from .wrapper import DecoderWithPast

Row = tuple[int, int, int]  # (slot, past tokens, new tokens)


@dataclass(frozen=True)
class FusedCheck:
    """Rows stepped together; ``chunks`` splits a single row's new tokens into prefills."""

    name: str
    rows: tuple[Row, ...]
    chunks: tuple[int, ...] = ()


FUSED_CHECKS = (
    FusedCheck("prefill s1", ((0, 0, 1),)),
    FusedCheck("prefill s7", ((0, 0, 7),)),
    FusedCheck("decode past7 s1", ((0, 7, 1),)),
    FusedCheck("extend past7 s5", ((0, 7, 5),)),
    FusedCheck("chunked prefill 4+4+3", ((1, 0, 11),), chunks=(4, 4, 3)),
    FusedCheck("in-flight rows 6/9/3, 1 free", ((0, 6, 1), (2, 9, 1), (3, 3, 1))),
    FusedCheck("in-flight rows 11/2/5/8", ((0, 11, 1), (1, 2, 1), (2, 5, 1), (3, 8, 1))),
)
MAX_ROWS, CAPACITY = 4, 32  # the verification cache holds every check (and the greedy run)


@dataclass
class _RowResult:
    logits: np.ndarray  # (vocab,) float64
    presents: list[np.ndarray]  # 2L arrays (kv, P+S, hd) float64


class FusedVerifier:
    """The checks of one fused graph against one PyTorch model."""

    def __init__(
        self,
        model: Any,
        onnx_path: str,
        dims: ModelDims,
        dtype: str,
        device: str = "cpu",
        capacity: int = max(CAPACITY, MAX_TOKENS),
    ) -> None:
        self.model = model
        self.wrapper = DecoderWithPast(model).eval()
        self.dims = dims
        self.dtype = dtype
        self.device = device
        if dtype not in ("float32", "float16"):  # choose_graph never writes another
            raise ExportError(
                f"the fused graph's KV rows are float32 or float16, not {dtype}: "
                "export with --dtype float16 or --graph concat"
            )
        kv_dtype = np.float16 if dtype == "float16" else np.float32
        shape = CacheShape(
            dims.num_layers, dims.num_kv_heads, dims.head_dim, MAX_ROWS, capacity, kv_dtype
        )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        try:
            self.decoder = FusedDecoder(onnx_path, shape, providers, intra_op_threads=0)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"onnxruntime cannot load the fused graph: {first}") from exc
        self.layers = 2 * dims.num_layers

    # ---- PyTorch, one row alone --------------------------------------------------------

    def _torch(self, ids: torch.Tensor, past: list[torch.Tensor]) -> tuple[Any, list[Any]]:
        """(last logits (vocab,), presents 2L (kv, P+S, hd)) for one unpadded row."""
        p, s = past[0].shape[2], ids.shape[1]
        mask = torch.ones(1, p + s, dtype=torch.int64)
        positions = torch.arange(p, p + s).unsqueeze(0)  # (1, S)
        with torch.no_grad():
            out = self.wrapper(*(t.to(self.device) for t in (ids, mask, positions, *past)))
        return out[0][0, -1], [x[0] for x in out[1:]]

    def _empty(self, dtype: torch.dtype) -> list[torch.Tensor]:
        shape = (1, self.dims.num_kv_heads, 0, self.dims.head_dim)
        return [torch.zeros(shape, dtype=dtype, device=self.device)] * self.layers

    # ---- the checks --------------------------------------------------------------------

    def check_all(self, progress: Callable[[str], None] | None = None) -> list[CheckResult]:
        """Every check: onnxruntime, PyTorch in the export dtype, then PyTorch in float64."""
        dtype = next(self.model.parameters()).dtype
        plans = []  # per check: per row (ids (1, P+S), torch past 2L (1, kv, P, hd))
        for seed, check in enumerate(FUSED_CHECKS):
            g = torch.Generator().manual_seed(seed)
            rows = []
            for _slot, p, s in check.rows:
                ids = torch.randint(0, self.dims.vocab_size, (1, p + s), generator=g)
                past = self._empty(dtype)
                if p:
                    past = [x[None] for x in self._torch(ids[:, :p], past)[1]]
                rows.append((ids, past))
            plans.append(rows)
        actual, expected = [], []
        for check, rows in zip(FUSED_CHECKS, plans):
            if progress:
                progress(check.name)
            actual.append(self._onnx(check, rows))
            expected.append(
                [self._reference(ids, past, check, i) for i, (ids, past) in enumerate(rows)]
            )
        self.model.to(torch.float64)
        try:
            exact = [
                [
                    self._reference(ids, [t.double() for t in past], check, i)
                    for i, (ids, past) in enumerate(rows)
                ]
                for check, rows in zip(FUSED_CHECKS, plans)
            ]
        finally:
            self.model.to(dtype)  # lossless: float64 holds every float32/16 value
        return [
            self._compare(check, got, ref, ex)
            for check, got, ref, ex in zip(FUSED_CHECKS, actual, expected, exact)
        ]

    def _reference(
        self, ids: torch.Tensor, past: list[torch.Tensor], check: FusedCheck, i: int
    ) -> _RowResult:
        p = check.rows[i][1]
        logits, presents = self._torch(ids[:, p:], past)
        return _RowResult(_f64(logits), [_f64(x) for x in presents])

    def _onnx(
        self, check: FusedCheck, rows: list[tuple[torch.Tensor, list[torch.Tensor]]]
    ) -> list[_RowResult]:
        decoder = self.decoder
        for slot in range(MAX_ROWS):
            decoder.release(slot)
        decoder.load_rows(
            {
                slot: [_host(t[0], self.dtype) for t in past]
                for (slot, p, _s), (_ids, past) in zip(check.rows, rows)
                if p
            }
        )
        results: list[np.ndarray] = []
        if check.chunks:  # one row, its new tokens in several prefills
            (slot, p, _s), (ids, _past) = check.rows[0], rows[0]
            start = p
            for size in check.chunks:
                logits = decoder.prefill(slot, ids[0, start : start + size].tolist())
                start += size
            results = [logits]
        elif len(check.rows) == 1 and (check.rows[0][2] > 1 or check.rows[0][1] == 0):
            (slot, p, _s), (ids, _past) = check.rows[0], rows[0]
            results = [decoder.prefill(slot, ids[0, p:].tolist())]
        else:  # one new token per row, stepped together
            slots = [slot for slot, _p, _s in check.rows]
            tokens = [int(ids[0, -1]) for ids, _past in rows]
            results = list(decoder.decode(slots, tokens))
        return [
            _RowResult(logits.astype(np.float64), [x.astype(np.float64) for x in decoder.row(slot)])
            for (slot, _p, _s), logits in zip(check.rows, results)
        ]

    def _compare(
        self,
        check: FusedCheck,
        actual: list[_RowResult],
        expected: list[_RowResult],
        exact: list[_RowResult],
    ) -> CheckResult:
        outputs: dict[str, OutputError] = {}
        names = ["logits"] + [
            f"present.{i}.{kind}" for i in range(self.dims.num_layers) for kind in ("key", "value")
        ]
        agree = ties = 0
        for k, name in enumerate(names):
            if k == 0:  # each row's last position: (N, vocab)
                got, ref, ex = (
                    np.stack([r.logits for r in rows]) for rows in (actual, expected, exact)
                )
            else:  # every row's positions one after another: (sum of P+S, kv, hd)
                got, ref, ex = (
                    np.concatenate([r.presents[k - 1].transpose(1, 0, 2) for r in rows])
                    for rows in (actual, expected, exact)
                )
            outputs[name] = measure(got, ref, ex, self.dtype)
            if k == 0 and outputs[name].finite:
                agree, ties = top1_agreement(got, ex, tie=2 * outputs[name].limit)
        shape = (
            len(check.rows),
            max(p for _slot, p, _s in check.rows),
            max(s for _slot, _p, s in check.rows),
            False,
        )
        return check_result(check.name, shape, outputs, (agree, ties, len(actual)))

    def greedy(self, prompt_ids: list[int], new_tokens: int = 32) -> GreedyResult:
        """Greedy through the cache rows (prefill, then one token a step) vs ``generate``."""
        decoder = self.decoder
        decoder.release(0)
        tokens = [int(decoder.prefill(0, prompt_ids).argmax())]
        while len(tokens) < new_tokens:
            tokens.append(int(decoder.decode([0], [tokens[-1]])[0].argmax()))
        return greedy_against_transformers(self.model, prompt_ids, tokens, self.device)

    def teacher_forced(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Each sequence read one token a step through its own cache row, up to
        ``MAX_ROWS`` rows stepped together: its logits (N, vocab)."""
        decoder = self.decoder
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), MAX_ROWS):
            group = sequences[start : start + MAX_ROWS]
            rows: list[list[np.ndarray]] = []
            for slot, seq in enumerate(group):
                decoder.release(slot)
                rows.append([np.array(decoder.prefill(slot, seq[:1]), dtype=np.float32)])
            for t in range(1, max(len(seq) for seq in group)):
                slots = [slot for slot, seq in enumerate(group) if t < len(seq)]
                logits = decoder.decode(slots, [group[slot][t] for slot in slots])
                for slot, row in zip(slots, logits):
                    rows[slot].append(np.array(row, dtype=np.float32))
            out += [np.stack(r) for r in rows]
        return out


def verify_fused(
    model: Any,
    onnx_path: str,
    dims: ModelDims,
    dtype: str,
    prompt_ids: list[int],
    device: str = "cpu",
    new_tokens: int = 32,
    progress: Callable[[str], None] | None = None,
    tokenizer: Any = None,
    precision: str | None = None,
) -> Verification:
    """Run every fused check, the greedy decode and the quality read; never raises on a
    miss, it reports it. ``precision`` is ``int4`` for a graph with 4-bit weights (its
    activations and cache are ``dtype``).

    Raises:
        ExportError: onnxruntime cannot load the graph.
    """
    capacity = max(CAPACITY, MAX_TOKENS, len(prompt_ids) + new_tokens)
    verifier = FusedVerifier(model, onnx_path, dims, dtype, device, capacity)
    return run(verifier, prompt_ids, new_tokens, progress, tokenizer, precision or dtype)


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _host(t: torch.Tensor, dtype: str) -> np.ndarray:
    """A torch tensor as the cache's numpy dtype."""
    return t.detach().cpu().float().numpy().astype(np.float16 if dtype == "float16" else np.float32)
