"""What the client returns: a finished generation, the pieces of a stream, a model's state."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StreamChunk:
    """One response of a generation.

    ``finish_reason`` is "stop" or "length" on the final chunk and None before it. The
    final chunk (``is_final``) carries the last counts the server sent; its text may be
    empty when the server closes the stream with an empty final response.
    """

    text: str
    is_final: bool = False
    finish_reason: str | None = None
    num_input_tokens: int | None = None
    num_output_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the server did not prefill (its cache)
    index: int = 0  # the choice this chunk belongs to (n > 1)
    # With ``logprobs``: the entries of this chunk's tokens, each
    # {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}...]}.
    logprobs: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation with its timings.

    ``time_to_first_token_s`` is when the first text arrived (for a non-streamed
    generation that is the whole latency); ``latency_s`` is when the final response did.
    """

    text: str
    finish_reason: str | None
    num_input_tokens: int | None
    num_output_tokens: int | None
    time_to_first_token_s: float | None
    latency_s: float
    logprobs: tuple[dict[str, Any], ...] | None = None  # one entry per token, when asked
    cached_tokens: int | None = None  # prompt tokens the server took from its prefix cache
    index: int = 0  # which choice (n > 1)
    choices: tuple[GenerationResult, ...] = ()  # n > 1: every choice's result, by index

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second over the whole request (None without a count)."""
        if not self.num_output_tokens or self.latency_s <= 0:
            return None
        return self.num_output_tokens / self.latency_s

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``tokens_per_s``, ready for ``json.dumps``."""
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the server's model repository index."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE, LOADING, ... ("" for a model never loaded)
    reason: str = ""  # why it is not ready, when the server says


class ResultBuilder:
    """Folds chunks into a ``GenerationResult``, timing them from construction; with n > 1
    each choice's chunks (``index``) into a result of its own, held in ``choices``."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._choices: dict[int, _Choice] = {}

    def add(self, chunk: StreamChunk) -> StreamChunk:
        """Record ``chunk``; returns it with its choice's finish reason and counts seen so
        far filled in."""
        one = self._choices.setdefault(chunk.index, _Choice())
        if chunk.text:
            one.parts.append(chunk.text)
            if one.first is None:
                one.first = time.perf_counter() - self._start
        if chunk.logprobs is not None:
            one.logprobs = [*(one.logprobs or ()), *chunk.logprobs]
        previous = one.last
        if previous is not None:
            chunk = StreamChunk(
                text=chunk.text,
                is_final=chunk.is_final,
                finish_reason=chunk.finish_reason or previous.finish_reason,
                num_input_tokens=_pick(chunk.num_input_tokens, previous.num_input_tokens),
                num_output_tokens=_pick(chunk.num_output_tokens, previous.num_output_tokens),
                cached_tokens=_pick(chunk.cached_tokens, previous.cached_tokens),
                index=chunk.index,
                logprobs=chunk.logprobs,
            )
        one.last = chunk
        return chunk

    def result(self) -> GenerationResult:
        """The first choice's result; with n > 1 every choice's in ``choices``."""
        now = time.perf_counter() - self._start
        results = [self._choices[i].result(now) for i in sorted(self._choices)] or [
            _Choice().result(now)
        ]
        if len(results) == 1:
            return results[0]
        return dataclasses.replace(results[0], choices=tuple(results))


@dataclass
class _Choice:
    parts: list[str] = field(default_factory=list)
    first: float | None = None
    last: StreamChunk | None = None
    logprobs: list[dict[str, Any]] | None = None

    def result(self, latency_s: float) -> GenerationResult:
        last = self.last or StreamChunk(text="")
        return GenerationResult(
            text="".join(self.parts),
            finish_reason=last.finish_reason,
            num_input_tokens=last.num_input_tokens,
            num_output_tokens=last.num_output_tokens,
            time_to_first_token_s=self.first,
            latency_s=latency_s,
            logprobs=None if self.logprobs is None else tuple(self.logprobs),
            cached_tokens=last.cached_tokens,
            index=last.index,
        )


def _pick(value: int | None, fallback: int | None) -> int | None:
    return value if value is not None else fallback
