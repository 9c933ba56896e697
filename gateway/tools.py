"""Tool calls: the tools in the prompt, the grammar that forces a call, and the parsers
that turn a model's text back into OpenAI ``tool_calls``.

    request tools ──> prompt_messages ──> the model's chat template (``tools=``), or
                      tritonkit's Hermes preamble when the template has no tools
    tool_choice   ──> forcing_grammar ──> guided_grammar (``required``, a named function)
    model text    ──> ToolCallParser  ──> content and tool_calls, streamed as deltas

Formats, as models write them (``detect_format`` picks one from the chat template;
``--tool-parser`` overrides it):

* ``hermes`` (Hermes, Qwen 2.5/3, SmolLM3 and tritonkit's preamble):
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, one per call.
* ``llama3_json`` (Llama 3.1-3.3): ``{"name": ..., "parameters": {...}}``, calls
  separated by ``;``, optionally after ``<|python_tag|>``.
* ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.

Hermes calls stream their ``arguments`` as the model writes them (each delta is the
next piece of the raw JSON text, so the pieces concatenate to the final string); the
other two formats are buffered and sent whole when the output ends. Text around calls
is ``content``; a call naming a function the request did not offer is left as content.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .http_errors import bad_request

ToolFormat = Literal["hermes", "llama3_json", "mistral"]
TOOL_FORMATS: tuple[ToolFormat, ...] = ("hermes", "llama3_json", "mistral")
MAX_TOOLS = 128  # as OpenAI
# Calls' JSON as json.dumps writes it (the engine's guided_json default, constraints.py):
# free whitespace lets small models loop on newlines until max_tokens.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # OpenAI's function names (and '.')

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_TAG = "[TOOL_CALLS]"

# tritonkit's instructions for a model whose chat template knows no tools (Qwen 2.5's words).
HERMES_PREAMBLE = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class Tool:
    """One function a request offers."""

    name: str
    description: str | None
    parameters: dict[str, Any]  # a JSON schema of the arguments object

    def spec(self) -> dict[str, Any]:
        """The OpenAI form chat templates take (``tools=[...]``)."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """``none``, ``auto`` or ``required``, and the named function ``required`` forces."""

    mode: Literal["none", "auto", "required"]
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode == "required"


def parse_tools(raw: Sequence[Any]) -> list[Tool]:
    """The request's ``tools``.

    Raises:
        APIError: 400 naming the first bad tool.
    """
    if len(raw) > MAX_TOOLS:
        raise bad_request(f"tools has {len(raw)} entries; at most {MAX_TOOLS}", "tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(item, dict) or item.get("type") != "function":
            raise bad_request(f'{where} must be {{"type": "function", "function": {{...}}}}', where)
        function = item.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"{where}.function must be an object", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise bad_request(
                f"{where}.function.name must be 1-64 letters, digits, '_', '-' or '.', "
                f"got {name!r}",
                f"{where}.function.name",
            )
        if any(t.name == name for t in tools):
            raise bad_request(f"{where}: two tools are named {name!r}", f"{where}.function.name")
        params = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise bad_request(
                f"{where}.function.parameters must be a JSON schema object",
                f"{where}.function.parameters",
            )
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise bad_request(f"{where}.function.description must be a string", where)
        tools.append(Tool(name, description, params))
    return tools


def parse_tool_choice(raw: Any, tools: Sequence[Tool]) -> ToolChoice:
    """The request's ``tool_choice`` (default: ``auto`` with tools, ``none`` without).

    Raises:
        APIError: 400 for an unknown mode or function, or a choice without tools.
    """
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if raw in ("none", "auto", "required"):
        if raw != "none" and not tools:
            raise bad_request(f"tool_choice {raw!r} needs tools", "tool_choice")
        return ToolChoice(raw)
    name = None
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise bad_request(
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if not any(t.name == name for t in tools):
        raise bad_request(f"tool_choice names {name!r}, which is not in tools", "tool_choice")
    return ToolChoice("required", name)


def detect_format(template_source: str) -> tuple[ToolFormat, bool]:
    """The tool-call format a chat template teaches, and whether it renders ``tools``.

    A template that never mentions ``tools`` gets tritonkit's Hermes preamble instead.
    """
    native = bool(re.search(r"\btools\b", template_source))
    if MISTRAL_TAG in template_source:
        return "mistral", native
    if PYTHON_TAG in template_source or ("ipython" in template_source and native):
        return "llama3_json", native
    return "hermes", native


# ---- the prompt ---------------------------------------------------------------------


def prompt_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool], native: bool
) -> list[dict[str, Any]]:
    """The messages for the chat template.

    ``native``: the template renders ``tools`` and tool messages itself; assistant
    ``tool_calls`` get their ``arguments`` as objects, as Hugging Face templates expect.
    Otherwise the tools become a Hermes preamble in the system message, assistant calls
    ``<tool_call>`` text and tool results ``<tool_response>`` user turns.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        m = dict(message)
        calls = m.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list)
            and all(
                isinstance(c, dict)
                and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str)
                for c in calls
            )
        ):
            raise bad_request(
                f"messages[{i}].tool_calls must be a list of "
                '{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}',
                f"messages[{i}].tool_calls",
            )
        if native:
            if isinstance(calls, list):
                m["tool_calls"] = [_with_object_arguments(c) for c in calls]
            out.append(m)
            continue
        if m.get("role") == "assistant" and isinstance(calls, list):
            text = "\n".join(_hermes_call_text(c) for c in calls)
            m["content"] = "\n".join(p for p in (m.get("content") or "", text) if p)
            m.pop("tool_calls")
        elif m.get("role") == "tool":
            m = {"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n"
                 "</tool_response>"}  # fmt: skip
        out.append(m)
    if not native and tools:
        preamble = HERMES_PREAMBLE.format(tools="\n".join(json.dumps(t.spec()) for t in tools))
        if out and out[0].get("role") == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{preamble}"}
        else:
            out.insert(0, {"role": "system", "content": preamble})
    return out


def _with_object_arguments(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = dict(call["function"])
    if isinstance(function.get("arguments"), str):
        with contextlib.suppress(json.JSONDecodeError):  # else the text, as it came
            function["arguments"] = json.loads(function["arguments"])
    return {**call, "function": function}


def _hermes_call_text(call: Any) -> str:
    function = call.get("function", {}) if isinstance(call, dict) else {}
    arguments = _with_object_arguments(call).get("function", {}).get("arguments", {})
    body = json.dumps({"name": function.get("name"), "arguments": arguments})
    return f"{HERMES_OPEN}\n{body}\n{HERMES_CLOSE}"


# ---- forcing a call -----------------------------------------------------------------


def forcing_grammar(
    tools: Sequence[Tool], choice: ToolChoice, fmt: ToolFormat, parallel: bool = True
) -> str:
    """A Lark grammar (llguidance's dialect, ``%json`` for the schemas) whose every
    sentence is a valid call in ``fmt``: of ``choice.name``, or of any tool
    (``required``; with ``parallel``, up to one call per offered tool: a small model
    that is not trained for tools otherwise repeats its call until ``max_tokens``)."""
    chosen = [t for t in tools if choice.name in (None, t.name)]
    key = "parameters" if fmt == "llama3_json" else "arguments"
    bodies = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, key: t.parameters},
            "required": ["name", key],
            "additionalProperties": False,
        }
        for t in chosen
    ]
    call: dict[str, Any] = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
    call["x-guidance"] = JSON_STYLE  # llguidance's %json options for this schema
    more = len(chosen) - 1 if parallel and choice.name is None else 0  # calls after the first
    if fmt == "mistral":  # [TOOL_CALLS] is a special token: the parser takes a bare array
        array = {"type": "array", "items": call, "minItems": 1, "maxItems": more + 1}
        return f"start: %json {json.dumps(array)}"
    if fmt == "llama3_json":
        repeat = f' ("; " call){{0,{more}}}' if more else ""
        return f"start: call{repeat}\ncall: %json {json.dumps(call)}"
    repeat = f' ("\\n" call){{0,{more}}}' if more else ""
    return (
        f"start: call{repeat}\n"
        f'call: "{HERMES_OPEN}\\n" body "\\n{HERMES_CLOSE}"\n'
        f"body: %json {json.dumps(call)}"
    )


# ---- parsing the output -------------------------------------------------------------


@dataclass
class ToolCall:
    """One call as it is being parsed; ``arguments`` is the text sent so far."""

    index: int
    id: str
    name: str
    arguments: str = ""

    def as_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Delta:
    """One piece of a streamed message: content text, or a call's opening or arguments."""

    content: str | None = None
    call: ToolCall | None = None  # the call this delta belongs to
    opens: bool = False  # the call's first delta: id, type and name
    arguments: str = ""  # the next piece of the call's arguments

    def as_openai(self) -> dict[str, Any]:
        """The ``delta`` object of a chat completion chunk."""
        if self.call is None:
            return {"content": self.content or ""}
        if self.opens:
            item: dict[str, Any] = {
                "index": self.call.index,
                "id": self.call.id,
                "type": "function",
                "function": {"name": self.call.name, "arguments": self.arguments},
            }
        else:
            item = {"index": self.call.index, "function": {"arguments": self.arguments}}
        return {"tool_calls": [item]}


_HERMES_HEAD = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_DECODER = json.JSONDecoder()


@dataclass
class ToolCallParser:
    """Splits a model's output into content and tool calls, incrementally.

    ``feed`` takes each new piece of text and returns the deltas it completes;
    ``finish`` returns the rest. ``content`` and ``calls`` hold the whole message.
    """

    fmt: ToolFormat
    tool_names: frozenset[str]
    max_calls: int | None = None  # calls past this many are dropped (neither call nor text)
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    _buffer: str = ""
    _in_call: bool = False  # hermes: inside <tool_call>...</tool_call>
    _call_text: str = ""
    _open: ToolCall | None = None  # hermes: the call whose arguments are streaming
    _args_start: int = 0  # where the arguments begin in _call_text
    _blank: str = ""  # whitespace after a call, sent only if text (not a call) follows
    _decided: bool = False  # llama3_json / mistral: whether the output was classified
    _calls_pending: bool = False  # ... as calls (parsed when it ends)

    def feed(self, text: str) -> list[Delta]:
        self._buffer += text
        if self.fmt == "hermes":
            return self._hermes(final=False)
        return self._buffered(final=False)

    def finish(self) -> list[Delta]:
        if self.fmt == "hermes":
            return self._hermes(final=True)
        return self._buffered(final=True)

    # -- hermes: <tool_call> blocks, arguments streamed -----------------------------------

    def _hermes(self, final: bool) -> list[Delta]:
        out: list[Delta] = []
        while True:
            if not self._in_call:
                i = self._buffer.find(HERMES_OPEN)
                if i < 0:
                    keep = 0 if final else _partial_suffix(self._buffer, HERMES_OPEN)
                    self._content(self._buffer[: len(self._buffer) - keep], out)
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return out
                self._content(self._buffer[:i], out)
                self._blank = ""  # whitespace between two calls is no content
                self._buffer = self._buffer[i + len(HERMES_OPEN) :]
                self._in_call, self._call_text, self._open = True, "", None
                continue
            j = self._buffer.find(HERMES_CLOSE)
            if j < 0 and not final:
                keep = _partial_suffix(self._buffer, HERMES_CLOSE)
                self._call_text += self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                self._stream_arguments(out)
                return out
            end = len(self._buffer) if j < 0 else j
            self._call_text += self._buffer[:end]
            self._buffer = self._buffer[end + (0 if j < 0 else len(HERMES_CLOSE)) :]
            self._in_call = False
            self._close_hermes_call(out)
            if j < 0:
                return out

    def _stream_arguments(self, out: list[Delta]) -> None:
        if self._open is None:
            head = _HERMES_HEAD.match(self._call_text)
            if head is None or head.end() == len(self._call_text):
                return  # the arguments' first character is still to come
            name = _json_string(head.group(1))
            if name not in self.tool_names or self._full:
                return  # not an offered function (content), or one call too many
            self._open = self._new_call(name)
            self._args_start = head.end()
            out.append(Delta(call=self._open, opens=True))
        text = self._call_text[self._args_start :]
        if not text.startswith("{"):  # a JSON string or null: sent whole when it closes
            return
        try:
            _value, end = _DECODER.raw_decode(text)
        except json.JSONDecodeError:
            end = len(text)  # still inside the arguments: all of it is theirs
        except (ValueError, RecursionError):  # JSON Python refuses: a huge number, deep nesting
            end = len(text)
        sent = len(self._open.arguments)
        if end > sent:
            piece = text[sent:end]
            self._open.arguments += piece
            out.append(Delta(call=self._open, arguments=piece))

    def _close_hermes_call(self, out: list[Delta]) -> None:
        self._stream_arguments(out)
        call = self._open
        obj = _json_object(self._call_text)
        if call is not None and not call.arguments:  # arguments that were not an object
            args = obj.get("arguments") if obj else None
            call.arguments = args if isinstance(args, str) else _dumps(args or {})
            out.append(Delta(call=call, arguments=call.arguments))
        if call is None:  # no head matched while streaming: parse it whole
            name = obj.get("name") if obj else None
            args = obj.get("arguments", obj.get("parameters")) if obj else None
            if isinstance(name, str) and name in self.tool_names and self._full:
                return  # a call past parallel_tool_calls: false is dropped
            if not isinstance(name, str) or name not in self.tool_names or args is None:
                self._content(f"{HERMES_OPEN}{self._call_text}{HERMES_CLOSE}", out)
                return
            call = self._new_call(name)
            call.arguments = args if isinstance(args, str) else _dumps(args)
            out.append(Delta(call=call, opens=True, arguments=call.arguments))
        self._open = None

    # -- llama3_json / mistral: decided at the first characters, parsed at the end ------

    def _buffered(self, final: bool) -> list[Delta]:
        out: list[Delta] = []
        if not self._decided:
            head = self._buffer.lstrip()
            markers = (PYTHON_TAG, "{") if self.fmt == "llama3_json" else (MISTRAL_TAG, "[")
            undecided = not head or any(len(head) < len(m) and m.startswith(head) for m in markers)
            if undecided and not final:
                return out  # nothing yet, or a marker's first characters: wait for more
            self._decided = True
            self._calls_pending = any(head.startswith(m) for m in markers)
        if not self._calls_pending:
            self._content(self._buffer, out)
            self._buffer = ""
            return out
        if not final:
            return out
        calls = _parse_calls(self._buffer, self.fmt)
        if calls is None or any(name not in self.tool_names for name, _ in calls):
            self._content(self._buffer, out)
        else:
            for name, args in calls[: self.max_calls]:
                call = self._new_call(name)
                call.arguments = args if isinstance(args, str) else _dumps(args)
                out.append(Delta(call=call, opens=True, arguments=call.arguments))
        self._buffer = ""
        return out

    # -- shared ------------------------------------------------------------------------

    def _content(self, text: str, out: list[Delta]) -> None:
        if self.calls and not text.strip():  # after a call: held until we know what follows
            self._blank += text
            return
        text, self._blank = self._blank + text, ""
        if text:
            self.content += text
            out.append(Delta(content=text))

    @property
    def _full(self) -> bool:
        return self.max_calls is not None and len(self.calls) >= self.max_calls

    def _new_call(self, name: str) -> ToolCall:
        call = ToolCall(len(self.calls), f"call_{uuid.uuid4().hex[:24]}", name)
        self.calls.append(call)
        return call


def _dumps(value: Any) -> str:
    """``value`` as JSON text (``str`` of it if Python cannot write it back)."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return str(value)


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _json_string(escaped: str) -> str:
    try:
        return str(json.loads(f'"{escaped}"'))
    except (ValueError, RecursionError):
        return escaped


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):  # not JSON, or JSON Python refuses
        return None
    return value if isinstance(value, dict) else None


def _parse_calls(text: str, fmt: ToolFormat) -> list[tuple[str, Any]] | None:
    """(name, arguments) per call of a llama3_json or mistral output; None: not calls."""
    text = text.strip()
    for tag in (PYTHON_TAG, MISTRAL_TAG):
        if text.startswith(tag):
            text = text[len(tag) :].strip()
    key = "parameters" if fmt == "llama3_json" else "arguments"
    items: list[Any] = []
    pos = 0
    try:
        while pos < len(text):
            value, pos = _DECODER.raw_decode(text, pos)
            items.extend(value if isinstance(value, list) else [value])
            while pos < len(text) and text[pos] in " \t\r\n;,":
                pos += 1
    except (ValueError, RecursionError):  # not JSON, or JSON Python refuses
        return None
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        args = item.get(key, item.get("arguments", item.get("parameters")))
        if args is None:
            return None
        calls.append((item["name"], args))
    return calls or None


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request's output is read: the format, the offered names, and the
    grammar that forces a call (None: the model chooses)."""

    fmt: ToolFormat
    names: frozenset[str]
    grammar: str | None = None
    parallel: bool = True  # False: the first call only (``parallel_tool_calls: false``)

    def parser(self) -> ToolCallParser:
        return ToolCallParser(self.fmt, self.names, max_calls=None if self.parallel else 1)
