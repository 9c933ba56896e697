"""Verify an exported decoder against the PyTorch model it came from.

Every check runs the same inputs through onnxruntime and PyTorch and compares
``logits`` and every ``present.*`` output against a tolerance for the dtype, and
scans them for NaN/Inf. Then a greedy decode through onnxruntime with the KV cache
must equal ``transformers`` ``generate`` token for token. A miss fails; it never warns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from tritonkit.errors import ExportError

from .architectures import ModelDims
from .wrapper import DecoderWithPast, input_names, output_names

# (atol, rtol) per dtype: pass when |ort - torch| <= atol + rtol * |torch| everywhere.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-3),
    "float16": (2e-2, 2e-2),
    "bfloat16": (1e-1, 5e-2),
}


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
class CheckResult:
    """The outcome of one check point; ``outputs`` maps each output to its max abs diff."""

    name: str
    batch: int
    past: int
    seq: int
    left_padded: bool
    atol: float
    rtol: float
    max_abs_diff: float
    worst_output: str
    finite: bool
    passed: bool
    outputs: dict[str, float] = field(default_factory=dict)

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
        self.atol, self.rtol = TOLERANCES[dtype]

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

    def check(self, point: CheckPoint, seed: int = 0) -> CheckResult:
        """Compare onnxruntime with PyTorch at ``point``."""
        g = torch.Generator().manual_seed(seed)
        b, p, s = point.batch, point.past, point.seq
        ids = torch.randint(0, self.dims.vocab_size, (b, p + s), generator=g)  # (B, P+S)
        mask, positions = _mask_and_positions(b, p + s, point.left_padded)
        past = self._empty_past(b)
        if p:  # a real past, made by PyTorch from the first p tokens
            past = self._torch(ids[:, :p], mask[:, :p], positions[:, :p], *past)[1:]
        inputs = [ids[:, p:], mask, positions[:, p:], *past]
        expected = self._torch(*inputs)
        actual = self._onnx(inputs)

        keep_new = mask[:, p:].bool().numpy()  # (B, S): compare real tokens only
        keep_all = mask.bool().numpy()  # (B, P+S)
        diffs: dict[str, float] = {}
        passed, finite = True, True
        for name, ref_t, got in zip(self.outputs, expected, actual):
            ref = ref_t.detach().float().cpu().numpy()
            got = got.astype(np.float32)
            if name == "logits":
                ref, got = ref[keep_new], got[keep_new]  # (N, vocab)
            else:  # (B, kv, T, hd) -> (B, T, kv, hd) -> (N, kv, hd)
                ref = ref.transpose(0, 2, 1, 3)[keep_all]
                got = got.transpose(0, 2, 1, 3)[keep_all]
            ok_finite = bool(np.isfinite(got).all())
            finite &= ok_finite
            err = np.abs(got - ref)
            diffs[name] = float(err.max()) if err.size else 0.0
            within = bool((err <= self.atol + self.rtol * np.abs(ref)).all())
            passed &= within and ok_finite
        worst = max(diffs, key=lambda k: diffs[k])
        return CheckResult(
            name=point.name,
            batch=b,
            past=p,
            seq=s,
            left_padded=point.left_padded,
            atol=self.atol,
            rtol=self.rtol,
            max_abs_diff=diffs[worst],
            worst_output=worst,
            finite=finite,
            passed=passed and finite,
            outputs=diffs,
        )

    def greedy(self, prompt_ids: list[int], new_tokens: int = 32) -> GreedyResult:
        """Greedy-decode ``new_tokens`` through onnxruntime and through ``generate``."""
        from transformers import GenerationConfig

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

        # transformers: no EOS, so both run the full length.
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=self.model.config.pad_token_id or 0,
        )
        with torch.no_grad():
            ref = self.model.generate(
                ids.to(self.device),
                attention_mask=torch.ones_like(ids).to(self.device),
                generation_config=config,
            )
        ref_tokens = [int(t) for t in ref[0, n:].tolist()]
        mismatch = next(
            (i for i, (a, r) in enumerate(zip(tokens, ref_tokens)) if a != r),
            None if len(tokens) == len(ref_tokens) else min(len(tokens), len(ref_tokens)),
        )
        return GreedyResult(n, new_tokens, mismatch is None, mismatch, tokens, ref_tokens)


def verify(
    model: Any,
    onnx_path: str,
    dims: ModelDims,
    dtype: str,
    prompt_ids: list[int],
    device: str = "cpu",
    new_tokens: int = 32,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[CheckResult], GreedyResult]:
    """Run every check point and the greedy decode; never raises on a miss, it reports it."""
    verifier = Verifier(model, onnx_path, dims, dtype, device)
    results = []
    for i, point in enumerate(CHECK_POINTS):
        if progress:
            progress(point.name)
        results.append(verifier.check(point, seed=i))
    if progress:
        progress(f"greedy decode of {new_tokens} tokens")
    return results, verifier.greedy(prompt_ids, new_tokens)
