"""The OpenAI response objects and server-sent events the gateway writes.

Non-streamed: one ``text_completion`` / ``chat.completion`` object with a ``usage`` block
from the model's token counts. Streamed: ``data: {chunk}`` events, for chat first a
``delta`` with the assistant role, then the text pieces, then an empty ``delta`` with
the ``finish_reason``; with ``stream_options.include_usage`` one more chunk with no
choices and the usage; then ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["completion", "chat"]

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
    """The ``usage`` block; a count the model did not send is 0."""
    p, c = prompt_tokens or 0, completion_tokens or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


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

    def complete(
        self, text: str, finish_reason: str | None, counts: dict[str, int]
    ) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason or "stop",
            }
            obj = self._head("chat.completion")
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason or "stop",
            }
            obj = self._head("text_completion")
        obj["choices"] = [choice]
        obj["usage"] = counts
        return obj

    def chunk(
        self, text: str | None = None, finish_reason: str | None = None, role: bool = False
    ) -> bytes:
        """One streamed chunk: a text piece, the opening role (chat), or the finish."""
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta = {"role": "assistant", "content": ""}
            elif text is not None:
                delta = {"content": text}
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            obj = self._head("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text or ""}
            obj = self._head("text_completion")
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        obj["choices"] = [choice]
        if self.include_usage:
            obj["usage"] = None
        return sse(obj)

    def usage_chunk(self, counts: dict[str, int]) -> bytes:
        """The last chunk before ``[DONE]`` with ``include_usage``: no choices, the usage."""
        obj = self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        obj["choices"] = []
        obj["usage"] = counts
        return sse(obj)
