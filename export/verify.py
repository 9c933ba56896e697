"""Verify an exported decoder against the PyTorch model it came from.

A fixed tolerance cannot serve both a 2M-parameter random model and a trained 30-layer
one: float32 onnxruntime and float32 PyTorch differ on a real model by ~1e-3 in the
logits from summation order alone, and by ~1e-7 on a tiny one. So each check measures
the model's own noise. The same inputs run through

* PyTorch in the export dtype (the reference a user trusts),
* PyTorch in float64 with the same weights (the "exact" answer), and
* onnxruntime on the exported graph,

and onnxruntime's distance to float64 must stay within ``factor`` times PyTorch's own
distance to float64, plus a tiny absolute ``floor``, for ``logits`` and every
``present.*`` output. Then every real position's top-1 token must agree with float64
(near ties inside the noise excused), and a greedy decode through onnxruntime with the
KV cache must equal ``transformers`` ``generate`` token for token. A miss fails; it
never warns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from tritonkit.errors import ExportError

from .architectures import ModelDims
from .quality import QualityResult, evaluate
from .wrapper import DecoderWithPast, input_names, output_names


@dataclass(frozen=True)
class Tolerance:
    """Pass when ``onnx_err <= factor * torch_err + floor`` (errors against float64).

    ``floor = floor_ulps * eps(dtype) * max|float64 output|``: a few units of rounding at
    the output's own scale, for outputs PyTorch happens to compute (almost) exactly.
    """

    factor: float  # how much noisier than PyTorch's own kernels onnxruntime may be
    floor_ulps: float


# factor 16: on SmolLM2-135M (float32) a correct graph's worst ratio over every output of
# every check was 5.9 (one weight element moved by 1e-2, a fault inside the noise: 8.9);
# a weight matrix moved by 1e-2, a wrong rotary base or two swapped KV heads gave ratios
# of 1900 and more (tests/test_verify_faults.py).
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(factor=16.0, floor_ulps=8.0),
    "float16": Tolerance(factor=16.0, floor_ulps=2.0),
    "bfloat16": Tolerance(factor=16.0, floor_ulps=2.0),
}
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


@dataclass(frozen=True)
class CheckPoint:
    """One comparison: batch size, past length, new tokens, and left padding."""

    name: str
    batch: int
    past: int
    seq: int
    left_padded: bool = False


CHECK_POINTS = (
    CheckPoint("prefill b1 s1", 1, 0, 1),
    CheckPoint("prefill b1 s7", 1, 0, 7),
    CheckPoint("decode b1 past7 s1", 1, 7, 1),
    CheckPoint("extend b1 past7 s5", 1, 7, 5),
    CheckPoint("prefill b3 s6", 3, 0, 6),
    CheckPoint("decode b3 past6 s1", 3, 6, 1),
    CheckPoint("left-padded prefill b3 s8", 3, 0, 8, left_padded=True),
    CheckPoint("left-padded decode b3 past8 s1", 3, 8, 1, left_padded=True),
)


@dataclass
class OutputError:
    """One output of one check: both errors against float64 and the limit they imply."""

    onnx_err: float  # max |onnxruntime - float64| over real positions
    torch_err: float  # max |PyTorch (export dtype) - float64|: the model's own noise
    limit: float  # factor * torch_err + floor (see Tolerance)
    finite: bool

    @property
    def passed(self) -> bool:
        return self.finite and self.onnx_err <= self.limit


@dataclass
class CheckResult:
    """The outcome of one check point."""

    name: str
    batch: int
    past: int
    seq: int
    left_padded: bool
    passed: bool
    finite: bool
    worst_output: str  # the output closest to (or furthest past) its limit
    onnx_err: float  # of the worst output
    limit: float  # of the worst output
    top1_agree: int  # real positions whose onnxruntime top-1 equals float64's
    top1_near_ties: int  # positions that differ inside the noise (excused)
    top1_positions: int
    outputs: dict[str, OutputError] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GreedyResult:
    """Greedy decode through onnxruntime vs ``transformers`` ``generate``."""

    prompt_tokens: int
    new_tokens: int
    match: bool
    first_mismatch: int | None  # index among the new tokens, None when they match
    onnx_tokens: list[int]
    torch_tokens: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _np_dtype(dtype: str) -> Any:
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _to_numpy(t: torch.Tensor, dtype: str) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.detach().float().cpu().numpy().astype(_np_dtype(dtype))
    return t.detach().cpu().numpy()


def _mask_and_positions(batch: int, total: int, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, total) mask, left-padded by 0, 2, 5, ... tokens when asked, and its positions."""
    mask = torch.ones(batch, total, dtype=torch.int64)
    if padded:
        for row in range(batch):
            pad = min(total - 1, [0, 2, 5][row % 3])
            mask[row, :pad] = 0
    # Positions count real tokens only, so a left-padded row starts at 0 (as HF does).
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, total)
    return mask, positions


def _real(name: str, x: np.ndarray, keep_new: np.ndarray, keep_all: np.ndarray) -> np.ndarray:
    """The real (unpadded) positions of one output, as float64."""
    x = x.astype(np.float64)
    if name == "logits":
        return x[keep_new]  # (B, S, vocab) -> (N, vocab)
    return x.transpose(0, 2, 1, 3)[keep_all]  # (B, kv, T, hd) -> (B, T, kv, hd) -> (N, kv, hd)


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) if a.size else 0.0


def top1_agreement(got: np.ndarray, ref: np.ndarray, tie: float) -> tuple[int, int]:
    """``(agree, near_ties)`` over the rows of ``got`` and ``ref`` (both (N, vocab)).

    A row agrees when both pick the same token; it is a near tie when they differ but the
    reference scores the two picks within ``tie`` of each other.
    """
    got_top = got.argmax(-1)  # (N,)
    ref_top = ref.argmax(-1)  # (N,)
    rows = np.arange(len(ref))
    gap = ref[rows, ref_top] - ref[rows, got_top]  # (N,) >= 0
    agree = got_top == ref_top
    return int(agree.sum()), int((~agree & (gap <= tie)).sum())


def measure(got: np.ndarray, ref: np.ndarray, exact: np.ndarray, dtype: str) -> OutputError:
    """One output's errors: onnxruntime's (``got``) and PyTorch's (``ref``) against float64
    (``exact``), and the limit they imply for ``dtype`` (see ``Tolerance``)."""
    tol = TOLERANCES[dtype]
    torch_err = _max_err(ref, exact)
    floor = tol.floor_ulps * EPS[dtype] * (float(np.abs(exact).max()) if exact.size else 0.0)
    finite = bool(np.isfinite(got).all())
    return OutputError(_max_err(got, exact), torch_err, tol.factor * torch_err + floor, finite)


def check_result(
    name: str,
    shape: tuple[int, int, int, bool],  # (batch, past, seq, left_padded)
    outputs: dict[str, OutputError],
    top1: tuple[int, int, int],  # (agree, near ties, positions)
) -> CheckResult:
    """A check's verdict: every output within its limit and finite, every top-1 agreeing."""
    worst = max(outputs, key=lambda k: outputs[k].onnx_err / outputs[k].limit)
    finite = all(o.finite for o in outputs.values())
    agree, ties, positions = top1
    return CheckResult(
        name=name,
        batch=shape[0],
        past=shape[1],
        seq=shape[2],
        left_padded=shape[3],
        passed=finite and agree + ties == positions and all(o.passed for o in outputs.values()),
        finite=finite,
        worst_output=worst,
        onnx_err=outputs[worst].onnx_err,
        limit=outputs[worst].limit,
        top1_agree=agree,
        top1_near_ties=ties,
        top1_positions=positions,
        outputs=outputs,
    )


def greedy_against_transformers(
    model: Any, prompt_ids: list[int], tokens: list[int], device: str = "cpu"
) -> GreedyResult:
    """Compare ``tokens`` (a greedy decode of ``prompt_ids`` by the graph: the plain argmax
    at every step) with the PyTorch model's own plain argmax decode of as many tokens,
    through its KV cache. Like with like: ``generate`` would apply the model's generation
    config (``min_new_tokens`` suppresses its EOS, whatever ``eos_token_id`` says), and a
    model whose greedy path reaches EOS early would then fail a correct graph."""
    n, new_tokens = len(prompt_ids), len(tokens)
    ref_tokens: list[int] = []
    step = torch.tensor([prompt_ids], device=device)  # (1, P), then (1, 1)
    # transformers 5.x renames forward's past_key_values to cache (the old name warns)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past = None
    with torch.no_grad():
        while len(ref_tokens) < new_tokens:
            out = model(step, use_cache=True, **{key: past})
            past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            ref_tokens.append(int(out.logits[0, -1].argmax()))
            step = torch.tensor([[ref_tokens[-1]]], device=device)
    mismatch = next(
        (i for i, (a, r) in enumerate(zip(tokens, ref_tokens)) if a != r),
        None if len(tokens) == len(ref_tokens) else min(len(tokens), len(ref_tokens)),
    )
    return GreedyResult(n, new_tokens, mismatch is None, mismatch, tokens, ref_tokens)


class Verifier:
    """Runs the checks for one exported graph against one PyTorch model."""

    def __init__(
        self, model: Any, onnx_path: str, dims: ModelDims, dtype: str, device: str = "cpu"
    ) -> None:
        import onnxruntime as ort

        self.model = model
        self.wrapper = DecoderWithPast(model).eval()
        self.dims = dims
        self.dtype = dtype
        self.device = device
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(onnx_path, opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            hint = (
                "; onnxruntime's CPU kernels lack bfloat16: verify on a GPU "
                "(--device cuda with onnxruntime-gpu) or export float16"
                if dtype == "bfloat16"
                else ""
            )
            raise ExportError(f"onnxruntime cannot load the exported graph: {first}{hint}") from exc
        self.inputs = input_names(dims.num_layers)
        self.outputs = output_names(dims.num_layers)

    def _empty_past(self, batch: int) -> list[torch.Tensor]:
        d = self.dims
        shape = (batch, d.num_kv_heads, 0, d.head_dim)  # (B, kv_heads, 0, head_dim)
        dtype = next(self.model.parameters()).dtype
        return [torch.zeros(shape, dtype=dtype, device=self.device) for _ in self.outputs[1:]]

    def _torch(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(self.wrapper(*(t.to(self.device) for t in tensors)))

    def _onnx(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        feed = {name: _to_numpy(t, self.dtype) for name, t in zip(self.inputs, tensors)}
        return [np.asarray(x) for x in self.session.run(self.outputs, feed)]

    def _inputs(self, point: CheckPoint, seed: int) -> list[torch.Tensor]:
        """The check's inputs, with a real past made by PyTorch from the first tokens."""
        g = torch.Generator().manual_seed(seed)
        b, p, s = point.batch, point.past, point.seq
        ids = torch.randint(0, self.dims.vocab_size, (b, p + s), generator=g)  # (B, P+S)
        mask, positions = _mask_and_positions(b, p + s, point.left_padded)
        past = self._empty_past(b)
        if p:
            past = self._torch(ids[:, :p], mask[:, :p], positions[:, :p], *past)[1:]
        return [ids[:, p:], mask, positions[:, p:], *past]

    def check_all(
        self,
        points: tuple[CheckPoint, ...] = CHECK_POINTS,
        progress: Callable[[str], None] | None = None,
    ) -> list[CheckResult]:
        """Compare onnxruntime with PyTorch at every point.

        PyTorch runs twice per point: in the export dtype, then (after converting the
        model's weights in place, losslessly, to float64 and back) in float64. Peak
        memory is the model in float64 for the second pass.
        """
        inputs = [self._inputs(point, seed) for seed, point in enumerate(points)]
        actual, expected = [], []
        for point, feed in zip(points, inputs):
            if progress:
                progress(point.name)
            actual.append(self._onnx(feed))
            expected.append([t.detach().cpu().to(torch.float64) for t in self._torch(*feed)])
        exact = self._float64_outputs(inputs)
        return [
            self._compare(point, feed, got, ref, ex)
            for point, feed, got, ref, ex in zip(points, inputs, actual, expected, exact)
        ]

    def _float64_outputs(self, inputs: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        dtype = next(self.model.parameters()).dtype
        self.model.to(torch.float64)
        try:
            out = []
            for feed in inputs:
                ids, mask, pos, *past = feed
                past64 = [t.to(torch.float64) for t in past]
                out.append([t.detach().cpu() for t in self._torch(ids, mask, pos, *past64)])
            return out
        finally:
            self.model.to(dtype)  # float64 holds every float32/16 value exactly

    def _compare(
        self,
        point: CheckPoint,
        feed: list[torch.Tensor],
        actual: list[np.ndarray],
        expected: list[torch.Tensor],
        exact: list[torch.Tensor],
    ) -> CheckResult:
        p = point.past
        mask = feed[1]
        keep_new = mask[:, p:].bool().numpy()  # (B, S): compare real tokens only
        keep_all = mask.bool().numpy()  # (B, P+S)
        outputs: dict[str, OutputError] = {}
        agree = ties = positions = 0
        for name, got, ref_t, ex_t in zip(self.outputs, actual, expected, exact):
            got = _real(name, got, keep_new, keep_all)
            ref = _real(name, ref_t.numpy(), keep_new, keep_all)
            ex = _real(name, ex_t.numpy(), keep_new, keep_all)
            outputs[name] = measure(got, ref, ex, self.dtype)
            if name == "logits" and outputs[name].finite:
                agree, ties = top1_agreement(got, ex, tie=2 * outputs[name].limit)
                positions = len(ex)
        shape = (point.batch, p, point.seq, point.left_padded)
        return check_result(point.name, shape, outputs, (agree, ties, positions))

    def greedy(self, prompt_ids: list[int], new_tokens: int = 32) -> GreedyResult:
        """Greedy-decode ``new_tokens`` through onnxruntime and through ``generate``."""
        ids = torch.tensor([prompt_ids])  # (1, P)
        n = ids.shape[1]
        # onnxruntime: prefill, then one token a step with the KV cache.
        tokens: list[int] = []
        step_ids = ids
        past = self._empty_past(1)
        for _ in range(new_tokens):
            total = n + len(tokens)
            mask = torch.ones(1, total, dtype=torch.int64)
            pos = torch.arange(total - step_ids.shape[1], total).unsqueeze(0)
            out = self._onnx([step_ids, mask, pos, *past])
            tokens.append(int(out[0][0, -1].astype(np.float32).argmax()))
            past = [torch.from_numpy(x.astype(np.float32)).to(past[0].dtype) for x in out[1:]]
            step_ids = torch.tensor([[tokens[-1]]])

        return greedy_against_transformers(self.model, prompt_ids, tokens, self.device)

    def teacher_forced(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Each sequence read in one run from an empty cache: its logits (N, vocab)."""
        out = []
        for seq in sequences:
            ids = torch.tensor([seq])  # (1, N)
            mask = torch.ones_like(ids)
            positions = torch.arange(len(seq)).unsqueeze(0)  # (1, N)
            logits = self._onnx([ids, mask, positions, *self._empty_past(1)])[0]  # (1, N, vocab)
            out.append(logits[0].astype(np.float32))
        return out


@dataclass
class Verification:
    """Everything one verification measured (see ``run``)."""

    checks: list[CheckResult]  # empty when the strict checks do not apply (int4)
    greedy: GreedyResult
    quality: QualityResult

    @property
    def passed(self) -> bool:
        """Strict checks (where they apply), greedy equal to ``generate`` where the
        weights are the model's own, and the quality gate of the precision."""
        strict = all(c.passed for c in self.checks) and (
            self.greedy.match or self.quality.precision == "int4"
        )
        return strict and self.quality.passed


def verify(
    model: Any,
    onnx_path: str,
    dims: ModelDims,
    dtype: str,
    prompt_ids: list[int],
    device: str = "cpu",
    new_tokens: int = 32,
    progress: Callable[[str], None] | None = None,
    tokenizer: Any = None,
) -> Verification:
    """Run every check point, the greedy decode and the quality read; never raises on a
    miss, it reports it.

    Raises:
        ExportError: onnxruntime cannot load the graph.
    """
    verifier = Verifier(model, onnx_path, dims, dtype, device)
    return run(verifier, prompt_ids, new_tokens, progress, tokenizer, dtype)


def run(
    verifier: Any,
    prompt_ids: list[int],
    new_tokens: int,
    progress: Callable[[str], None] | None = None,
    tokenizer: Any = None,
    precision: str = "float32",
) -> Verification:
    """``verifier``'s checks (skipped for int4: its weights are not the model's), its
    greedy decode, then the teacher-forced quality read (any verifier with ``check_all``,
    ``greedy`` and ``teacher_forced``)."""
    results: list[CheckResult] = (
        [] if precision == "int4" else verifier.check_all(progress=progress)
    )
    if progress:
        progress(f"greedy decode of {new_tokens} tokens")
    greedy = verifier.greedy(prompt_ids, new_tokens)
    if progress:
        progress("teacher-forced quality read")
    quality = evaluate(
        verifier.model,
        tokenizer,
        verifier.dims.vocab_size,
        verifier.teacher_forced,
        precision,
        verifier.device,
    )
    return Verification(results, greedy, quality)


def failure_summary(report: dict[str, Any], report_file: str) -> str:
    """One line naming what failed in a report, and where the full report is."""
    failed = [c for c in report["checks"] if not c["passed"]]
    parts = []
    quality = report.get("quality") or {}
    if not quality.get("passed", True):
        parts.append(QualityResult.from_dict(quality).problem() or "quality below its bar")
    for c in failed[:3]:
        if not c["finite"]:
            why = f"{c['worst_output']}: NaN/Inf"
        elif c["top1_agree"] + c["top1_near_ties"] < c["top1_positions"]:
            wrong = c["top1_positions"] - c["top1_agree"] - c["top1_near_ties"]
            why = f"top-1 token differs from float64 at {wrong}/{c['top1_positions']} positions"
        else:
            out = c["outputs"][c["worst_output"]]
            why = (
                f"{c['worst_output']}: error {out['onnx_err']:.3g} vs float64 > limit "
                f"{out['limit']:.3g} (PyTorch's own error {out['torch_err']:.3g})"
            )
        parts.append(f"{c['name']} ({why})")
    if not report["greedy_match"] and report.get("quantize") != "int4":
        g = report["greedy"]
        parts.append(f"greedy decode differs from transformers at new token {g['first_mismatch']}")
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return "verification failed: " + "; ".join(parts) + more + f" (see {report_file})"
