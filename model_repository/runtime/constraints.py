"""Constrained decoding: a grammar matcher per request masks its logits before sampling.

A request's ``guided_json``, ``guided_regex``, ``guided_choice`` or ``guided_grammar``
becomes an llguidance grammar; ``Grammars.constraint`` compiles it once per distinct
text (cached by its hash, least recently used evicted) and gives each request a copy
of the compiled matcher, so two requests with one schema share the work. It runs on
the entry model's request thread, never in the decode loop; llguidance drops the GIL
while it compiles. A grammar that does not compile, or is over the parser's limits,
is a ``RequestError`` for that request alone.

Per step, a constrained row asks its matcher which tokens may come next (a bitmask
over the vocabulary, computed by llguidance in Rust) and the sampler never picks
another; rows without a constraint do none of this. EOS is in the mask only once the
grammar is complete, and a matcher that can take no more tokens ends the request
(``finish_reason`` "stop").

Why llguidance: its numpy API needs no torch in the serving image, it reads the model's
``tokenizer.json`` directly, and a mask costs tens of microseconds (measured in
``benchmarks/constraint_bench.py``). The tokenizer it builds also gives each token's
raw bytes, which logprobs report.

Runs inside the Triton container: numpy and llguidance (an optional import: without
it, constrained requests are refused with a message saying so).
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from tritonkit.core.params import RequestError

# JSON as Python's json.dumps writes it: ", " and ": ", no other whitespace. llguidance's
# default lets any run of whitespace sit between tokens, and small models then loop on
# newlines until max_tokens; a schema's own "x-guidance" can still ask for other options.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
GRAMMAR_CACHE = 64  # compiled grammars kept (each is small: its lexer grows lazily)
MAX_ERROR_CHARS = 300  # of llguidance's message, on one line


class Constraint:
    """One request's matcher and its mask buffer."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        import llguidance.numpy as lln

        self._matcher = matcher
        self._lln = lln
        self.vocab_size = vocab_size
        self._mask = lln.allocate_token_bitmask(1, vocab_size)  # (1, ceil(vocab / 32)) int32

    def allowed(self) -> np.ndarray:
        """(vocab,) bool: the tokens that may come next.

        Raises:
            ValueError: the matcher is in an error state.
        """
        self._lln.fill_next_token_bitmask(self._matcher, self._mask)
        self._check()
        bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little", count=self.vocab_size)
        return bits.view(bool)  # (vocab,) 0/1 bytes read as booleans, no copy

    def consume(self, token: int) -> None:
        """Advance past ``token`` (an EOS token included).

        Raises:
            ValueError: the grammar does not allow it.
        """
        if not self._matcher.consume_token(token):
            raise ValueError(f"the constraint refused token {token}: {self._error()}")
        self._check()

    @property
    def finished(self) -> bool:
        """True when the grammar is complete and takes no more tokens."""
        return bool(self._matcher.is_stopped())

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ValueError(f"the constraint failed: {self._error()}")

    def _error(self) -> str:
        return one_line(self._matcher.get_error() or "no reason given")


class Grammars:
    """Compiles constraints for one tokenizer; safe to call from several threads.

    Raises ImportError (from ``__init__``) when llguidance is not installed.
    """

    def __init__(
        self,
        tokenizer_json: str,
        vocab_size: int,
        eos_token_ids: Sequence[int],
        cache_size: int = GRAMMAR_CACHE,
    ) -> None:
        import llguidance

        self._llg = llguidance
        # n_vocab: the logits' width, which may exceed the tokenizer's (padded embeddings).
        self.tokenizer = llguidance.LLTokenizer(
            tokenizer_json, n_vocab=vocab_size, eos_token=list(eos_token_ids) or None
        )
        self.vocab_size = vocab_size
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.compiled = 0  # grammars compiled (not found in the cache), for tests and metrics

    def constraint(self, kind: str, value: str | list[str]) -> Constraint:
        """A fresh matcher for ``kind`` (an input name: ``guided_json``...) and its value.

        Raises:
            RequestError: the schema, regex, choices or grammar do not compile.
        """
        key = hashlib.sha256(json.dumps([kind, value]).encode()).hexdigest()
        with self._lock:
            pristine = self._cache.get(key)
            if pristine is not None:
                self._cache.move_to_end(key)
        if pristine is None:
            pristine = self._compile(kind, value)
            with self._lock:
                self._cache[key] = pristine
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return Constraint(pristine.deep_copy(), self.vocab_size)

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (a piece of a UTF-8 character, possibly)."""
        return bytes(self.tokenizer.decode_bytes([token]))

    def _compile(self, kind: str, value: str | list[str]) -> Any:
        llg = self._llg
        try:
            if kind == "guided_json":
                grammar = llg.LLMatcher.grammar_from_json_schema(
                    str(value),
                    defaults=JSON_OPTIONS,
                )
            elif kind == "guided_regex":
                grammar = llg.LLMatcher.grammar_from_regex(str(value))
            elif kind == "guided_choice":
                grammar = llg.grammar_from("choice", json.dumps(list(value)))
            elif kind == "guided_grammar":
                grammar = llg.grammar_from("grammar", str(value))  # Lark, else GBNF
            else:
                raise RequestError(f"unknown constraint {kind}")
            matcher = llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise RequestError(f"{kind} does not compile: {one_line(str(exc))}") from exc
        self.compiled += 1
        if matcher.is_error():
            raise RequestError(f"{kind} does not compile: {one_line(matcher.get_error())}")
        return matcher


def one_line(text: str) -> str:
    """``text`` on one line, at most ``MAX_ERROR_CHARS`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
