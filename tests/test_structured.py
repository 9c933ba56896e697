"""Structured outputs, tool calls, logprobs and the full sampling set on the real model.

SmolLM2-135M-Instruct served by a real Triton, called through the gateway with the
unmodified openai SDK and over the raw Triton interface with tritonkit's client. The
constraints are enforced in the engine, so even this small model's answers must parse;
logprobs and penalties are checked against an in-process greedy loop over the same
ONNX graph (``Loop``), token for token.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import openai
import pydantic
import pytest

from tritonkit.client import InvalidRequest, LLMClient
from tritonkit.core.layout import read_export_report
from tritonkit.gateway import GatewayConfig, GatewayServer
from tritonkit.model_repository.runtime.constraints import Grammars
from tritonkit.model_repository.runtime.engines import open_engine
from tritonkit.model_repository.runtime.sampling import log_softmax

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def gateway(smollm2_served: Any):
    with GatewayServer(GatewayConfig(triton_url=smollm2_served.grpc_url)) as gw:
        yield gw


@pytest.fixture(scope="module")
def oai(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="-", max_retries=0)


class Loop:
    """Greedy decoding in this process over the export's graph, one row: the reference
    for the served logprobs and penalties."""

    def __init__(self, export: Path) -> None:
        from tokenizers import Tokenizer

        report = read_export_report(export)
        self.engine = open_engine(str(export / report.model_file), report, 1, 1024)
        self.tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
        self.eos = set(json.loads((export / "generation.json").read_text())["eos_token_ids"])
        grammars = Grammars(
            (export / "tokenizer.json").read_text(), report.dims.vocab_size, sorted(self.eos)
        )
        self.ids: dict[bytes, int] = {}  # a token's bytes (as logprobs send them) -> its id
        for i in range(report.dims.vocab_size):
            self.ids.setdefault(grammars.token_bytes(i), i)

    def run(
        self, prompt: str, max_tokens: int, adjust: Any = None
    ) -> tuple[list[int], list[np.ndarray]]:
        """(tokens, the log-softmax of the raw logits before each), greedy after
        ``adjust(logits, generated)``."""
        row = self.engine.reserve()
        try:
            logits = self.engine.prefill(row, self.tokenizer.encode(prompt).ids)
            tokens: list[int] = []
            logprobs: list[np.ndarray] = []
            for _ in range(max_tokens):
                x = logits.astype(np.float32)
                logprobs.append(log_softmax(x))
                if adjust is not None:
                    x = adjust(x.copy(), tokens)
                token = int(np.argmax(x))
                if token in self.eos:
                    break
                tokens.append(token)
                logits = self.engine.decode([row], [token])[0]
            return tokens, logprobs
        finally:
            self.engine.release(row)


@pytest.fixture(scope="module")
def loop(smollm2_export: Path) -> Loop:
    return Loop(smollm2_export)


# ---- structured outputs through the openai SDK -------------------------------------------


class Capital(pydantic.BaseModel):
    country: str
    city: str
    coastal: bool
    # Bounded: the schema's limits are enforced too (unbounded, this small model's greedy
    # number can run on as "1111..." until max_tokens: a model's loop, not the grammar's).
    population_millions: int = pydantic.Field(ge=0, le=100)


def test_the_sdks_parse_returns_a_pydantic_object(oai):
    completion = oai.chat.completions.parse(
        model="smol",
        messages=[{"role": "user", "content": "Describe the capital of France as JSON."}],
        response_format=Capital,
        max_tokens=120,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Capital)
    assert choice.message.parsed.country and choice.message.parsed.city


def test_json_object_mode_answers_a_json_object(oai):
    reply = oai.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Give me a person's name and age."}],
        response_format={"type": "json_object"},
        max_tokens=100,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_a_schema_cut_by_max_tokens_ends_with_length(oai):
    reply = oai.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Describe Paris."}],
        response_format={"type": "json_schema", "json_schema": {
            "name": "c", "schema": Capital.model_json_schema()}},
        max_tokens=4,
        temperature=0,
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 4


# ---- tool calls ---------------------------------------------------------------------------


def _arguments_match(name: str, arguments: str) -> None:
    schema = {"get_weather": WEATHER, "get_time": TIME}[name]["function"]["parameters"]
    jsonschema.validate(json.loads(arguments), schema)


def test_required_forces_a_valid_call(oai):
    reply = oai.chat.completions.create(
        model="smol", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
        max_tokens=80, temperature=0,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    calls = choice.message.tool_calls
    assert calls and all(c.id.startswith("call_") and c.type == "function" for c in calls)
    for call in calls:
        _arguments_match(call.function.name, call.function.arguments)


def test_a_named_function_is_the_one_called(oai):
    reply = oai.chat.completions.create(
        model="smol", messages=ASK, tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=60, temperature=0,
    )  # fmt: skip
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_time"]
    _arguments_match("get_time", calls[0].function.arguments)


def test_a_streamed_call_sends_its_arguments_in_pieces(oai):
    params: dict[str, Any] = {
        "model": "smol", "messages": ASK, "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 60, "temperature": 0,
    }  # fmt: skip
    whole = oai.chat.completions.create(**params).choices[0].message.tool_calls[0]
    pieces: list[str] = []
    opened: list[Any] = []
    finish = None
    for chunk in oai.chat.completions.create(**params, stream=True):
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or ():
            assert call.index == 0
            if call.id is not None:
                opened.append(call)
            pieces.append(call.function.arguments or "")
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert len(opened) == 1 and opened[0].function.name == "get_weather"
    assert len([p for p in pieces if p]) > 2  # streamed as the model wrote it
    assert "".join(pieces) == whole.function.arguments
    _arguments_match("get_weather", "".join(pieces))


def test_a_tool_result_goes_back_through_the_template(oai):
    first = oai.chat.completions.create(
        model="smol", messages=ASK, tools=[WEATHER], tool_choice="required",
        max_tokens=60, temperature=0,
    ).choices[0].message  # fmt: skip
    call = first.tool_calls[0]
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    reply = oai.chat.completions.create(
        model="smol", messages=messages, tools=[WEATHER], tool_choice="none",
        max_tokens=40, temperature=0,
    )  # fmt: skip
    assert reply.choices[0].message.content and reply.choices[0].message.tool_calls is None


# ---- logprobs -----------------------------------------------------------------------------


def test_logprobs_are_the_models_log_softmax(oai, smollm2_served, loop):
    prompt = "The capital of France is"
    tokens, expected = loop.run(prompt, 8)
    reply = oai.completions.create(
        model="smol", prompt=prompt, max_tokens=8, temperature=0, logprobs=5
    )
    lp = reply.choices[0].logprobs
    assert lp is not None and len(lp.token_logprobs) == len(tokens)
    for i, token in enumerate(tokens):
        assert lp.token_logprobs[i] == pytest.approx(float(expected[i][token]), abs=1e-4)
        best = max(lp.top_logprobs[i].items(), key=lambda kv: kv[1])
        assert best[0] == lp.tokens[i]  # greedy: the chosen token is the top one
        assert len(lp.top_logprobs[i]) == 5
    assert "".join(lp.tokens) == reply.choices[0].text
    # Over the raw interface: the same entries.
    with LLMClient(smollm2_served.grpc_url, model="smol") as client:
        raw = client.generate(prompt, max_tokens=8, logprobs=5, exclude_input_in_output=True)
    assert [e["logprob"] for e in raw.logprobs] == pytest.approx(lp.token_logprobs, abs=1e-6)


def test_chat_logprobs_stream_with_their_tokens(oai):
    params = {"model": "smol", "messages": ASK, "max_tokens": 12, "temperature": 0,
              "logprobs": True, "top_logprobs": 3}  # fmt: skip
    whole = oai.chat.completions.create(**params).choices[0]
    content = whole.logprobs.content
    assert content and "".join(e.token for e in content) == whole.message.content
    for entry in content:
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    streamed = [
        e for chunk in oai.chat.completions.create(**params, stream=True)
        for e in ((chunk.choices[0].logprobs.content or []) if chunk.choices[0].logprobs else [])
    ]  # fmt: skip
    assert [e.token for e in streamed] == [e.token for e in content]


# ---- penalties, bias, min_p ---------------------------------------------------------------


def _served_ids(smollm2_served: Any, loop: Loop, prompt: str, **params: Any) -> list[int]:
    with LLMClient(smollm2_served.grpc_url, model="smol") as client:
        result = client.generate(prompt, exclude_input_in_output=True, logprobs=0, **params)
    ids = [loop.ids[bytes(e["bytes"])] for e in result.logprobs]
    assert loop.tokenizer.decode(ids) == result.text
    return ids


@pytest.mark.parametrize(("presence", "frequency"), [(1.5, 0.0), (0.0, 0.7), (-0.5, 1.0)])
def test_penalties_follow_openais_definition(smollm2_served, loop, presence, frequency):
    prompt = "List the days of the week, then list them again:"

    def penalised(x: np.ndarray, generated: list[int]) -> np.ndarray:
        ids, counts = np.unique(np.array(generated, dtype=np.int64), return_counts=True)
        x[ids] -= frequency * counts + presence * (counts > 0)
        return x

    plain, _ = loop.run(prompt, 40)
    expected, _ = loop.run(prompt, 40, penalised)
    assert expected != plain  # the penalty changes this output
    got = _served_ids(smollm2_served, loop, prompt, max_tokens=40, presence_penalty=presence,
                      frequency_penalty=frequency)  # fmt: skip
    assert got == expected


def test_logit_bias_bans_and_forces_tokens(smollm2_served, loop):
    prompt = "The capital of France is"
    plain, _ = loop.run(prompt, 6)
    banned = _served_ids(smollm2_served, loop, prompt, max_tokens=6,
                         logit_bias={plain[0]: -100})  # fmt: skip
    assert plain[0] not in banned
    forced = loop.tokenizer.token_to_id("Ġbanana") or loop.tokenizer.encode(" banana").ids[0]
    got = _served_ids(smollm2_served, loop, prompt, max_tokens=3, logit_bias={forced: 100})
    assert got[0] == forced


def test_min_p_keeps_sampling_to_the_likely_tokens(smollm2_served, loop):
    prompt = "My favourite animal is the"
    _, logprobs = loop.run(prompt, 1)
    p = np.exp(logprobs[0] / 1.5)  # min_p applies after the temperature, as vLLM's
    allowed = set(np.flatnonzero(p >= 0.2 * p.max()).tolist())

    def firsts(**params: Any) -> set[int]:
        return {
            _served_ids(smollm2_served, loop, prompt, max_tokens=1, temperature=1.5, seed=s,
                        **params)[0]
            for s in range(12)
        }  # fmt: skip

    assert firsts(min_p=0.2) <= allowed
    assert firsts() - allowed  # without it, the same seeds draw unlikely tokens too


# ---- the raw interface and hostile constraints --------------------------------------------


def test_choice_and_regex_over_the_raw_interface(smollm2_served):
    with LLMClient(smollm2_served.grpc_url, model="smol") as client:
        choice = client.chat(
            [{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
            guided_choice=["yes", "no"], max_tokens=10,
        )  # fmt: skip
        assert choice.text in ("yes", "no") and choice.finish_reason == "stop"
        date = client.generate(
            "Today's date is", guided_regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}", max_tokens=20,
            exclude_input_in_output=True,
        )  # fmt: skip
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", date.text)
        grammar = client.generate(
            "Answer:", guided_grammar='start: "x" NUMBER\nNUMBER: /[1-9][0-9]?/',
            max_tokens=10, exclude_input_in_output=True,
        )  # fmt: skip
        assert re.fullmatch(r"x[1-9][0-9]?", grammar.text)


def test_a_bad_schema_fails_alone_while_others_stream(smollm2_served, oai):
    def stream() -> tuple[str | None, int]:
        with LLMClient(smollm2_served.grpc_url, model="smol") as client:
            r = client.generate("Once upon a time", on_text=lambda _p: None, max_tokens=48,
                                min_tokens=48)  # fmt: skip
        return r.finish_reason, r.num_output_tokens or 0

    with cf.ThreadPoolExecutor(3) as pool:
        running = [pool.submit(stream) for _ in range(2)]
        with pytest.raises(openai.BadRequestError) as bad:
            oai.chat.completions.create(
                model="smol", messages=ASK, max_tokens=8,
                response_format={"type": "json_schema", "json_schema": {
                    "name": "x", "schema": {"type": "object", "properties": {"a": {
                        "type": "nonsense"}}}}},
            )  # fmt: skip
        with (
            LLMClient(smollm2_served.grpc_url, model="smol") as client,
            pytest.raises(InvalidRequest, match="guided_regex does not compile"),
        ):
            client.generate("x", guided_regex="[a-", max_tokens=4)
        assert [f.result(timeout=120) for f in running] == [("length", 48)] * 2
    message = bad.value.body["message"]  # type: ignore[index]
    assert "guided_json does not compile" in message and "\n" not in message
    assert bad.value.body["param"] == "response_format"  # type: ignore[index]


def test_constraints_and_logprobs_over_http_and_the_unary_twin(smollm2_served):
    """Triton's generate extension (JSON in and out) and the non-decoupled twin carry the
    list input and the JSON output as gRPC does."""
    question = [{"role": "user", "content": "Pick a colour."}]
    with LLMClient(smollm2_served.grpc_url, model="smol") as grpc:
        ref = grpc.chat(question, guided_choice=["red", "green", "blue"], logprobs=2)
    assert ref.text in ("red", "green", "blue") and ref.logprobs
    with LLMClient(smollm2_served.http_url, protocol="http", model="smol") as http:
        for kwargs in ({}, {"on_text": lambda _p: None}):
            got = http.chat(question, guided_choice=["red", "green", "blue"], logprobs=2, **kwargs)
            assert (got.text, got.finish_reason) == (ref.text, "stop")
            assert [e["token"] for e in got.logprobs] == [e["token"] for e in ref.logprobs]
    with LLMClient(smollm2_served.http_url, protocol="http", model="smol_sync") as unary:
        got = unary.chat(question, guided_choice=["red", "green", "blue"], logprobs=2)
    assert got.text == ref.text and len(got.logprobs) == len(ref.logprobs)


def test_auto_tool_choice_streams_what_it_answers_whole(oai):
    """With ``auto`` the model chooses; whatever it writes, the streamed parser gives the
    same message as the whole one."""
    params: dict[str, Any] = {"model": "smol", "messages": ASK, "tools": [WEATHER, TIME],
                              "max_tokens": 60, "temperature": 0}  # fmt: skip
    whole = oai.chat.completions.create(**params).choices[0]
    content, calls, finish = "", {}, None
    for chunk in oai.chat.completions.create(**params, stream=True):
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or ():
            name, args = calls.get(call.index, ("", ""))
            calls[call.index] = (name + (call.function.name or ""),
                                 args + (call.function.arguments or ""))  # fmt: skip
        finish = choice.finish_reason or finish
    assert finish == whole.finish_reason
    assert [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []] == [
        calls[i] for i in sorted(calls)
    ]
    assert content.strip() == (whole.message.content or "").strip()


def test_tools_too_large_for_a_grammar_are_refused_naming_tools(oai):
    big = [{"type": "function", "function": {"name": f"f{i}", "parameters": {
        "type": "object", "properties": {f"p{j}": {"type": "string", "description": "x" * 40}
                                         for j in range(20)}}}} for i in range(100)]  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="offer fewer or smaller tools"):
        oai.chat.completions.create(
            model="smol", messages=ASK, tools=big, tool_choice="required", max_tokens=8
        )
