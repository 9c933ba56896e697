"""Pick the next token of one request from its logits: greedy or seeded sampling.

Order as in vLLM: the constraint's mask (``allowed``), min_tokens (mask EOS), logit bias,
repetition penalty (Hugging Face's, over prompt and output), presence and frequency
penalties (OpenAI's, over the output), then temperature, top-k, top-p and min-p. Each
request owns its random generator, so a seeded request gives the same text whatever
else shares its batch. ``log_softmax`` and ``top_logprobs`` give the logprobs a request
asks for, from the model's raw logits.

Runs inside the Triton container: standard library and numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np

GREEDY_BELOW = 1e-5  # temperatures under this sample greedily


class Sampler:
    """The sampling state of one request.

    Raises ValueError (from ``__init__``) on settings ``parse_request`` would reject.
    """

    def __init__(
        self,
        temperature: float = 0.0,  # 0: greedy argmax
        top_k: int = 0,  # 0: off
        top_p: float = 1.0,  # 1: off
        seed: int | None = None,  # None: fresh entropy
        repetition_penalty: float = 1.0,  # 1: off
        min_tokens: int = 0,  # EOS is masked while fewer tokens were generated
        eos_token_ids: Sequence[int] = (),
        presence_penalty: float = 0.0,  # 0: off
        frequency_penalty: float = 0.0,  # 0: off
        min_p: float = 0.0,  # 0: off
        logit_bias: Mapping[int, float] | None = None,  # token id -> added to its logit
    ) -> None:
        if (
            temperature < 0
            or top_k < 0
            or not 0 < top_p <= 1
            or repetition_penalty <= 0
            or not 0 <= min_p <= 1
        ):
            raise ValueError(
                f"bad sampling settings: temperature={temperature}, top_k={top_k}, "
                f"top_p={top_p}, repetition_penalty={repetition_penalty}, min_p={min_p}"
            )
        # Below this a division by the temperature overflows float32 (1e-37 was seen to
        # turn every logit into inf); the distribution is a point mass anyway: greedy, as
        # vLLM does.
        self.temperature = 0.0 if temperature < GREEDY_BELOW else temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.min_tokens = min_tokens
        self.eos = np.asarray(eos_token_ids, dtype=np.int64)  # (E,)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.min_p = min_p
        bias = dict(logit_bias or {})
        self.bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))  # (B,)
        self.bias = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))  # (B,)
        self.counts: Counter[int] = Counter()  # output tokens seen by ``count``

    def count(self, token: int) -> None:
        """Record a generated token, for the presence and frequency penalties."""
        self.counts[token] += 1

    def next_token(
        self,
        logits: np.ndarray,
        generated: Sequence[int],
        prompt_ids: Sequence[int],
        allowed: np.ndarray | None = None,
    ) -> int:
        """The next token id from ``logits`` (vocab,) of this request's last position.

        ``allowed``: a (vocab,) boolean mask from a constraint; other tokens are never chosen.

        Raises:
            ValueError: ``logits`` is not one-dimensional, holds NaN/inf when sampling, or
                the mask and the settings leave no token to choose.
        """
        if logits.ndim != 1:
            raise ValueError(f"logits must have shape (vocab,), got {logits.shape}")
        if allowed is None and self._plain_greedy():  # 6 us, not 36 (49k vocab)
            token = int(np.argmax(logits))
            if len(generated) >= self.min_tokens or token not in self.eos:
                return token  # masking EOS (min_tokens) would not change this argmax
        if allowed is None:
            x = logits.astype(np.float32)  # (vocab,) a copy this request may change
        else:  # one pass: 2.6x faster than masked assignment on a 49k vocabulary
            x = np.where(allowed, logits, -np.inf).astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught below, per request
            return self._choose(x, generated, prompt_ids)

    def _plain_greedy(self) -> bool:
        """Whether the choice is the argmax of the logits: greedy, and no setting but
        min_tokens changes them."""
        return (
            self.temperature == 0
            and not self.bias.size
            and self.repetition_penalty == 1.0
            and not self.presence_penalty
            and not self.frequency_penalty
        )

    def _choose(self, x: np.ndarray, generated: Sequence[int], prompt_ids: Sequence[int]) -> int:
        """``next_token`` on ``x`` (vocab,), a float32 copy of the logits it may change."""
        if len(generated) < self.min_tokens and self.eos.size:
            x[self.eos] = -np.inf
        if self.bias.size:
            in_vocab = self.bias_ids < x.size  # (B,) ids past the vocabulary change nothing
            x[self.bias_ids[in_vocab]] += self.bias[in_vocab]
        if self.repetition_penalty != 1.0 and (len(generated) or len(prompt_ids)):
            seen = np.fromiter(chain(prompt_ids, generated), dtype=np.int64)  # (P+G,)
            s = x[seen]  # duplicates write the same value, so no np.unique is needed
            x[seen] = np.where(s > 0, s / self.repetition_penalty, s * self.repetition_penalty)
        if (self.presence_penalty or self.frequency_penalty) and self.counts:
            out = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))  # (U,)
            n = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
            x[out] -= self.frequency_penalty * n + self.presence_penalty  # OpenAI's definition
        if np.isneginf(x.max()):
            raise ValueError(
                "no token is left to choose: the constraint and min_tokens (or logit_bias) "
                "rule out every token"
            )
        if self.temperature == 0:
            return int(np.argmax(x))

        x /= self.temperature
        ids = None  # candidate token ids; None: the whole vocabulary
        if 0 < self.top_k < x.size:
            ids = np.argpartition(x, -self.top_k)[-self.top_k :]  # (k,) unordered
            x = x[ids]
        probs = np.exp(x - x.max())  # (K,) softmax over the candidates
        total = probs.sum()
        if not np.isfinite(total) or total <= 0:
            raise ValueError("logits hold NaN or inf; cannot sample from them")
        probs /= total
        if self.top_p < 1.0:
            keep = _top_p(probs, self.top_p)  # (n,)
            ids, probs = (keep if ids is None else ids[keep]), probs[keep]
        if self.min_p > 0:
            keep = np.flatnonzero(probs >= self.min_p * probs.max())  # (m,) the top one stays
            ids, probs = (keep if ids is None else ids[keep]), probs[keep]
        cdf = np.cumsum(probs)  # (K,); a zero-probability token is never drawn
        i = min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")), cdf.size - 1)
        return int(i if ids is None else ids[i])


def _top_p(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the fewest most-likely tokens whose mass reaches ``top_p``, most likely first.

    Sorting 150k probabilities per token is slow, and the nucleus is usually a few dozen
    tokens. Every token at least as likely as some cut is a top prefix, so once such a
    prefix holds ``top_p`` the nucleus lies inside it: lower the cut until it does, then
    sort only those tokens.
    """
    cut = float(probs.max())
    while True:
        cut /= 4
        top = np.flatnonzero(probs >= cut)  # (m,) every token at least this likely
        # Below 1e-20 the rest of the vocabulary cannot move a float32 sum: stop there.
        if top.size == probs.size or cut < 1e-20 or probs[top].sum() >= top_p:
            break
    top = top[np.argsort(-probs[top], kind="stable")]  # (m,) most likely first
    n = int(np.searchsorted(np.cumsum(probs[top]), top_p)) + 1  # first prefix reaching top_p
    return top[:n]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(vocab,) float32 log-probabilities of ``logits`` (vocab,), computed in float64."""
    x = logits.astype(np.float64)
    x -= x.max()
    return (x - np.log(np.exp(x).sum())).astype(np.float32)


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely (token id, logprob) of ``logprobs`` (vocab,), most likely first
    (ties: the lower id first, as ``argmax`` picks)."""
    if k <= 0:
        return []
    k = min(k, logprobs.size)
    ids = np.argpartition(-logprobs, k - 1)[:k]  # (k,) unordered
    ids = ids[np.lexsort((ids, -logprobs[ids]))]  # (k,) most likely first
    return [(int(i), float(logprobs[i])) for i in ids]
