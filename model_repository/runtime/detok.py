"""Turn generated token ids into streamed text, one final piece at a time.

Decoding each token alone is wrong twice over: SentencePiece-style (Metaspace "▁")
decoders drop the leading space of the first token they see, and byte-level tokens can
hold half of a multi-byte character. So, as vLLM and TGI do, each step decodes a short
window twice, without and with the new tokens, and emits the difference:

    ids = [ context ...... | new ... ]
            decode(context)            -> "The quick"
            decode(context + new)      -> "The quick brown"  => emit " brown"

A difference that ends in U+FFFD is an unfinished character and waits for more tokens.
The window holds only the tokens of the last emitted piece plus any held back, so each
token costs O(1), not a decode of the whole sequence.

One limit, shared with vLLM and TGI: a byte-fallback decoder (Llama-2's "<0xE6>" tokens)
turns a whole run of byte tokens into U+FFFDs once any byte in it is invalid, so when a
model emits invalid UTF-8 the text already streamed from that run can differ from the
final ``decode``. Valid text always streams exactly.

Runs inside the Triton container: standard library and ``tokenizers`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CONTEXT_TOKENS = 5  # prompt ids decoded as context for the first piece (vLLM uses 5)


class IncrementalDetokenizer:
    """Detokenize one request's generated ids as they arrive.

    The pieces join to the continuation of the prompt: ``decode(prompt + generated)``
    minus ``decode(prompt)``. That equals ``decode(generated)`` except that a Metaspace
    tokenizer's first piece keeps the space its first token carries ("▁Paris" after
    "The capital is" streams " Paris"), which ``decode(generated)`` alone would drop.
    With an empty ``prompt_ids`` the pieces join to ``decode(generated)`` exactly.
    Nothing here raises: ``decode`` skips ids the tokenizer does not know.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        skip_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # Skipped tokens decode to nothing, so leaving them out changes no text; it keeps
        # a context of only skipped tokens from hiding the first token's leading space.
        self.skipped: set[int] = set()
        if skip_special_tokens:
            added = tokenizer.get_added_tokens_decoder()
            self.skipped = {i for i, token in added.items() if token.special}
        self.ids = [i for i in prompt_ids if i not in self.skipped][-CONTEXT_TOKENS:]
        self.read = len(self.ids)  # ids[:read] is decoded as context only; ids[read:] is new

    def push(self, token_id: int) -> str:
        """Add one generated id; returns the text that became final ("" while held back)."""
        if token_id in self.skipped:
            return ""
        self.ids.append(token_id)
        context = self._decode(self.ids[: self.read])
        text = self._decode(self.ids)
        if len(text) <= len(context) or text.endswith("\ufffd"):
            return ""  # nothing visible yet, or half of a multi-byte character
        # The tokens just emitted become the next context; older ids are no longer needed.
        self.ids = self.ids[self.read :]
        self.read = len(self.ids)
        return text[len(context) :]

    def flush(self) -> str:
        """The text still held back when generation ends (may end in U+FFFD)."""
        context = self._decode(self.ids[: self.read])
        text = self._decode(self.ids)
        self.ids = self.ids[self.read :]
        self.read = len(self.ids)
        return text[len(context) :]

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
