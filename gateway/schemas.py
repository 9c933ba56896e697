"""The OpenAI request bodies the gateway accepts, and what they become for Triton.

Parameters map onto the entry model's inputs (``generation_kwargs``): ``max_tokens``
(chat: ``max_completion_tokens`` too), ``temperature``, ``top_p``, ``seed``, ``stop``,
``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``logprobs`` (chat: with
``top_logprobs``), ``response_format`` (``json_object`` and ``json_schema`` become a
``guided_json`` constraint) and tools (``tools.py``: ``required`` or a named function
becomes a ``guided_grammar``); and vLLM's extras ``top_k``, ``min_p``, ``min_tokens``,
``repetition_penalty``, ``guided_json``, ``guided_regex``, ``guided_choice``,
``guided_grammar`` (``extra_body`` in the SDK). A parameter left out takes the model's
default (greedy, 64 tokens), not OpenAI's. ``n`` choices come from one prefill. What
the model cannot honour (``best_of``, ``suffix``, prompt logprobs with ``echo``, two
constraints at once) is
refused with a 400 rather than silently ignored; unknown fields are ignored, as vLLM does.

Numbers are bounded here to what the model's inputs hold, so none wraps on its way into
a tensor (``max_tokens`` is INT32: 2**32 + 5 would arrive as 5): token counts and
``top_k`` are int32, ``seed`` uint64, floats finite float32; the model checks the
meaning (``temperature >= 0`` ...) and says so in its own words. ``check_length`` caps
the characters of the prompt, or of all the messages, before anything renders or
tokenizes them.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from .http_errors import APIError, bad_request
from .tools import Tool, ToolChoice, parse_tool_choice, parse_tools

INT32_MAX = 2**31 - 1  # max_tokens, min_tokens, top_k are INT32 inputs
UINT64_MAX = 2**64 - 1  # seed is a UINT64 input
FLOAT32_MAX = 3.4028234663852886e38  # temperature, top_p, repetition_penalty are FP32

Tokens = Annotated[int, Field(ge=1, le=INT32_MAX)]
Float32 = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]  # OpenAI's range
MAX_LOGPROBS = 20  # top_logprobs, as OpenAI
MAX_N = 64  # choices per request (the model refuses more than its KV rows)

# The settings of the entry model a body sets (``generation_kwargs``), in the client's
# names: every declared input but the prompt, ``stream`` and ``sampling_parameters``
# (tests/test_interface.py checks this against the declaration).
GUIDED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


PROMPT_FIELDS = {"prompt", "messages"}  # what a request's prompt length counts


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Body):
    include_usage: bool = False  # one more chunk before [DONE], with the usage and no choices


class _GenerationBody(_Body):
    model: Annotated[str, Field(max_length=256)]
    max_tokens: Tokens | None = None
    temperature: Float32 | None = None
    top_p: Float32 | None = None
    seed: Annotated[int, Field(ge=0, le=UINT64_MAX)] | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Finite] | None = None  # the model checks ids and values
    user: str | None = None
    # vLLM-style extras
    top_k: Annotated[int, Field(ge=-1, le=INT32_MAX)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    min_tokens: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    repetition_penalty: Float32 | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    def check_supported(self) -> None:
        """Refuse what the model cannot do.

        Raises:
            APIError: 400 naming the parameter.
        """
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed with stream=true", "stream_options")
        guides = self.constraints()
        if len(guides) > 1:
            raise bad_request(
                f"at most one constraint per request; got {', '.join(guides)}", guides[1]
            )

    def constraints(self) -> list[str]:
        """The parameters of this body that constrain the output."""
        return [name for name in GUIDED if getattr(self, name) is not None]

    def logprobs_count(self) -> int | None:
        """The alternatives per token the model should send, or None for no logprobs."""
        return None

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def prompt_chars(self) -> int:
        """The characters of the prompt, or of every string of every message (roles,
        content parts, names)."""
        return _chars(self.model_dump(include=PROMPT_FIELDS, exclude_none=True))

    def check_length(self, limit: int) -> None:
        """Refuse a prompt longer than ``limit`` characters.

        Raises:
            APIError: 400 (code ``prompt_too_long``) naming both numbers.
        """
        chars = self.prompt_chars()
        if chars > limit:
            chat = isinstance(self, ChatCompletionRequest)
            what = "the messages hold" if chat else "the prompt holds"
            raise APIError(
                400,
                f"{what} {chars} characters; this gateway takes at most {limit} per request",
                param="messages" if chat else "prompt",
                code="prompt_too_long",
            )

    def generation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncLLMClient.generate`` / ``stream_events``."""
        kwargs: dict[str, Any] = {
            "max_tokens": self.max_new_tokens(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop or None,
            "top_k": self.top_k,
            "min_tokens": self.min_tokens,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "min_p": self.min_p,
            "logit_bias": self.logit_bias,
            "logprobs": self.logprobs_count(),
            "n": self.n if self.n and self.n > 1 else None,
            **{name: getattr(self, name) for name in GUIDED},
        }
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        kwargs["exclude_input_in_output"] = True  # the gateway adds the prompt itself (echo)
        return kwargs

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_GenerationBody):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    best_of: int | None = None
    suffix: str | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs is not None and self.echo:
            raise bad_request(
                "logprobs with echo would need the prompt's logprobs, which the model does "
                "not compute; send one or the other",
                "logprobs",
            )
        if self.best_of not in (None, 1):
            raise bad_request("best_of must be 1", "best_of")
        if self.suffix:
            raise bad_request("suffix is not supported by this model", "suffix")

    def logprobs_count(self) -> int | None:
        return self.logprobs

    def text_prompt(self) -> str:
        """The one prompt string.

        Raises:
            APIError: 400 for token ids or more than one prompt.
        """
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise bad_request(
                    "prompt must be one string (or a list of exactly one string); token ids "
                    "and batches of prompts are not supported: send one request per prompt",
                    "prompt",
                )
            prompt = prompt[0]
        return prompt


class ChatMessage(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None

    def as_template_input(self) -> dict[str, Any]:
        """The message for the chat template: its fields, with ``content`` as one string.

        Raises:
            APIError: 400 for a content part that is not text.
        """
        message = self.model_dump(exclude_none=True)
        content = self.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(
                        f"only text content parts are supported, got type {part.get('type')!r}",
                        "messages",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        message["content"] = content or ""
        return message


class ChatCompletionRequest(_GenerationBody):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    max_completion_tokens: Tokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    # Set by check_supported:
    _tools: list[Tool] = PrivateAttr(default_factory=list)
    _choice: ToolChoice = PrivateAttr(default=ToolChoice("none"))
    _schema: dict[str, Any] | None = PrivateAttr(default=None)

    def check_supported(self) -> None:
        if not self.messages:
            raise bad_request("messages must hold at least one message", "messages")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        self._tools = parse_tools(self.tools or [])
        self._choice = parse_tool_choice(self.tool_choice, self._tools)
        self._schema = _response_schema(self.response_format)
        super().check_supported()  # counts the constraints of the two above too

    def constraints(self) -> list[str]:
        found = super().constraints()
        if self._schema is not None:
            found.append("response_format")
        if self._choice.forced:
            found.append("tool_choice")
        return found

    @property
    def tool_list(self) -> list[Tool]:
        """The offered tools (``[]`` when ``tool_choice`` is ``none``)."""
        return [] if self._choice.mode == "none" else self._tools

    @property
    def choice(self) -> ToolChoice:
        return self._choice

    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def generation_kwargs(self) -> dict[str, Any]:
        kwargs = super().generation_kwargs()
        if self._schema is not None:
            kwargs["guided_json"] = self._schema
        return kwargs

    def max_new_tokens(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens


_B = TypeVar("_B", bound=_GenerationBody)


def _response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema ``response_format`` asks for (None: free text).

    ``json_object`` is any JSON object; ``json_schema`` is its ``schema``, enforced
    whether ``strict`` is set or not (the engine's grammar cannot do less).

    Raises:
        APIError: 400 for another type or a ``json_schema`` without a schema object.
    """
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request(
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": '
                "{...}}} with the schema as a JSON object",
                "response_format.json_schema.schema",
            )
        return schema
    raise bad_request(
        f"response_format type must be text, json_object or json_schema, got {kind!r}",
        "response_format.type",
    )


def _chars(value: Any) -> int:
    """The characters of the strings in ``value``, however nested (dict keys aside)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


def parse_body(cls: type[_B], data: Any) -> _B:
    """Validate a JSON body as ``cls`` and check it asks for nothing unsupported.

    Raises:
        APIError: 400 naming the first bad parameter.
    """
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        body = cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}", param=param) from exc
    body.check_supported()
    return body
