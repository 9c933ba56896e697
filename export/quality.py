"""How much a reduced-precision graph changes the model's predictions, measured on text.

The strict checks (``verify.py``) hold a graph to the model's own rounding noise, which is
right for float32 and float16 kernels and meaningless for int4 weights: quantization moves
every logit by far more than rounding, by design. What a user cares about then is how
often the graph still predicts what the full-precision model predicts, and how far its
next-token distributions drift. So the same token sequences (natural text through the
model's tokenizer; seeded random ids when it has none) are read teacher-forced, every
position given the true previous tokens, by

* the PyTorch model in float32 (the reference), and
* the exported graph, the way it serves (cache rows for the fused graph),

and ``export.json`` records the top-1 agreement and the KL divergence of the graph's
distribution from the reference's (mean, 95th percentile and largest). A precision's gate
(``GATES``) fails the export below its bar. float32 graphs are recorded, not gated: the
strict checks hold them to far more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# Natural text of several kinds (prose, instructions, code, numbers, a second language);
# a chat exchange is added through the model's own template when it has one.
EVAL_TEXTS = (
    "Photosynthesis is the process by which green plants use sunlight, water and carbon "
    "dioxide to make glucose and oxygen. It takes place mainly in the leaves, inside the "
    "chloroplasts, where chlorophyll absorbs the light.",
    "To boil an egg, place it in a small pot and cover it with cold water. Bring the water "
    "to a boil, then lower the heat and let it simmer for nine minutes. Cool the egg in "
    "cold water before you peel it.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\n\nprint([fibonacci(i) for i in range(10)])\n",
    "The train leaves the station at 9:15 and arrives at 11:40, so the journey takes two "
    "hours and twenty-five minutes. A return ticket costs 48 euros, or 36 euros with a "
    "discount card.",
    "Lisboa é a capital de Portugal e a maior cidade do país. Fica na foz do rio Tejo e é "
    "conhecida pelos seus bairros antigos, pelos elétricos amarelos e pela música fado.",
)
CHAT = (
    {"role": "user", "content": "What is the capital of France, and what is it known for?"},
    {
        "role": "assistant",
        "content": "The capital of France is Paris. It is known for the Eiffel Tower, the "
        "Louvre museum and its cafés along the river Seine.",
    },
)
RANDOM_SEQUENCES, RANDOM_LENGTH = 4, 48  # for a model without a tokenizer
MAX_TOKENS = 96  # per sequence: the cache the verification allocates holds this
# A position where the graph picks another token than the reference, but the reference
# itself scores the two within 0.1 nats (10% probability), is a near tie, not a loss of
# quality: it counts as agreement in the gate (both figures are recorded). A trained
# model has few; a random one (flat logits) has many, where top-1 alone measures noise.
TIE_NATS = 0.1


@dataclass(frozen=True)
class QualityGate:
    """The bar one precision must clear: top-1 agreement and KL divergence (nats)."""

    min_top1: float
    max_kl_mean: float
    max_kl_max: float


# float16: on SmolLM2-135M a float16 graph measured top-1 0.997 (near ties), mean KL 1e-5
# and largest 8e-5; 0.98 / 0.005 / 0.1 leave three orders of magnitude for larger models'
# longer sums and still refuse a graph whose attention overflows or drifts.
# bfloat16 keeps 3 fewer mantissa bits (8x the error, ~64x the KL): 0.97 / 0.02 / 0.5.
# int4 (block 32, k-quant with the LM head and the most sensitive layers in 8 bits): on
# SmolLM2-135M, a model small enough that 4-bit weights cost it most, the eval text
# measured top-1 0.756 (0.777 with near ties), mean KL 0.24, largest 1.7; plain
# round-to-nearest int4 measured 0.637 (0.646), mean KL 0.52, largest 6.5, and answers
# visibly worse. The bar (0.70, 0.35, 4.0) admits the scheme we ship with room and
# refuses the cruder one on all three counts; a graph with a broken layer falls far
# below (tests/test_quantize.py). Larger models lose less to int4 and clear it easily.
GATES: dict[str, QualityGate] = {
    "float16": QualityGate(min_top1=0.98, max_kl_mean=0.005, max_kl_max=0.1),
    "bfloat16": QualityGate(min_top1=0.97, max_kl_mean=0.02, max_kl_max=0.5),
    "int4": QualityGate(min_top1=0.70, max_kl_mean=0.35, max_kl_max=4.0),
}


@dataclass
class QualityResult:
    """Teacher-forced agreement of the graph with the float32 model."""

    precision: str  # float32, float16, bfloat16 or int4
    sequences: int
    positions: int
    top1: float  # fraction of positions where both pick the same next token
    top1_with_ties: float  # ... or where the reference scores both picks within TIE_NATS
    kl_mean: float  # KL(reference || graph) per position, nats
    kl_p95: float
    kl_max: float
    finite: bool
    gate: QualityGate | None  # None: recorded only (float32)

    @property
    def passed(self) -> bool:
        if not self.finite:
            return False
        if self.gate is None:
            return True
        return (
            self.top1_with_ties >= self.gate.min_top1
            and self.kl_mean <= self.gate.max_kl_mean
            and self.kl_max <= self.gate.max_kl_max
        )

    def problem(self) -> str | None:
        """What misses the gate, in one phrase; None when it passes."""
        if not self.finite:
            return "the graph's logits hold NaN or inf on real text"
        if self.passed or self.gate is None:
            return None
        g, misses = self.gate, []
        if self.top1_with_ties < g.min_top1:
            misses.append(f"top-1 agreement {self.top1_with_ties:.3f} < {g.min_top1}")
        if self.kl_mean > g.max_kl_mean:
            misses.append(f"mean KL {self.kl_mean:.3f} > {g.max_kl_mean}")
        if self.kl_max > g.max_kl_max:
            misses.append(f"largest KL {self.kl_max:.3f} > {g.max_kl_max}")
        return f"{self.precision} quality below its bar: " + ", ".join(misses)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityResult:
        """The result ``to_dict`` wrote (``export.json``'s ``quality``)."""
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        gate = fields.get("gate")
        fields["gate"] = QualityGate(**gate) if gate else None
        return cls(**fields)


def eval_sequences(tokenizer: Any, vocab_size: int) -> list[list[int]]:
    """The token sequences to read: ``EVAL_TEXTS`` (and ``CHAT`` through the model's chat
    template) tokenized, each cut to ``MAX_TOKENS``; seeded random ids without a tokenizer."""
    if tokenizer is None:
        rng = np.random.default_rng(0)
        return [
            rng.integers(0, vocab_size, RANDOM_LENGTH).tolist() for _ in range(RANDOM_SEQUENCES)
        ]
    texts = list(EVAL_TEXTS)
    if getattr(tokenizer, "chat_template", None):
        # A template that refuses this exchange: the plain texts are enough.
        with contextlib.suppress(Exception):
            texts.append(tokenizer.apply_chat_template(list(CHAT), tokenize=False))
    seqs = [list(tokenizer(t)["input_ids"])[:MAX_TOKENS] for t in texts]
    return [[i for i in s if 0 <= i < vocab_size] for s in seqs if len(s) >= 2]


def reference_log_probs(
    model: Any, sequences: Sequence[list[int]], device: str = "cpu"
) -> list[np.ndarray]:
    """Each sequence's next-token log-probabilities from ``model`` in float32: (N, vocab)
    float64 per sequence. The model's dtype is restored afterwards (lossless upcast)."""
    dtype = next(model.parameters()).dtype
    model.to(torch.float32)
    try:
        out = []
        with torch.no_grad():
            for ids in sequences:
                logits = model(torch.tensor([ids], device=device)).logits[0]  # (N, vocab)
                out.append(torch.log_softmax(logits.double(), -1).cpu().numpy())
        return out
    finally:
        model.to(dtype)


def measure_quality(
    reference: Sequence[np.ndarray],
    graph_logits: Sequence[np.ndarray],
    precision: str,
) -> QualityResult:
    """Compare the graph's logits (N, vocab) with the reference log-probabilities (N, vocab)
    sequence by sequence."""
    agree, ties, kls, finite = 0, 0, [], True
    for ref, got in zip(reference, graph_logits):
        got64 = got.astype(np.float64)
        if not np.isfinite(got64).all():
            finite = False
            continue
        log_q = torch.log_softmax(torch.from_numpy(got64), -1).numpy()  # (N, vocab)
        kls.append((np.exp(ref) * (ref - log_q)).sum(-1))  # (N,)
        pick, best = got64.argmax(-1), ref.argmax(-1)  # (N,), (N,)
        gap = ref[np.arange(len(ref)), best] - ref[np.arange(len(ref)), pick]  # (N,) >= 0
        agree += int((pick == best).sum())
        ties += int(((pick != best) & (gap <= TIE_NATS)).sum())
    kl = np.concatenate(kls) if kls else np.zeros(0)
    positions = sum(len(r) for r in reference)
    return QualityResult(
        precision=precision,
        sequences=len(reference),
        positions=positions,
        top1=round(agree / positions, 4) if positions else 0.0,
        top1_with_ties=round((agree + ties) / positions, 4) if positions else 0.0,
        kl_mean=_sig(float(kl.mean())) if kl.size else 0.0,
        kl_p95=_sig(float(np.percentile(kl, 95))) if kl.size else 0.0,
        kl_max=_sig(float(kl.max())) if kl.size else 0.0,
        finite=finite,
        gate=GATES.get(precision),
    )


def _sig(x: float) -> float:
    """``x`` to 4 significant digits (KL spans 1e-9 in float32 to 1 in int4)."""
    return float(f"{x:.4g}")


def evaluate(
    model: Any,
    tokenizer: Any,
    vocab_size: int,
    teacher_forced: Callable[[list[list[int]]], list[np.ndarray]],
    precision: str,
    device: str = "cpu",
) -> QualityResult:
    """Read the eval sequences through ``teacher_forced`` (the graph: one (N, vocab) logits
    array per sequence) and through ``model`` in float32, and compare them."""
    sequences = eval_sequences(tokenizer, vocab_size)
    reference = reference_log_probs(model, sequences, device)
    return measure_quality(reference, teacher_forced(sequences), precision)
