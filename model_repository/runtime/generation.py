"""One request's generation: constraint, sampling, stop conditions, logprobs,
incremental text, and its output.

Pure: no Triton. The entry model gives each request an ``emit`` callable that turns
an ``Output`` into a Triton response; tests give it a list's ``append``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonkit.core.params import RequestError, RequestSettings, resolve_max_new_tokens

from .constraints import Constraint
from .detok import IncrementalDetokenizer
from .sampling import Sampler, log_softmax, top_logprobs
from .stop import StopMatcher

CANCEL_POLL_S = 0.05  # how often a running request asks whether its client is gone


@dataclass
class Output:
    """One response: a streamed piece, or the final (``final`` True) one."""

    text: str
    final: bool = False
    finish_reason: str = ""  # "stop" or "length" on the final output; "" before
    num_input_tokens: int = 0
    num_output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV a kept prefix gave (not prefilled)
    index: int = 0  # the choice (with n > 1)
    error: str | None = None  # set for an error response
    cancelled: bool = False  # the client went away; nothing more is sent
    # With ``logprobs``: one OpenAI entry per token since the last output (all of them
    # when not streaming): {"token", "logprob", "bytes", "top_logprobs": [...]}.
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class Timing:
    """Wall-clock marks of one request, for metrics (perf_counter seconds)."""

    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    last_token: float | None = None
    inter_token: list[float] = field(default_factory=list)


class GenerationRequest:
    """Implements the scheduler's ``Schedulable`` for one request."""

    def __init__(
        self,
        params: RequestSettings,
        prompt_ids: Sequence[int],
        tokenizer: Any,  # tokenizers.Tokenizer
        eos_token_ids: Sequence[int],
        max_context: int,
        emit: Callable[[Output], None],
        is_cancelled: Callable[[], bool] = lambda: False,
        on_done: Callable[[GenerationRequest], None] | None = None,
        constraint: Constraint | None = None,
        token_bytes: Callable[[int], bytes] | None = None,
        vocab_size: int | None = None,
        index: int = 0,
    ) -> None:
        """``constraint``: the request's compiled guide (``constraints.Grammars``);
        ``token_bytes``: a token's raw bytes, for logprobs (default: its decoded text).

        Raises:
            RequestError: the prompt does not fit the context, or ``logit_bias`` names a
                token past the vocabulary.
        """
        self.params = params
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = resolve_max_new_tokens(params, len(self.prompt_ids), max_context)
        self.eos = frozenset(eos_token_ids)
        if vocab_size is not None and params.logit_bias:
            beyond = max(params.logit_bias)
            if beyond >= vocab_size:
                raise RequestError(
                    f"logit_bias names token {beyond}; the model's vocabulary has "
                    f"{vocab_size} tokens (ids 0..{vocab_size - 1})"
                )
        self.sampler = Sampler(
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            seed=params.seed,
            repetition_penalty=params.repetition_penalty,
            # With a constraint, its grammar alone says when EOS may come.
            min_tokens=params.min_tokens if constraint is None else 0,
            eos_token_ids=list(eos_token_ids),
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            min_p=params.min_p,
            logit_bias=params.logit_bias,
        )
        self.constraint = constraint
        self.vocab_size = vocab_size
        self.index = index  # which choice of its request this is (n > 1)
        # The other choices of the request (n > 1): forked from this one's row once its
        # prompt is prefilled (the scheduler reserves their rows when it admits it).
        self.forks: list[GenerationRequest] = []
        self._tokenizer = tokenizer
        self._token_bytes = token_bytes
        self.logprobs: list[dict[str, Any]] = []  # one entry per generated token
        self._logprobs_sent = 0  # entries already streamed
        self._pending: dict[str, Any] | None = None  # the entry of the token being chosen
        self.detok = IncrementalDetokenizer(tokenizer, self.prompt_ids)
        self.stop = StopMatcher(params.stop)
        self.generated: list[int] = []
        self.cached_tokens = 0  # set by the scheduler when it admits the request
        self.completion = ""  # text emitted so far (the completion only)
        self._emit = emit if index == 0 else _indexed(emit, index)
        self._is_cancelled = is_cancelled
        self._on_done = on_done
        self._cancel_checked = 0.0
        self.timing = Timing()
        self.done = False
        self.finish_reason = ""

    # ---- Schedulable protocol --------------------------------------------------------

    def next_token(self, logits: np.ndarray) -> int:
        allowed = None if self.constraint is None else self.constraint.allowed()  # (vocab,)
        token = self.sampler.next_token(logits, self.generated, self.prompt_ids, allowed)
        if self.params.logprobs is not None:  # from the model's own distribution
            lp = log_softmax(logits)  # (vocab,)
            self._pending = self._entry(token, float(lp[token]))
            self._pending["top_logprobs"] = [
                self._entry(i, v) for i, v in top_logprobs(lp, self.params.logprobs)
            ]
        return token

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        raw = (
            self._token_bytes(token)
            if self._token_bytes is not None
            else self._tokenizer.decode([token], skip_special_tokens=False).encode()
        )
        return {
            "token": raw.decode("utf-8", "replace"),
            "logprob": logprob,
            "bytes": list(raw),
        }

    def accept(self, token: int) -> bool:
        now = time.perf_counter()
        t = self.timing
        if t.first_token is None:
            t.first_token = now
        else:
            t.inter_token.append(now - (t.last_token or now))
        t.last_token = now

        entry, self._pending = self._pending, None
        if token in self.eos and (
            len(self.generated) >= self.params.min_tokens or self.constraint is not None
        ):  # a constraint's mask lets EOS through only once its grammar is complete
            self._finish("stop")
            return True
        if self.constraint is not None:
            self.constraint.consume(token)
        self.sampler.count(token)
        self.generated.append(token)
        if entry is not None:
            self.logprobs.append(entry)
        piece, stopped = self.stop.feed(self.detok.push(token))
        if stopped:
            self._piece(piece)
            self._finish("stop", flush=False)
            return True
        if self.constraint is not None and self.constraint.finished:
            self._piece(piece)
            self._finish("stop")  # the grammar is complete and takes no more tokens
            return True
        if len(self.generated) >= self.max_new_tokens:
            self._piece(piece)
            self._finish("length")
            return True
        self._piece(piece)
        return False

    def cancelled(self) -> bool:
        # Asking Triton is an IPC round trip (about 0.5 ms measured), so ask at most
        # every CANCEL_POLL_S; a cancelled request stops within that much more time.
        now = time.perf_counter()
        if now - self._cancel_checked < CANCEL_POLL_S:
            return False
        self._cancel_checked = now
        return self._is_cancelled()

    def finish_cancelled(self) -> None:
        self.done = True
        self.finish_reason = "cancelled"
        self._emit(Output("", final=True, cancelled=True, **self._counts()))
        self._closed()

    def fail(self, message: str) -> None:
        self.done = True
        self._emit(Output("", final=True, error=message, **self._counts()))
        self._closed()

    # ---- output ----------------------------------------------------------------------

    def _counts(self) -> dict[str, Any]:
        return {
            "num_input_tokens": len(self.prompt_ids),
            "num_output_tokens": len(self.generated),
            "cached_tokens": self.cached_tokens,
        }

    def _new_logprobs(self) -> list[dict[str, Any]] | None:
        """Entries not yet sent (streaming), or all of them (final, not streaming)."""
        if self.params.logprobs is None:
            return None
        start = self._logprobs_sent if self.params.stream else 0
        self._logprobs_sent = len(self.logprobs)
        return self.logprobs[start:]

    def _piece(self, text: str) -> None:
        if not text:
            return
        self.completion += text
        if self.params.stream:
            self._emit(Output(text, logprobs=self._new_logprobs(), **self._counts()))

    def _finish(self, reason: str, flush: bool = True) -> None:
        if flush:
            tail, stopped = self.stop.feed(self.detok.flush())
            tail += "" if stopped else self.stop.flush()
            if stopped:
                reason = "stop"
            self.completion += tail
        else:
            tail = ""
        self.done = True
        self.finish_reason = reason
        if self.params.stream:
            text = tail
        elif self.params.exclude_input_in_output:
            text = self.completion
        else:
            text = self.params.prompt + self.completion
        self._emit(
            Output(
                text,
                final=True,
                finish_reason=reason,
                logprobs=self._new_logprobs(),
                **self._counts(),
            )
        )
        self._closed()

    def _closed(self) -> None:
        if self._on_done is not None:
            self._on_done(self)


def _indexed(emit: Callable[[Output], None], index: int) -> Callable[[Output], None]:
    def send(output: Output) -> None:
        output.index = index
        emit(output)

    return send


def coalesce(items: list[tuple[Any, Output]]) -> list[tuple[Any, Output]]:
    """Merge each request's queued streamed pieces into one response, keeping order.

    Under load the responder falls behind the decode loop and several pieces of one
    request wait together; sending them as one response saves an IPC and a network
    message each, while at low load nothing waits and every token goes out alone.
    Errors and cancellations are never merged into text.
    """
    merged: dict[int, tuple[Any, Output]] = {}
    order: list[int] = []
    out: list[tuple[Any, Output]] = []
    for key, output in items:
        k = id(key)
        held = merged.get(k)
        if held is not None and _mergeable(held[1]) and _mergeable(output):
            prev = held[1]
            logprobs = None
            if prev.logprobs is not None or output.logprobs is not None:
                logprobs = [*(prev.logprobs or ()), *(output.logprobs or ())]
            merged[k] = (key, Output(
                prev.text + output.text, final=output.final,
                finish_reason=output.finish_reason,
                num_input_tokens=output.num_input_tokens,
                num_output_tokens=output.num_output_tokens,
                cached_tokens=output.cached_tokens,
                index=output.index,
                logprobs=logprobs,
            ))  # fmt: skip
            continue
        if held is not None:
            out.append(held)
            order.remove(k)
        merged[k] = (key, output)
        order.append(k)
    out.extend(merged[k] for k in order)
    return out


def _mergeable(output: Output) -> bool:
    return output.error is None and not output.cancelled


class ChoiceGroup:
    """The n choices of one request share its response sender: each response names its
    choice (``index``), and the request's last response, the one Triton must see flagged
    final, goes out when every choice has ended. An error ends the request at once (the
    other choices' later outputs are dropped). Called on the responder thread, in order.
    """

    def __init__(self, n: int) -> None:
        self.open = n  # choices still running
        self.failed = False

    def route(self, output: Output) -> tuple[bool, bool]:
        """(send ``output``?, flag it as the request's final response?)."""
        if self.failed:
            return False, False
        if output.error is not None:
            self.failed = True
            return True, True
        if output.cancelled:  # nothing to say but the end, once every choice has stopped
            self.open -= 1
            return self.open == 0, self.open == 0
        if output.final:
            self.open -= 1
            return True, self.open == 0
        return True, False
