"""The OpenAI response objects and server-sent events the gateway writes.

Non-streamed: one ``text_completion`` / ``chat.completion`` object with a ``usage`` block
from the model's token counts. Streamed: ``data: {chunk}`` events, for chat first a
``delta`` with the assistant role, then the text pieces, then an empty ``delta`` with
the ``finish_reason``; with ``stream_options.include_usage`` one more chunk with no
choices and the usage; then ``data: [DONE]``. Tool calls arrive as ``tool_calls``
deltas (``tools.Delta``) and end with ``finish_reason: "tool_calls"``.

Logprobs come from the model as OpenAI's chat entries (``{"token", "logprob", "bytes",
"top_logprobs"}``); chat sends them as ``{"content": [...]}``, completions in the legacy
form (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["completion", "chat"]

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(
    prompt_tokens: int | None, completion_tokens: int | None, cached_tokens: int | None = None
) -> dict[str, Any]:
    """The ``usage`` block; a count the model did not send is 0. ``cached_tokens``: the
    prompt tokens the model's prefix cache gave (``prompt_tokens_details``, as OpenAI)."""
    p, c = prompt_tokens or 0, completion_tokens or 0
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": cached_tokens or 0},
    }


@dataclass
class Choice:
    """One choice of a whole response."""

    text: str
    finish_reason: str | None
    tool_calls: Sequence[dict[str, Any]] = ()
    logprobs: Sequence[dict[str, Any]] | None = None
    text_offset: int = 0  # completions: characters before the text (echo)


@dataclass
class ResponseWriter:
    """Builds the objects of one response: same id, model and creation time throughout."""

    kind: Kind
    model: str
    include_usage: bool = False  # streamed: every chunk has "usage": null, then a usage chunk
    id: str = field(default="")
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
            self.id = f"{prefix}-{uuid.uuid4().hex}"

    def _head(self, obj_type: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj_type,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def complete(self, choices: Sequence[Choice], counts: dict[str, Any]) -> dict[str, Any]:
        """The whole (non-streamed) response: one choice per ``choices`` (n)."""
        out = []
        for i, c in enumerate(choices):
            if self.kind == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": c.text}
                if c.tool_calls:
                    message = {"role": "assistant", "content": c.text.strip() or None,
                               "tool_calls": list(c.tool_calls)}  # fmt: skip
                out.append({
                    "index": i,
                    "message": message,
                    "logprobs": self.logprobs(c.logprobs),
                    "finish_reason": finish(c.finish_reason, bool(c.tool_calls)),
                })  # fmt: skip
            else:
                out.append({
                    "index": i,
                    "text": c.text,
                    "logprobs": self.logprobs(c.logprobs, c.text_offset),
                    "finish_reason": c.finish_reason or "stop",
                })  # fmt: skip
        obj = self._head("chat.completion" if self.kind == "chat" else "text_completion")
        obj["choices"] = out
        obj["usage"] = counts
        return obj

    def chunk(
        self,
        text: str | None = None,
        finish_reason: str | None = None,
        role: bool = False,
        delta: dict[str, Any] | None = None,  # chat: a delta of its own (tool calls)
        logprobs: Sequence[dict[str, Any]] | None = None,
        text_offset: int = 0,
        index: int = 0,  # the choice (n > 1)
    ) -> bytes:
        """One streamed chunk: a text piece, the opening role (chat), or the finish."""
        if self.kind == "chat":
            body: dict[str, Any] = {}
            if role:
                body = {"role": "assistant", "content": ""}
            elif delta is not None:
                body = delta
            elif text is not None:
                body = {"content": text}
            choice: dict[str, Any] = {"index": index, "delta": body}
            obj = self._head("chat.completion.chunk")
        else:
            choice = {"index": index, "text": text or ""}
            obj = self._head("text_completion")
        choice["logprobs"] = self.logprobs(logprobs, text_offset) if logprobs else None
        choice["finish_reason"] = finish_reason
        obj["choices"] = [choice]
        if self.include_usage:
            obj["usage"] = None
        return sse(obj)

    def logprobs(
        self, entries: Sequence[dict[str, Any]] | None, text_offset: int = 0
    ) -> dict[str, Any] | None:
        """The ``logprobs`` of a choice, in this response kind's form (None: not asked)."""
        if entries is None:
            return None
        if self.kind == "chat":
            return {"content": list(entries), "refusal": None}
        offsets, at = [], text_offset
        for e in entries:
            offsets.append(at)
            at += len(e["token"])
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [
                {t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries
            ],
            "text_offset": offsets,
        }

    def usage_chunk(self, counts: dict[str, Any]) -> bytes:
        """The last chunk before ``[DONE]`` with ``include_usage``: no choices, the usage."""
        obj = self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        obj["choices"] = []
        obj["usage"] = counts
        return sse(obj)


def finish(reason: str | None, called: bool) -> str:
    """The chat ``finish_reason``: ``tool_calls`` when the model ended on calls."""
    if called and reason in (None, "stop"):
        return "tool_calls"
    return reason or "stop"
