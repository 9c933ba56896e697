"""The gateway's pure parts, no server: keys, chat templates, request bodies, error mapping.

The chat template is checked against the real ``transformers`` ``apply_chat_template``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonkit.client import ConnectionFailed, InvalidRequest, ModelNotFound, ServerStreamError
from tritonkit.client import Timeout as ClientTimeout
from tritonkit.errors import UsageError
from tritonkit.gateway import PLAIN_TEMPLATE, ChatTemplate, ChatTemplateError, GatewayConfig
from tritonkit.gateway.auth import KeyChecker, presented_key
from tritonkit.gateway.config import parse_pairs, read_api_keys
from tritonkit.gateway.http_errors import APIError, from_client_error
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
        (CompletionRequest, {"model": "llm", "prompt": "x", "n": 2}, "n"),
        (
            CompletionRequest,
            {"model": "llm", "prompt": "x", "presence_penalty": 0.5},
            "presence_penalty",
        ),
        (CompletionRequest, {"model": "llm", "prompt": "x", "logprobs": 1}, "logprobs"),
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
            "tools",
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
    cases = [
        (InvalidRequest("temperature must be >= 0 (0 means greedy), got -1.0"), 400, "temperature"),
        (InvalidRequest("stop_words must be non-empty strings, got ['']"), 400, "stop"),
        (InvalidRequest("internal error: boom"), 500, None),
        (ModelNotFound("Request for unknown model: 'x' is not found"), 404, "model"),
        (ConnectionFailed("cannot reach Triton at 127.0.0.1:1"), 503, None),
        (ClientTimeout("no answer from 127.0.0.1:1 within the timeout"), 504, None),
        (ServerStreamError("the stream ended before its final response"), 502, None),
    ]
    for exc, status, param in cases:
        error = from_client_error(exc)
        assert (error.status, error.param) == (status, param), exc
        assert error.body()["error"]["message"] == str(exc)  # Triton's message, kept
