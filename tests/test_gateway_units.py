"""The gateway's pure parts, no server: keys, chat templates, request bodies, error mapping.

The chat template is checked against the real ``transformers`` ``apply_chat_template``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from tritonkit.client import ConnectionFailed, InvalidRequest, ModelNotFound, ServerStreamError
from tritonkit.client import Timeout as ClientTimeout
from tritonkit.errors import UsageError
from tritonkit.gateway import (
    PLAIN_TEMPLATE,
    ChatTemplate,
    ChatTemplateError,
    GatewayConfig,
    json_body,
)
from tritonkit.gateway.auth import KeyChecker, presented_key
from tritonkit.gateway.config import parse_pairs, read_api_keys
from tritonkit.gateway.connection import KeyLimiter
from tritonkit.gateway.http_errors import APIError, from_client_error
from tritonkit.gateway.rendering import TemplateRenderer
from tritonkit.gateway.schemas import ChatCompletionRequest, CompletionRequest, parse_body

MESSAGES = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hello 東京"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "And now?"},
]


# -- API keys ----------------------------------------------------------------------------


def test_keys_allow_only_the_configured_ones() -> None:
    checker = KeyChecker(["alpha-key", "beta-key"])
    assert checker.enabled
    assert checker.allows("alpha-key") and checker.allows("beta-key")
    for wrong in ("alpha", "alpha-key ", "", None, "gamma-key"):
        assert not checker.allows(wrong), wrong
    assert "alpha" not in repr(checker)  # keys never show up in logs or tracebacks
    open_door = KeyChecker([])
    assert not open_door.enabled and open_door.allows(None)


def test_presented_key_reads_bearer_and_azure_headers() -> None:
    assert presented_key({"authorization": "Bearer  k1 "}) == "k1"
    assert presented_key({"authorization": "bearer k2"}) == "k2"
    assert presented_key({"api-key": "k3"}) == "k3"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"authorization": "Bearer "}) is None
    assert presented_key({}) is None


def test_config_keeps_keys_out_of_its_repr_and_checks_settings(tmp_path: Path) -> None:
    config = GatewayConfig(api_keys=("s3cret",))
    assert "s3cret" not in repr(config)
    with pytest.raises(UsageError, match="max-concurrent"):
        GatewayConfig(max_concurrent=-1).check()
    with pytest.raises(UsageError, match="not a folder"):
        GatewayConfig(repository=tmp_path / "missing").check()
    with pytest.raises(UsageError, match="empty"):
        GatewayConfig(api_keys=(" ",)).check()


def test_pairs_and_key_files(tmp_path: Path) -> None:
    assert parse_pairs(["gpt-4o=llm", " a = b "], "--model-map") == {"gpt-4o": "llm", "a": "b"}
    for bad in (["llm"], ["=llm"], ["a=b", "a=c"]):
        with pytest.raises(UsageError, match="--model-map"):
            parse_pairs(bad, "--model-map")
    keys = tmp_path / "keys.txt"
    keys.write_text("# team A\nkey-one\n\n  key-two  \n")
    assert read_api_keys(keys) == ("key-one", "key-two")
    keys.write_text("# nothing\n")
    with pytest.raises(UsageError, match="holds no key"):
        read_api_keys(keys)
    with pytest.raises(UsageError, match="cannot read"):
        read_api_keys(tmp_path / "nope.txt")


# -- chat templates ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonkit.export import tiny

    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    tiny.build_tokenizer().save_pretrained(folder)
    return folder


def test_template_renders_like_transformers(tiny_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    template = ChatTemplate.from_dir(tiny_tokenizer_dir)
    assert not template.is_plain
    for prompt in (True, False):
        expected = reference.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=prompt
        )
        assert template.render(MESSAGES, add_generation_prompt=prompt) == expected


def test_template_from_tokenizer_config_with_special_tokens(tmp_path: Path) -> None:
    # An older layout: the template inside tokenizer_config.json, tokens as dicts.
    config = {
        "bos_token": {"content": "<|begin|>"},
        "eos_token": "<|end|>",
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {
                "name": "default",
                "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]"
                "{{ m.content | trim }}{{ eos_token }}{% endfor %}",
            },
        ],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    text = ChatTemplate.from_dir(tmp_path).render(MESSAGES[:2])
    assert text == "<|begin|>[system]Be terse.<|end|>[user]Hello 東京<|end|>"


def test_bos_the_tokenizer_adds_is_not_doubled(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<s>": 0, "</s>": 1, "[UNK]": 2, "user": 3, "hi": 4, "assistant": 5, ":": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.add_special_tokens(["<s>", "</s>"])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)]
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    (tmp_path / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }} {% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    template = ChatTemplate.from_dir(tmp_path)
    text = template.render([{"role": "user", "content": "hi"}])
    assert text == "user: hi assistant:"
    ids = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids
    assert ids.count(0) == 1 and ids[0] == 0  # exactly one BOS, the tokenizer's


def test_plain_template_is_the_fallback(tmp_path: Path) -> None:
    template = ChatTemplate.from_dir(tmp_path)  # a folder with no tokenizer files
    assert template.is_plain and template.source == PLAIN_TEMPLATE
    assert template.render(MESSAGES[:2]) == "system: Be terse.\nuser: Hello 東京\nassistant:"


def test_template_errors_and_the_sandbox() -> None:
    strict = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be user') }}"
        "{% endif %}ok"
    )
    with pytest.raises(ChatTemplateError, match="first message must be user"):
        strict.render(MESSAGES)
    assert strict.render(MESSAGES[1:]) == "ok"
    escape = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ChatTemplateError):
        escape.render(MESSAGES)
    namespace = ChatTemplate("{% set ns = namespace(_secret=1) %}{{ ns }}")
    with pytest.raises(ChatTemplateError):
        namespace.render(MESSAGES)
    with pytest.raises(UsageError, match="not valid jinja"):
        ChatTemplate("{% for %}")


# -- request bodies ----------------------------------------------------------------------


def test_completion_body_maps_to_the_model_inputs() -> None:
    body = parse_body(
        CompletionRequest,
        {
            "model": "llm",
            "prompt": ["Hello"],
            "max_tokens": 7,
            "temperature": 0,
            "top_p": 0.9,
            "seed": 3,
            "stop": "\n",
            "top_k": 5,
            "unknown_field": "ignored",
        },
    )
    assert body.text_prompt() == "Hello"
    assert body.generation_kwargs() == {
        "max_tokens": 7,
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 3,
        "stop": "\n",
        "top_k": 5,
        "exclude_input_in_output": True,
    }


def test_chat_body_prefers_max_completion_tokens_and_joins_text_parts() -> None:
    body = parse_body(
        ChatCompletionRequest,
        {
            "model": "llm",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "max_tokens": 5,
            "max_completion_tokens": 9,
        },
    )
    assert body.generation_kwargs()["max_tokens"] == 9
    assert body.messages[0].as_template_input() == {"role": "user", "content": "a\nb"}


@pytest.mark.parametrize(
    ("cls", "data", "param"),
    [
        (CompletionRequest, {"model": "llm", "prompt": "x", "n": 0}, "n"),
        (CompletionRequest, {"model": "llm", "prompt": "x", "n": 65}, "n"),
        (
            CompletionRequest,
            {"model": "llm", "prompt": "x", "presence_penalty": 2.5},
            "presence_penalty",
        ),
        (
            CompletionRequest,
            {"model": "llm", "prompt": "x", "frequency_penalty": -3},
            "frequency_penalty",
        ),
        (CompletionRequest, {"model": "llm", "prompt": "x", "min_p": 1.5}, "min_p"),
        (CompletionRequest, {"model": "llm", "prompt": "x", "logprobs": 21}, "logprobs"),
        (
            CompletionRequest,
            {"model": "llm", "prompt": "x", "logprobs": 1, "echo": True},
            "logprobs",
        ),
        (
            CompletionRequest,
            {"model": "llm", "prompt": "x", "guided_regex": "a", "guided_choice": ["a"]},
            "guided_choice",
        ),
        (CompletionRequest, {"model": "llm", "prompt": "x", "temperature": "hot"}, "temperature"),
        (CompletionRequest, {"model": "llm"}, "prompt"),
        (CompletionRequest, {"prompt": "x"}, "model"),
        (
            CompletionRequest,
            {"model": "llm", "prompt": "x", "stream_options": {}},
            "stream_options",
        ),
        (ChatCompletionRequest, {"model": "llm", "messages": []}, "messages"),
        (
            ChatCompletionRequest,
            {"model": "llm", "messages": [{"content": "x"}]},
            "messages.0.role",
        ),
        (
            ChatCompletionRequest,
            {"model": "llm", "messages": [{"role": "user"}], "tools": [{}]},
            "tools[0]",
        ),
        (
            ChatCompletionRequest,
            {"model": "llm", "messages": [{"role": "user"}], "top_logprobs": 2},
            "top_logprobs",
        ),
        (
            ChatCompletionRequest,
            {"model": "llm", "messages": [{"role": "user"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        (
            ChatCompletionRequest,
            {"model": "llm", "messages": [{"role": "user"}], "response_format": {"type": "xml"}},
            "response_format.type",
        ),
        (
            ChatCompletionRequest,
            {
                "model": "llm",
                "messages": [{"role": "user"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            },
            "response_format.json_schema.schema",
        ),
        (
            ChatCompletionRequest,
            {
                "model": "llm",
                "messages": [{"role": "user"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
        ),
        (
            ChatCompletionRequest,
            {
                "model": "llm",
                "messages": [{"role": "user"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "tool_choice",
        ),
        (
            ChatCompletionRequest,
            {"model": "llm", "messages": [{"role": "user"}], "tool_choice": "required"},
            "tool_choice",
        ),
        (
            ChatCompletionRequest,
            {
                "model": "llm",
                "messages": [{"role": "user"}],
                "tools": [{"type": "function", "function": {"name": "bad name!"}}],
            },
            "tools[0].function.name",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_parameter(cls: type, data: dict, param: str) -> None:
    with pytest.raises(APIError) as info:
        parse_body(cls, data)
    assert info.value.status == 400
    assert info.value.param == param
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_prompts_the_model_cannot_take() -> None:
    for prompt in ([1, 2, 3], ["a", "b"]):
        body = parse_body(CompletionRequest, {"model": "llm", "prompt": prompt})
        with pytest.raises(APIError, match="one string"):
            body.text_prompt()
    chat = parse_body(
        ChatCompletionRequest,
        {"model": "llm", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    )
    with pytest.raises(APIError, match="only text"):
        chat.messages[0].as_template_input()


# -- error mapping -----------------------------------------------------------------------


def test_client_errors_map_to_openai_statuses() -> None:
    kept = [
        (InvalidRequest("temperature must be >= 0 (0 means greedy), got -1.0"), 400, "temperature"),
        (InvalidRequest("stop_words must be non-empty strings, got ['']"), 400, "stop"),
        (InvalidRequest("prompt is 300 tokens; the model's context is 256 tokens"), 400, "prompt"),
        (InvalidRequest("sampling_parameters must be a JSON object, got list"), 400, None),
        (ModelNotFound("Request for unknown model: 'x' is not found"), 404, "model"),
    ]
    for exc, status, param in kept:
        error = from_client_error(exc, "rid-1")
        assert (error.status, error.param, error.detail) == (status, param, None), exc
        assert error.body()["error"]["message"] == str(exc)  # the model's words, kept
    # Triton's address stays in the log: the client learns what failed, not where.
    for exc, status in (
        (ConnectionFailed("cannot reach Triton at 127.0.0.1:1"), 503),
        (ClientTimeout("no answer from 127.0.0.1:1 within the timeout"), 504),
    ):
        error = from_client_error(exc, "rid-3")
        assert (error.status, error.detail) == (status, str(exc)), exc
        message = error.body()["error"]["message"]
        assert "127.0.0.1:1" not in message and "rid-3" in message
    hidden = [
        (InvalidRequest("internal error: boom at /opt/x.py"), 500, "internal_error"),
        (InvalidRequest("prefill failed: CUDA out of memory on gpu0"), 500, "internal_error"),
        (InvalidRequest("decoder failed: [ONNXRuntimeError] /models/llm/1/x.onnx"), 500, None),
        (ServerStreamError("the stream from 10.0.0.5:8001 ended early"), 502, "bad_gateway"),
    ]
    for exc, status, code in hidden:
        error = from_client_error(exc, "rid-2")
        assert error.status == status and error.detail == str(exc), exc
        assert error.code == (code or "internal_error")
        message = error.body()["error"]["message"]
        assert "rid-2" in message and str(exc) not in message and "/" not in message
        assert "detail" not in error.body()["error"]


# -- request bodies: bounds, Unicode, depth, length ---------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", 2**31),
        ("min_tokens", -1),
        ("top_k", -2),
        ("top_k", 2**31),
        ("seed", 2**64),
        ("seed", -1),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("top_p", 3.5e38),
        ("repetition_penalty", -1e39),
        ("presence_penalty", float("nan")),
        ("model", "m" * 257),
    ],
)
def test_numbers_are_bounded_to_the_model_inputs(field: str, value: object) -> None:
    with pytest.raises(APIError) as info:
        parse_body(CompletionRequest, {"model": "llm", "prompt": "x", field: value})
    assert info.value.status == 400 and info.value.param == field


def test_numbers_at_the_bounds_pass() -> None:
    body = parse_body(
        CompletionRequest,
        {"model": "llm", "prompt": "x", "max_tokens": 2**31 - 1, "seed": 2**64 - 1, "top_k": -1},
    )
    assert body.generation_kwargs()["seed"] == 2**64 - 1
    assert parse_body(CompletionRequest, {"model": "llm", "prompt": "x", "seed": 0}).seed == 0


def test_json_body_refuses_surrogates_and_depth() -> None:
    assert json_body.decode(b'{"a": ["\\ud83d\\ude00", 1, {"b": null}]}') == {
        "a": ["\U0001f600", 1, {"b": None}]
    }  # a surrogate *pair* is one valid character
    for raw, param in [
        (b'{"prompt": "x\\udc00"}', "prompt"),
        (b'{"messages": [{"content": [{"text": "\\ud800"}]}]}', "messages.0.content.0.text"),
        (b'{"\\ud800": 1}', None),
        (b"[" * 33 + b"]" * 33, "0" + ".0" * 31),
        (b"[" * 500 + b"]" * 500, "0" + ".0" * 31),
        (b"[" * 5000 + b"]" * 5000, None),  # json.loads' own recursion limit
        (b"[" * 200_000 + b"]" * 200_000, None),
        (b'{"a": 1', None),
        (b'{"a": "\xff"}', None),
        (b'{"a": 1' + b"0" * 5000 + b"}", None),
    ]:
        with pytest.raises(APIError) as info:
            json_body.decode(raw)
        assert info.value.status == 400 and info.value.param == param, raw[:40]
        assert "\n" not in info.value.message
        info.value.message.encode("utf-8")  # never itself unencodable
    assert json_body.decode(b"[" * 32 + b"]" * 32) is not None  # 32 levels are fine


def test_prompt_length_counts_every_message_string() -> None:
    chat = parse_body(
        ChatCompletionRequest,
        {
            "model": "llm",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a" * 10}]},
                {"role": "assistant", "content": "b" * 5, "name": "cc"},
            ],
        },
    )
    assert chat.prompt_chars() == 4 + 4 + 10 + 9 + 5 + 2  # roles, "text", texts, name
    chat.check_length(34)
    with pytest.raises(APIError) as info:
        chat.check_length(33)
    assert (info.value.param, info.value.code) == ("messages", "prompt_too_long")
    done = parse_body(CompletionRequest, {"model": "llm", "prompt": ["abc"]})
    assert done.prompt_chars() == 3
    with pytest.raises(
        APIError, match="the prompt holds 3 characters; this gateway takes at most 2"
    ):
        done.check_length(2)


# -- per-key limits ------------------------------------------------------------------------


def test_keys_are_matched_to_their_index_and_limited_per_key() -> None:
    checker = KeyChecker(["alpha-key", "beta-key"])
    assert checker.match("beta-key") == 1 and checker.match("alpha-key") == 0
    assert checker.match("gamma") is None and checker.match(None) is None
    limiter = KeyLimiter(2)
    a1, a2 = limiter.acquire(0), limiter.acquire(0)
    with pytest.raises(APIError) as info:
        limiter.acquire(0)
    assert info.value.status == 429 and "this API key" in info.value.message
    b = limiter.acquire(1)  # another key is not held back
    a1.release()
    a1.release()  # twice is harmless
    limiter.acquire(0).release()
    a2.release()
    b.release()
    assert limiter.active == {}
    assert KeyLimiter(0).acquire(0) is not None  # 0: no limit


def test_config_checks_the_new_limits(tmp_path: Path) -> None:
    for kwargs, match in [
        ({"max_body_bytes": 0}, "--max-body-bytes"),
        ({"max_prompt_chars": -1}, "--max-prompt-chars"),
        ({"template_timeout_s": 0}, "--template-timeout"),
        ({"template_max_chars": 10, "max_prompt_chars": 20}, "--template-max-chars"),
        ({"limit_concurrency": 100}, "--limit-concurrency"),
        ({"max_concurrent_per_key": 1}, "needs API keys"),
        ({"metrics_keys": ("",)}, "metrics key is empty"),
        ({"ssl_certfile": tmp_path / "c.pem"}, "go together"),
        ({"ssl_certfile": tmp_path / "c.pem", "ssl_keyfile": tmp_path / "k.pem"}, "no such file"),
    ]:
        with pytest.raises(UsageError, match=match):
            GatewayConfig(**kwargs).check()  # type: ignore[arg-type]
    assert GatewayConfig(limit_concurrency=0, max_concurrent=0).check()
    assert "mk" not in repr(GatewayConfig(metrics_keys=("mk",)))


def test_cli_reads_the_metrics_key_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonkit.cli import gateway_cmd

    parser = argparse.ArgumentParser()
    gateway_cmd.add_parser(parser.add_subparsers())
    monkeypatch.delenv("TRITONKIT_GATEWAY_API_KEY", raising=False)
    monkeypatch.setenv("TRITONKIT_GATEWAY_METRICS_KEY", "from-env")
    config = gateway_cmd.config_from_args(parser.parse_args(["gateway"]))
    assert config.metrics_keys == ("from-env",) and config.api_keys == ()
    keys = tmp_path / "metrics.key"
    keys.write_text("# scraper\nfrom-file\n")
    args = parser.parse_args(["gateway", "--metrics-key-file", str(keys), "--max-body-bytes", "9"])
    config = gateway_cmd.config_from_args(args)
    assert config.metrics_keys == ("from-file",) and config.max_body_bytes == 9
    keys.write_text("")
    with pytest.raises(UsageError, match=r"--metrics-key-file .* holds no key"):
        gateway_cmd.config_from_args(args)


# -- chat templates off the event loop -----------------------------------------------------


def test_bounded_renderer_renders_like_the_client(tiny_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    renderer = TemplateRenderer(timeout_s=5, max_chars=100_000)
    try:
        for template in (ChatTemplate.from_dir(tiny_tokenizer_dir), ChatTemplate.plain()):
            got = asyncio.run(renderer.render(template, MESSAGES))
            assert got == template.render(MESSAGES)
        expected = reference.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=True
        )
        assert asyncio.run(
            renderer.render(ChatTemplate.from_dir(tiny_tokenizer_dir), MESSAGES)
        ) == (expected)
    finally:
        renderer.close()


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("{% for i in range(messages[0].n) %}{% endfor %}", {"n": 10**6}, "Range too big"),
        ("{% for i in range(messages[0].n) %}{{ 'x' * 100 }}{% endfor %}", {"n": 99_999},
         "wrote more than 1000 characters"),
        ("{{ messages[0].content * messages[0].n }}", {"n": 10**12}, "wrote more than"),
        ("{{ messages[0].content | center(messages[0].n) }}", {"n": 10**9}, "a size of"),
        ("{{ 10 ** messages[0].n }}", {"n": 10**9}, "too large a number"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}, "recursed too deeply"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}{{ ns.s }}", {}, "wrote more than"),
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", {},
         "within 0.3 s"),
        ("{{ lipsum(3) }}", {}, "refused the messages"),  # no lorem ipsum
        ("{{ 1 / 0 }}", {}, "failed on the messages: division by zero"),
        ("{{ messages.__class__.__mro__ }}", {}, "refused the messages"),
    ],
)  # fmt: skip
def test_bounded_renderer_stops_hostile_templates(source: str, extra: dict, message: str) -> None:
    renderer = TemplateRenderer(timeout_s=0.3, max_chars=1000)
    try:
        with pytest.raises(ChatTemplateError, match=message):
            asyncio.run(renderer.render(ChatTemplate(source), [{**MESSAGES[1], **extra}]))
        assert asyncio.run(renderer.render(ChatTemplate.plain(), MESSAGES[:1])) == (
            "system: Be terse.\nassistant:"
        )  # the next rendering is fine
    finally:
        renderer.close()


def test_startup_warnings_name_what_is_exposed(tmp_path):
    from tritonkit.cli.gateway_cmd import startup_warnings

    open_config = GatewayConfig()
    assert startup_warnings(open_config, "127.0.0.1") == []
    found = " | ".join(startup_warnings(open_config, "0.0.0.0"))
    assert "no API key" in found and "/metrics" in found and "plain HTTP" in found
    keyed = GatewayConfig(api_keys=("k",), metrics_keys=("m",))
    found = " | ".join(startup_warnings(keyed, "10.0.0.4"))
    assert "plain HTTP" in found and "no API key" not in found and "/metrics" not in found
    keyed_only = " ".join(startup_warnings(GatewayConfig(api_keys=("k",)), "10.0.0.4"))
    assert "/metrics" not in keyed_only  # the API keys guard /metrics too
    assert "TRITON_ADMIN_KEY" in " ".join(startup_warnings(keyed, "127.0.0.1", True))
