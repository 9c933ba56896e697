"""The engine's side of structured outputs, logprobs and the sampling set, without a
server: the parser's checks, the sampler's definitions, the grammar cache and a
constrained request's life (its mask, its EOS, its end), on the tiny model's real
byte-level tokenizer with llguidance."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import numpy as np
import pytest

from tritonkit.core.params import RequestError, parse_request
from tritonkit.model_repository.runtime.constraints import Grammars
from tritonkit.model_repository.runtime.generation import GenerationRequest, Output, coalesce
from tritonkit.model_repository.runtime.sampling import Sampler, log_softmax, top_logprobs

EOS = 2


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tritonkit.export import tiny

    return tiny.build_tokenizer()


@pytest.fixture(scope="module")
def grammars(tokenizer: Any) -> Grammars:
    return Grammars(tokenizer.backend_tokenizer.to_str(), len(tokenizer), [EOS])


def _request(tokenizer: Any, grammars: Grammars | None, **inputs: Any) -> GenerationRequest:
    arrays: dict[str, np.ndarray] = {"text_input": np.array([b"say it:"], np.object_)}
    for name, value in inputs.items():
        if isinstance(value, list):
            arrays[name] = np.array([v.encode() for v in value], np.object_)
        elif isinstance(value, str):
            arrays[name] = np.array([value.encode()], np.object_)
        elif isinstance(value, bool):
            arrays[name] = np.array([value])
        elif isinstance(value, float):
            arrays[name] = np.array([value], np.float32)
        else:
            arrays[name] = np.array([value], np.int32)
    params = parse_request(arrays)
    guide = params.guide()
    from tokenizers import Tokenizer

    fast = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    return GenerationRequest(
        params, [5, 6, 7], fast, [EOS], 512, emit=lambda _o: None,
        constraint=grammars.constraint(*guide) if guide and grammars else None,
        token_bytes=grammars.token_bytes if grammars else None, vocab_size=len(tokenizer),
    )  # fmt: skip


def _run(seq: GenerationRequest, rng: np.random.Generator, eos_boost: float = 0.0) -> None:
    """Feed ``seq`` random logits (EOS raised by ``eos_boost``) until it finishes."""
    for _ in range(400):
        logits = rng.normal(size=seq.vocab_size).astype(np.float32)  # (vocab,)
        logits[EOS] += eos_boost
        if seq.accept(seq.next_token(logits)):
            return
    raise AssertionError("the request never finished")


# ---- the parser --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"presence_penalty": 2.5}, "presence_penalty must be in \\[-2, 2\\]"),
        ({"frequency_penalty": -3.0}, "frequency_penalty must be in \\[-2, 2\\]"),
        ({"min_p": 1.5}, "min_p must be in \\[0, 1\\]"),
        ({"logprobs": 21}, "logprobs must be in \\[0, 20\\]"),
        ({"logit_bias": '{"a": 1}'}, "logit_bias keys must be token ids"),
        ({"logit_bias": '{"3": 101}'}, "logit_bias\\[3\\] must be in \\[-100, 100\\]"),
        ({"logit_bias": "[1]"}, "logit_bias must be a JSON object"),
        ({"logit_bias": json.dumps({str(i): 1 for i in range(301)})}, "at most 300"),
        ({"guided_json": "{nope"}, "guided_json is not valid JSON"),
        ({"guided_json": "[1]"}, "guided_json must be a JSON schema"),
        ({"guided_regex": " "}, "guided_regex is empty"),
        ({"guided_regex": "a" * 70000}, "guided_regex holds 70000 characters"),
        ({"guided_choice": ["a", ""]}, "guided_choice must hold at least one string"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "at most one of"),
        ({"sampling_parameters": '{"guided_json": 3}'}, "sampling_parameters.guided_json"),
        ({"guided_json": "[" * 60000}, "guided_json is not usable JSON"),
        ({"sampling_parameters": "[" * 60000}, "sampling_parameters is not usable JSON"),
        ({"logit_bias": '{"' + "9" * 5000 + '": 1}'}, "logit_bias keys must be token ids"),
        ({"n": 0}, "n must be in \\[1, 64\\]"),
    ],
)
def test_the_parser_refuses_bad_values_in_one_line(inputs: dict[str, Any], message: str) -> None:
    arrays = {"text_input": np.array([b"hi"], np.object_)}
    for name, value in inputs.items():
        if isinstance(value, float):
            arrays[name] = np.array([value], np.float32)
        elif isinstance(value, int):
            arrays[name] = np.array([value], np.int32)
        elif isinstance(value, list):
            arrays[name] = np.array([v.encode() for v in value], np.object_)
        else:
            arrays[name] = np.array([value.encode()], np.object_)
    with pytest.raises(RequestError, match=message) as info:
        parse_request(arrays)
    assert "\n" not in str(info.value)


def test_sampling_parameters_take_the_new_settings_in_vllms_names() -> None:
    raw = json.dumps({"guided_json": {"type": "object"}, "min_p": "0.1", "logprobs": 2,
                      "logit_bias": {"5": -100}, "presence_penalty": 0.5})  # fmt: skip
    p = parse_request({"text_input": np.array([b"hi"], np.object_),
                       "sampling_parameters": np.array([raw.encode()], np.object_)})  # fmt: skip
    assert (p.guided_json, p.min_p, p.logprobs) == ('{"type":"object"}', 0.1, 2)
    assert (p.logit_bias, p.presence_penalty) == ({5: -100.0}, 0.5)


# ---- the sampler -------------------------------------------------------------------------


def test_penalties_are_openais_and_count_the_output_only() -> None:
    x = np.array([0.0, 3.0, 2.9, 2.0, 0.0], np.float32)
    s = Sampler(presence_penalty=0.2)
    assert s.next_token(x, [], prompt_ids=[1, 1, 1]) == 1  # the prompt is not penalised
    s.count(1)
    assert s.next_token(x, [1], prompt_ids=[]) == 2  # 3.0 - 0.2 < 2.9
    f = Sampler(frequency_penalty=0.4)
    for _ in range(3):
        f.count(1)  # 3.0 - 3 x 0.4 = 1.8: below 2.9 and 2.0
    assert f.next_token(x, [1, 1, 1], prompt_ids=[]) == 2
    f.count(2)  # 2.9 - 0.4 = 2.5 still beats 2.0
    assert f.next_token(x, [1, 1, 1, 2], prompt_ids=[]) == 2
    neg = Sampler(presence_penalty=-2.0)
    neg.count(3)  # a negative penalty favours what was said: 2.0 + 2 > 3.0
    assert neg.next_token(x, [3], prompt_ids=[]) == 3


def test_presence_penalty_is_once_per_token() -> None:
    x = np.array([0.0, 3.0, 2.9], np.float32)
    s = Sampler(presence_penalty=0.05)
    s.count(1)
    assert s.next_token(x, [1], []) == 1  # 2.95 > 2.9
    for _ in range(5):
        s.count(1)
    assert s.next_token(x, [1] * 6, []) == 1  # still 2.95: presence does not grow


def test_logit_bias_and_min_p() -> None:
    x = np.array([1.0, 0.5, 0.2, 0.0], np.float32)
    assert Sampler(logit_bias={0: -100.0}).next_token(x, [], []) == 1
    assert Sampler(logit_bias={3: 5.0}).next_token(x, [], []) == 3
    assert Sampler(logit_bias={99: 5.0}).next_token(x, [], []) == 0  # past the vocab: nothing
    p = np.exp(x) / np.exp(x).sum()
    keep = set(np.flatnonzero(p >= 0.7 * p.max()).tolist())
    drawn = {Sampler(temperature=1.0, min_p=0.7, seed=s).next_token(x, [], []) for s in range(200)}
    assert drawn == keep
    free = {Sampler(temperature=1.0, seed=s).next_token(x, [], []) for s in range(200)}
    assert free - keep


def test_a_mask_that_leaves_nothing_is_an_error() -> None:
    allowed = np.array([False, False, True])
    x = np.array([0.0, 1.0, 2.0], np.float32)
    assert Sampler().next_token(x, [], [], allowed) == 2
    with pytest.raises(ValueError, match="no token is left"):
        Sampler(min_tokens=1, eos_token_ids=[2]).next_token(x, [], [], allowed)


def test_log_softmax_and_top_logprobs() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=5000) * 8).astype(np.float32)
    ref = x.astype(np.float64) - np.log(np.exp(x.astype(np.float64) - x.max()).sum()) - x.max()
    lp = log_softmax(x)
    assert np.abs(lp - ref).max() < 1e-5
    top = top_logprobs(lp, 5)
    assert [i for i, _ in top] == list(np.argsort(-lp, kind="stable")[:5])
    assert top[0][0] == int(np.argmax(x))
    assert top_logprobs(lp, 0) == []
    ties = top_logprobs(np.zeros(4, np.float32), 2)
    assert [i for i, _ in ties] == [0, 1]


# ---- grammars and a constrained request --------------------------------------------------


def test_grammars_compile_once_and_fail_in_one_line(tokenizer: Any) -> None:
    local = Grammars(tokenizer.backend_tokenizer.to_str(), len(tokenizer), [EOS], cache_size=2)
    for _ in range(3):
        local.constraint("guided_regex", "[ab]+")
    assert local.compiled == 1
    local.constraint("guided_regex", "[cd]+")
    local.constraint("guided_choice", ["x", "y"])  # evicts [ab]+
    local.constraint("guided_regex", "[ab]+")
    assert local.compiled == 4
    for kind, value, words in (
        ("guided_regex", "[a-", "unclosed character class"),
        ("guided_json", '{"type": "objectx"}', "objectx"),
        ("guided_grammar", "start: nothing_here", "nothing_here"),
    ):
        with pytest.raises(RequestError, match=f"{kind} does not compile") as info:
            local.constraint(kind, value)
        assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("seed", range(4))
def test_constrained_outputs_match_whatever_the_logits(tokenizer, grammars, seed) -> None:
    rng = np.random.default_rng(seed)
    regex = _request(tokenizer, grammars, guided_regex="(cat|dog)s? [0-9]{2}", max_tokens=40)
    _run(regex, rng, eos_boost=8.0)  # EOS is the favourite, yet waits for the grammar
    assert re.fullmatch(r"(cat|dog)s? [0-9]{2}", regex.completion)
    assert regex.finish_reason == "stop"

    choice = _request(tokenizer, grammars, guided_choice=["yes", "no", "maybe"], max_tokens=20)
    _run(choice, rng)
    assert choice.completion in ("yes", "no", "maybe") and choice.finish_reason == "stop"

    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
              "maximum": 9}, "ok": {"type": "boolean"}}, "required": ["n", "ok"],
              "additionalProperties": False}  # fmt: skip
    obj = _request(tokenizer, grammars, guided_json=json.dumps(schema), max_tokens=60)
    _run(obj, rng)
    jsonschema.validate(json.loads(obj.completion), schema)
    assert ", " in obj.completion or ": " in obj.completion  # json.dumps' separators


def test_max_tokens_before_the_grammar_ends_is_length(tokenizer, grammars) -> None:
    seq = _request(tokenizer, grammars, guided_regex="[a-z]{30}", max_tokens=3)
    _run(seq, np.random.default_rng(0))
    assert seq.finish_reason == "length" and len(seq.generated) == 3


def test_an_unconstrained_request_pays_nothing_and_keeps_its_output(tokenizer, grammars) -> None:
    plain = _request(tokenizer, None, max_tokens=12, temperature=1.0, seed=5)
    assert plain.constraint is None
    again = _request(tokenizer, grammars, max_tokens=12, temperature=1.0, seed=5)
    for seq in (plain, again):
        _run(seq, np.random.default_rng(1))
    assert plain.generated == again.generated


def test_logprobs_entries_stream_and_add_up(tokenizer, grammars) -> None:
    outputs: list[Output] = []
    seq = _request(tokenizer, grammars, max_tokens=10, logprobs=3, stream=True, min_tokens=10)
    seq._emit = outputs.append
    rng = np.random.default_rng(3)
    chosen = []
    for _ in range(10):
        logits = rng.normal(size=len(tokenizer)).astype(np.float32)
        token = seq.next_token(logits)
        lp = log_softmax(logits)
        chosen.append((token, float(lp[token])))
        if seq.accept(token):
            break
    entries = [e for o in outputs for e in (o.logprobs or [])]
    assert [(e["logprob"]) for e in entries] == pytest.approx([c[1] for c in chosen])
    assert all(len(e["top_logprobs"]) == 3 for e in entries)
    assert all(e["top_logprobs"][0]["logprob"] >= e["logprob"] for e in entries)
    raw = b"".join(bytes(e["bytes"]) for e in entries)  # random tokens: not always UTF-8
    assert raw == bytes(grammars.tokenizer.decode_bytes(seq.generated))
    assert [e["token"] for e in entries] == [
        bytes(e["bytes"]).decode("utf-8", "replace") for e in entries
    ]
    merged = coalesce([("k", o) for o in outputs])
    assert len(merged) == 1 and merged[0][1].logprobs == entries


def test_logit_bias_past_the_vocabulary_is_refused(tokenizer, grammars) -> None:
    with pytest.raises(RequestError, match="logit_bias names token 99999"):
        _request(tokenizer, grammars, logit_bias='{"99999": 1}')
