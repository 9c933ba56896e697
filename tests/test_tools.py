"""Tool calls in the gateway, without a server: the prompt, the forcing grammar and the
parsers for each format, streamed and whole.

The parsers read what a template writes for an assistant's calls: each format's template
below renders a conversation with ``tool_calls`` through the gateway's own renderer, and
the parser must give the same calls back. The templates are written here from the
formats the model families document (no hub access on this machine), small but in their
shape: Hermes/Qwen ``<tool_call>`` blocks, Llama 3.1's ``<|python_tag|>`` JSON with
``parameters``, Mistral's ``[TOOL_CALLS]`` array.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tritonkit.client.chat import ChatTemplate
from tritonkit.gateway.http_errors import APIError
from tritonkit.gateway.rendering import TemplateRenderer
from tritonkit.gateway.tools import (
    HERMES_PREAMBLE,
    Tool,
    ToolCallParser,
    ToolChoice,
    detect_format,
    forcing_grammar,
    parse_tool_choice,
    parse_tools,
    prompt_messages,
)

HERMES = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>\n{% for t in tools %}"
    "{{ t | tojson }}\n{% endfor %}</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}"
    "{% endif %}{% for c in m.tool_calls or [] %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "\n</tool_call>{% if not loop.last %}\n{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{% for m in messages %}<|start_header_id|>{{ 'ipython' if m.role == 'tool' else m.role }}"
    "<|end_header_id|>\n\n{% if m.tool_calls %}<|python_tag|>{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
    "{% if not loop.last %}; {% endif %}{% endfor %}{% else %}{{ m.content }}{% endif %}"
    "<|eot_id|>{% endfor %}{% if tools %}{# tools go in the user turn #}{% endif %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MISTRAL = (
    "{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
    "{% elif m.tool_calls %}[TOOL_CALLS][{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "{% if not loop.last %}, {% endif %}{% endfor %}]</s>{% elif m.role == 'tool' %}"
    "[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]{% else %}{{ m.content }}</s>{% endif %}"
    "{% endfor %}{% if tools %}{% endif %}"
)
# Where each template's assistant turn begins and ends in the rendered prompt.
TURN = {
    "hermes": ("<|im_start|>assistant\n", "<|im_end|>"),
    "llama3_json": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "mistral": ("[/INST]", "</s>"),
}
TEMPLATES = {"hermes": HERMES, "llama3_json": LLAMA3, "mistral": MISTRAL}

WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", None, {"type": "object", "properties": {"tz": {"type": "string"}}})
CALLS = [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "S\\u00e3o Paulo"}'}},
    {"id": "call_2", "type": "function",
     "function": {"name": "get_time", "arguments": '{"tz": "Europe/Lisbon"}'}},
]  # fmt: skip


def _render(source: str, messages: list[dict[str, Any]], tools: list[Tool]) -> str:
    renderer = TemplateRenderer(2.0, 1 << 20)
    try:
        return asyncio.run(
            renderer.render(
                ChatTemplate(source), messages, add_generation_prompt=False,
                tools=[t.spec() for t in tools],
            )
        )  # fmt: skip
    finally:
        renderer.close()


def _assistant_text(fmt: str) -> str:
    """What the template wrote for the assistant's two calls."""
    messages = [{"role": "user", "content": "Weather in São Paulo, time in Lisbon?"},
                {"role": "assistant", "content": None, "tool_calls": CALLS}]  # fmt: skip
    source = TEMPLATES[fmt]
    format_, native = detect_format(source)
    assert (format_, native) == (fmt, True)
    prompt = _render(source, prompt_messages(messages, [WEATHER, TIME], native), [WEATHER, TIME])
    start, end = TURN[fmt]
    return prompt[prompt.rindex(start) + len(start) : prompt.rindex(end)]


def _parse(fmt: str, text: str, step: int) -> tuple[ToolCallParser, list[dict[str, Any]]]:
    parser = ToolCallParser(fmt, frozenset({"get_weather", "get_time"}))  # type: ignore[arg-type]
    deltas = []
    for i in range(0, len(text), step):
        deltas += parser.feed(text[i : i + step])
    deltas += parser.finish()
    return parser, [d.as_openai() for d in deltas]


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
@pytest.mark.parametrize("step", [1, 5, 10_000])
def test_each_parser_reads_back_what_its_template_wrote(fmt: str, step: int) -> None:
    text = _assistant_text(fmt)
    parser, deltas = _parse(fmt, text, step)
    assert parser.content.strip() == ""
    got = [(c.name, json.loads(c.arguments)) for c in parser.calls]
    want = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in CALLS]
    assert got == want
    # Streamed: each call opens once (index, id, name), then its arguments follow in
    # pieces that add up to the final string.
    for call in parser.calls:
        mine = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
        mine = [d for d in mine if d["index"] == call.index]
        assert mine[0]["id"] == call.id and mine[0]["function"]["name"] == call.name
        assert all("id" not in d for d in mine[1:])
        assert "".join(d["function"]["arguments"] for d in mine) == call.arguments
    if fmt == "hermes" and step == 1:  # Hermes streams its arguments as they come
        assert len(deltas) > 10


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
def test_plain_answers_stay_content(fmt: str) -> None:
    text = "The weather in Paris is sunny; {not a call} and [brackets] are fine."
    for step in (1, 7, 1000):
        parser, deltas = _parse(fmt, text, step)
        assert parser.calls == [] and parser.content == text
        assert "".join(d["content"] for d in deltas) == text


def test_hermes_keeps_text_around_calls_and_refuses_unoffered_functions() -> None:
    text = (
        "Let me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'
    )
    for step in (1, 3, 1000):
        parser, _ = _parse("hermes", text, step)
        assert [c.name for c in parser.calls] == ["get_weather"]
        assert parser.content.startswith("Let me check.")
        assert "rm_rf" in parser.content  # an unoffered function is text, never a call
    # Arguments before the name: parsed whole at the end.
    parser, _ = _parse(
        "hermes", '<tool_call>{"arguments": {"city": "Rome"}, "name": "get_weather"}</tool_call>', 2
    )
    assert [(c.name, c.arguments) for c in parser.calls] == [("get_weather", '{"city": "Rome"}')]
    # An unterminated block at the end of the output still counts when its JSON is whole.
    parser, _ = _parse("hermes", '<tool_call>\n{"name": "get_time", "arguments": {}}', 4)
    assert [c.name for c in parser.calls] == ["get_time"]


def test_a_template_without_tools_gets_the_hermes_preamble() -> None:
    smol = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    )
    fmt, native = detect_format(smol)
    assert (fmt, native) == ("hermes", False)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": CALLS[:1]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 30}'},
    ]
    prompt = _render(smol, prompt_messages(messages, [WEATHER], native), [])
    preamble = HERMES_PREAMBLE.format(tools=json.dumps(WEATHER.spec()))
    assert prompt.startswith(f"<|im_start|>system\nBe brief.\n\n{preamble}<|im_end|>")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "S\\u00e3o Paulo"}}' in (
        prompt
    )
    assert '<|im_start|>user\n<tool_response>\n{"temp": 30}\n</tool_response>' in prompt
    assert "<|im_start|>tool" not in prompt


def test_forcing_grammars_accept_their_formats_calls() -> None:
    """Every grammar compiles in llguidance and takes the calls its parser reads."""
    import llguidance

    from tritonkit.export import tiny

    tok = tiny.build_tokenizer()
    lltok = llguidance.LLTokenizer(
        tok.backend_tokenizer.to_str(), n_vocab=len(tok), eos_token=[tok.eos_token_id]
    )
    one = [{"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    for fmt, sample in (
        ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
                   "</tool_call>"),
        ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Oslo"}}'),
        ("mistral", '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]'),
    ):  # fmt: skip
        for choice in (ToolChoice("required"), ToolChoice("required", "get_weather")):
            grammar = forcing_grammar([WEATHER, TIME], choice, fmt)  # type: ignore[arg-type]
            matcher = llguidance.LLMatcher(lltok, llguidance.grammar_from("grammar", grammar))
            assert not matcher.is_error(), matcher.get_error()
            ids = lltok.tokenize_str(sample)
            assert matcher.try_consume_tokens(ids) == len(ids), (fmt, sample)
            assert matcher.is_accepting()
            parser, _ = _parse(fmt, sample, 3)
            assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == [
                (one[0]["function"]["name"], {"city": "Oslo"})
            ]
        # A named function refuses the other one; a wrong argument type is refused.
        named = forcing_grammar([WEATHER, TIME], ToolChoice("required", "get_time"), fmt)  # type: ignore[arg-type]
        matcher = llguidance.LLMatcher(lltok, llguidance.grammar_from("grammar", named))
        ids = lltok.tokenize_str(sample)
        assert matcher.try_consume_tokens(ids) < len(ids)
        bad = sample.replace('"Oslo"', "42")
        matcher = llguidance.LLMatcher(
            lltok, llguidance.grammar_from("grammar", forcing_grammar([WEATHER], ToolChoice(
                "required"), fmt))  # type: ignore[arg-type]
        )  # fmt: skip
        ids = lltok.tokenize_str(bad)
        assert matcher.try_consume_tokens(ids) < len(ids)


def test_parallel_calls_are_bounded_by_the_offered_tools() -> None:
    grammar = forcing_grammar([WEATHER, TIME], ToolChoice("required"), "hermes")
    assert '("\\n" call){0,1}' in grammar
    single = forcing_grammar([WEATHER, TIME], ToolChoice("required"), "hermes", parallel=False)
    assert "{0," not in single
    assert "{0," not in forcing_grammar([WEATHER], ToolChoice("required"), "hermes")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"type": "function", "function": {"name": "a b"}}], "letters, digits"),
        ([{"type": "retrieval"}], '"type": "function"'),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "JSON schema"),
        ([{"type": "function", "function": {"name": "f"}}] * 2, "two tools are named"),
    ],
)
def test_bad_tools_are_refused_naming_the_tool(raw: list[Any], message: str) -> None:
    with pytest.raises(APIError, match=message) as info:
        parse_tools(raw)
    assert info.value.status == 400 and info.value.param.startswith("tools[")


def test_tool_choice() -> None:
    tools = [WEATHER]
    assert parse_tool_choice(None, tools) == ToolChoice("auto")
    assert parse_tool_choice(None, []) == ToolChoice("none")
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert parse_tool_choice(named, tools) == ToolChoice("required", "get_weather")
    for bad in ("always", {"type": "function"}, {"type": "function", "function": {"name": "x"}}):
        with pytest.raises(APIError):
            parse_tool_choice(bad, tools)


def test_hostile_tool_calls_and_outputs_are_400s_or_text_never_500s() -> None:
    for calls in ([{"function": None}], ["x"], "x", [{"function": {"name": 3}}]):
        bad = [{"role": "assistant", "content": None, "tool_calls": calls}]
        with pytest.raises(APIError, match="tool_calls must be a list") as info:
            prompt_messages(bad, [WEATHER], native=False)
        assert info.value.status == 400 and info.value.param == "messages[0].tool_calls"
    # The model's own output: JSON Python refuses (a 5,000-digit number, deep nesting).
    for args in ("9" * 5000, "[" * 5000 + "]" * 5000):
        text = f'<tool_call>{{"name": "get_weather", "arguments": {args}}}</tool_call>'
        for fmt in ("hermes", "llama3_json", "mistral"):
            _parse(fmt, text, 7)  # no exception: a call or text, never a crash
    parser, _ = _parse("llama3_json", '{"name": "get_weather", "parameters": ' + "[" * 5000, 1)
    assert parser.calls == []


def test_streamed_text_after_calls_keeps_its_whitespace() -> None:
    text = (
        'Sure.<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\nDone <tool'
    )
    whole, _ = _parse("hermes", text, 10_000)
    for step in (1, 2, 3):
        streamed, deltas = _parse("hermes", text, step)
        assert streamed.content == whole.content == "Sure.\nDone <tool"
        assert "".join(d.get("content", "") for d in deltas) == whole.content
        assert len(streamed.calls) == 2


def test_arguments_written_as_a_json_string_or_null_arrive_as_openai_sends_them() -> None:
    for args, want in (('"{\\"city\\": \\"Oslo\\"}"', '{"city": "Oslo"}'), ("null", "{}")):
        text = f'<tool_call>{{"name": "get_weather", "arguments": {args}}}</tool_call>'
        for step in (1, 4, 1000):
            parser, deltas = _parse("hermes", text, step)
            assert [c.arguments for c in parser.calls] == [want], (args, step)
            pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas]
            assert "".join(pieces) == want


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    from tritonkit.gateway.tools import ToolPlan

    for fmt in ("hermes", "llama3_json", "mistral"):
        text = _assistant_text(fmt)  # two calls
        plan = ToolPlan(fmt, frozenset({"get_weather", "get_time"}), parallel=False)  # type: ignore[arg-type]
        for step in (1, 1000):
            parser = plan.parser()
            deltas = []
            for i in range(0, len(text), step):
                deltas += parser.feed(text[i : i + step])
            deltas += parser.finish()
            assert [c.name for c in parser.calls] == ["get_weather"], (fmt, step)
            assert parser.content.strip() == ""
            assert {d.call.index for d in deltas if d.call is not None} == {0}
