"""The pure runtime modules the entry model imports: params, sampling, detok, stop.

No server and no network: tokenizers are trained here from short corpora. The
SentencePiece-style ones (Metaspace "▁", byte fallback) are the case where decoding a
token alone loses its leading space and splits characters, so the detokenizer tests
would fail on a naive per-token decode (``test_naive_decode_fails_...`` proves it).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tritonkit.core.params import (
    DEFAULT_MAX_TOKENS,
    MAX_STOP_CHARS,
    MAX_STOP_WORDS,
    RequestError,
    RequestSettings,
    parse_request,
    resolve_max_new_tokens,
)
from tritonkit.model_repository.runtime.detok import IncrementalDetokenizer
from tritonkit.model_repository.runtime.sampling import Sampler, _top_p
from tritonkit.model_repository.runtime.stop import StopMatcher

# ------------------------------------------------------------------------------ params


def b(text: str | bytes, shape: tuple[int, ...] = (1,)) -> np.ndarray:
    """A BYTES tensor as Triton delivers it: an object array of bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return np.array([raw], dtype=object).reshape(shape)


def req(**inputs: Any) -> dict[str, np.ndarray]:
    """Inputs with a prompt; keyword values are already numpy arrays."""
    return {"text_input": b("Hello"), **inputs}


def sp(**keys: Any) -> np.ndarray:
    return b(json.dumps(keys))


def test_defaults_from_prompt_only() -> None:
    p = parse_request({"text_input": b("Hello", (1, 1))})
    assert p == RequestSettings(prompt="Hello")
    assert (p.max_tokens, p.temperature, p.top_k, p.top_p, p.seed, p.stop) == (
        None,
        0.0,
        0,
        1.0,
        None,
        [],
    )


def test_every_tensor_parsed_with_triton_dtypes() -> None:
    p = parse_request(
        req(
            max_tokens=np.array([[10]], np.int32),
            min_tokens=np.array([2], np.int32),
            stream=np.array([[True]]),
            exclude_input_in_output=np.array([True]),
            temperature=np.array([0.7], np.float32),
            top_k=np.array([40], np.int32),
            top_p=np.array([0.9], np.float32),
            seed=np.array([2**64 - 1], np.uint64),
            repetition_penalty=np.array([1.1], np.float32),
            stop_words=np.array([b"\n\n", b"User:"], dtype=object),
            absent=None,
        )
    )
    assert (p.max_tokens, p.min_tokens, p.stream, p.exclude_input_in_output) == (10, 2, True, True)
    assert p.temperature == pytest.approx(0.7) and p.top_p == pytest.approx(0.9)
    assert (p.top_k, p.seed, p.stop) == (40, 2**64 - 1, ["\n\n", "User:"])
    assert p.repetition_penalty == pytest.approx(1.1)
    assert isinstance(p.max_tokens, int) and isinstance(p.stream, bool)


def test_tensorrt_llm_aliases() -> None:
    p = parse_request(req(min_length=np.array([3], np.int32), random_seed=np.array([7], np.uint64)))
    assert (p.min_tokens, p.seed) == (3, 7)
    same = req(min_tokens=np.array([3], np.int32), min_length=np.array([3], np.int32))
    assert parse_request(same).min_tokens == 3
    with pytest.raises(RequestError, match="min_tokens and min_length are aliases"):
        parse_request(req(min_tokens=np.array([3]), min_length=np.array([4])))


def test_sampling_parameters_json_and_precedence() -> None:
    p = parse_request(
        req(sampling_parameters=sp(temperature=0.5, top_k=-1, max_tokens=5, stop="###", seed=3))
    )
    assert (p.temperature, p.top_k, p.max_tokens, p.stop, p.seed) == (0.5, 0, 5, ["###"], 3)
    # Explicit tensors win over the JSON, key by key; aliases count as explicit.
    p = parse_request(
        req(
            sampling_parameters=sp(temperature=0.5, max_tokens=5, stop=["a", "b"], min_tokens=1),
            temperature=np.array([0.0], np.float32),
            stop_words=np.array([b"c"], dtype=object),
            min_length=np.array([2], np.int32),
        )
    )
    assert (p.temperature, p.max_tokens, p.stop, p.min_tokens) == (0.0, 5, ["c"], 2)
    # JSON null means "use the default".
    assert parse_request(req(sampling_parameters=sp(max_tokens=None, seed=None))).max_tokens is None


def test_empty_optional_tensors_are_absent() -> None:
    p = parse_request(req(stop_words=np.array([], dtype=object), max_tokens=np.zeros(0, np.int32)))
    assert (p.stop, p.max_tokens) == ([], None)


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    # (id, inputs, a fragment the one-line message must contain)
    ("missing prompt", {}, "text_input is required"),
    ("empty prompt", {"text_input": b("")}, "text_input is empty"),
    ("no prompt array", {"text_input": np.array([], dtype=object)}, "text_input is required"),
    ("blank prompt", {"text_input": b("  \n\t")}, "text_input is empty"),
    ("two prompts", {"text_input": np.array([b"a", b"b"], dtype=object)}, "text_input must hold"),
    ("prompt not utf8", {"text_input": b(b"caf\xe9")}, "text_input is not valid UTF-8"),
    ("prompt not bytes", {"text_input": np.array([1], np.int32)}, "text_input must be a string"),
    ("max_tokens 0", req(max_tokens=np.array([0], np.int32)), "max_tokens must be >= 1, got 0"),
    ("max_tokens float", req(sampling_parameters=sp(max_tokens=1.5)), "max_tokens must be an int"),
    ("max_tokens bool", req(sampling_parameters=sp(max_tokens=True)), "max_tokens must be an int"),
    ("min_tokens < 0", req(min_tokens=np.array([-1], np.int32)), "min_tokens must be >= 0"),
    ("min_length < 0", req(min_length=np.array([-1], np.int32)), "min_length must be >= 0"),
    (
        "min > max",
        req(max_tokens=np.array([2], np.int32), min_tokens=np.array([3], np.int32)),
        "min_tokens must be <= max_tokens",
    ),
    ("temperature < 0", req(temperature=np.array([-1.0])), "temperature must be >= 0"),
    ("temperature hot", req(sampling_parameters=sp(temperature="hot")), "temperature must be a"),
    ("temperature nan", req(temperature=np.array([np.nan], np.float32)), "temperature must be a"),
    ("top_p 0", req(top_p=np.array([0.0], np.float32)), "top_p must be in (0, 1]"),
    ("top_p > 1", req(sampling_parameters=sp(top_p=1.5)), "top_p must be in (0, 1]"),
    ("top_k -2", req(top_k=np.array([-2], np.int32)), "top_k must be >= 0"),
    ("penalty 0", req(repetition_penalty=np.array([0.0])), "repetition_penalty must be > 0"),
    ("seed < 0", req(seed=np.array([-1], np.int64)), "seed must be in [0, 2**64 - 1]"),
    ("random_seed big", req(sampling_parameters=sp(seed=2**64)), "seed must be in [0, 2**64"),
    ("stream int", req(stream=np.array([1], np.int32)), "stream must be a boolean"),
    ("stop empty", req(stop_words=np.array([b"ok", b""], dtype=object)), "stop_words must be"),
    (
        "too many stops",
        req(stop_words=np.array([b"x%d" % i for i in range(MAX_STOP_WORDS + 1)], dtype=object)),
        f"at most {MAX_STOP_WORDS}",
    ),
    ("stop not utf8", req(stop_words=np.array([b"\xff"], dtype=object)), "stop_words is not val"),
    (
        "stop too long",
        req(stop_words=np.array([b"ok", b"y" * (MAX_STOP_CHARS + 1)], dtype=object)),
        f"string of {MAX_STOP_CHARS + 1} characters; at most {MAX_STOP_CHARS}",
    ),
    ("stop json int", req(sampling_parameters=sp(stop=5)), "sampling_parameters.stop must be"),
    ("stop json list", req(sampling_parameters=sp(stop=["a", 1])), "sampling_parameters.stop mu"),
    ("json malformed", req(sampling_parameters=b("{temperature: 1}")), "not valid JSON"),
    ("json list", req(sampling_parameters=b("[1]")), "must be a JSON object, got list"),
    ("json unknown", req(sampling_parameters=sp(ignore_eos=True)), "unknown key(s) 'ignore_eos'"),
    ("scalar shape", req(max_tokens=np.array([1, 2], np.int32)), "max_tokens must hold one value"),
]


@pytest.mark.parametrize(
    ("inputs", "fragment"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request_is_one_clear_line(inputs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(inputs)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    assert isinstance(info.value, ValueError)


def test_unknown_key_message_lists_accepted_keys() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(req(sampling_parameters=sp(temprature=1.0, best_of=2)))
    message = str(info.value)
    assert "'best_of', 'temprature'" in message
    assert "accepted keys: max_tokens, min_tokens, temperature, top_k, top_p" in message


def test_out_of_range_message_names_value_and_range() -> None:
    with pytest.raises(RequestError, match=r"^temperature must be >= 0 .*got -1\.0$"):
        parse_request(req(temperature=np.array([-1.0], np.float32)))
    with pytest.raises(RequestError, match=r"^sampling_parameters\.temperature must be a number"):
        parse_request(req(sampling_parameters=sp(temperature="hot")))


def test_numbers_sent_as_strings_are_accepted_like_vllm() -> None:
    # genai-perf --backend vllm sends {"max_tokens": "12"}; vLLM's backend accepts it.
    params = parse_request(req(sampling_parameters=sp(max_tokens="12", temperature="0.5")))
    assert params.max_tokens == 12 and params.temperature == 0.5
    with pytest.raises(RequestError, match="max_tokens must be an integer"):
        parse_request(req(sampling_parameters=sp(max_tokens="1.5")))


def test_resolve_max_new_tokens() -> None:
    p = RequestSettings(prompt="x")
    assert resolve_max_new_tokens(p, 10, 2048) == DEFAULT_MAX_TOKENS == 64
    assert resolve_max_new_tokens(p, 2000, 2048) == 48  # clamped to the room left
    p.max_tokens = 100
    assert resolve_max_new_tokens(p, 10, 2048) == 100
    assert resolve_max_new_tokens(p, 2047, 2048) == 1
    with pytest.raises(RequestError, match=r"^prompt is 2048 tokens; the model's context is 2048"):
        resolve_max_new_tokens(p, 2048, 2048)
    with pytest.raises(RequestError, match="no tokens"):
        resolve_max_new_tokens(p, 0, 2048)


# ---------------------------------------------------------------------------- sampling


def logits(vocab: int = 1000, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, vocab).astype(dtype)  # (V,)


def draws(sampler: Sampler, x: np.ndarray, n: int = 30) -> list[int]:
    return [sampler.next_token(x, [], []) for _ in range(n)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_greedy_is_argmax_and_leaves_logits_alone(dtype: Any) -> None:
    for seed in range(5):
        x = logits(seed=seed, dtype=dtype)
        before = x.copy()
        assert Sampler().next_token(x, [1, 2], [3]) == int(np.argmax(x))
        np.testing.assert_array_equal(x, before)


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    x = logits()
    first = draws(Sampler(temperature=1.0, seed=42), x)
    assert first == draws(Sampler(temperature=1.0, seed=42), x)
    assert first != draws(Sampler(temperature=1.0, seed=43), x)
    assert draws(Sampler(temperature=1.0), x) != draws(Sampler(temperature=1.0), x)
    # Another request drawing in between (same batch) does not shift this one's stream.
    a, other = Sampler(temperature=1.0, seed=42), Sampler(temperature=1.0, seed=42)
    interleaved = []
    for _ in range(30):
        interleaved.append(a.next_token(x, [], []))
        other.next_token(x, [], [])
    assert interleaved == first


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    for seed in range(5):
        x = logits(seed=seed)
        best = int(np.argmax(x))
        assert set(draws(Sampler(temperature=2.0, top_k=1, seed=seed), x)) == {best}
        assert set(draws(Sampler(temperature=2.0, top_p=1e-6, seed=seed), x)) == {best}


def test_top_k_and_top_p_bound_the_support() -> None:
    x = logits()
    top3 = set(np.argsort(-x)[:3].tolist())
    got = set(draws(Sampler(temperature=5.0, top_k=3, seed=0), x, 200))
    assert got == top3  # only those, and (at a high temperature) all of them
    p = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    got = set(draws(Sampler(temperature=1.0, top_p=0.8, seed=0), p, 200))
    assert got == {0, 1}


def test_top_p_on_a_large_flat_vocab_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(150_000)  # flat: the nucleus is most of the vocabulary
    probs /= probs.sum()
    keep = _top_p(probs, 0.9)
    order = np.argsort(-probs, kind="stable")
    n = int(np.searchsorted(np.cumsum(probs[order]), 0.9)) + 1
    assert len(keep) == n and set(keep.tolist()) == set(order[:n].tolist())


def test_sampling_follows_the_distribution() -> None:
    p = np.array([0.7, 0.2, 0.1], np.float32)
    counts = np.bincount(draws(Sampler(temperature=1.0, seed=1), np.log(p), 4000), minlength=3)
    np.testing.assert_allclose(counts / 4000, p, atol=0.03)


def test_repetition_penalty_changes_the_choice() -> None:
    x = np.array([2.0, 1.9, -1.0, -1.2], np.float32)
    assert Sampler().next_token(x, [], [0]) == 0
    assert Sampler(repetition_penalty=1.2).next_token(x, [], [0]) == 1  # 2.0/1.2 < 1.9
    assert Sampler(repetition_penalty=1.2).next_token(x, [1], [0]) == 0  # 1.9/1.2 < 2/1.2
    # Negative logits are multiplied, so a seen token gets less likely, not more.
    neg = np.array([-1.0, -1.1], np.float32)
    assert Sampler(repetition_penalty=1.2).next_token(neg, [0], []) == 1


def test_min_tokens_suppresses_eos() -> None:
    eos = 2
    x = np.array([0.0, 1.0, 5.0, 0.5], np.float32)
    for s in (
        Sampler(min_tokens=2, eos_token_ids=[eos]),
        Sampler(1.0, min_tokens=2, eos_token_ids=[eos], seed=0),
    ):
        assert all(s.next_token(x, [1] * n, []) != eos for n in range(2) for _ in range(20))
        assert Sampler(min_tokens=2, eos_token_ids=[eos]).next_token(x, [1, 1], []) == eos


def test_seeded_sampling_speed_on_a_150k_vocab() -> None:
    s = Sampler(temperature=0.8, top_p=0.95, seed=5, eos_token_ids=[2])
    x = logits(150_000)
    start = time.perf_counter()
    tokens = [s.next_token(x, list(range(50)), list(range(500))) for _ in range(20)]
    assert time.perf_counter() - start < 1.0  # about 2 ms a token on a laptop
    again = Sampler(temperature=0.8, top_p=0.95, seed=5, eos_token_ids=[2])  # same seed
    assert tokens[0] == again.next_token(x, list(range(50)), list(range(500)))
    with pytest.raises(ValueError, match="shape"):
        s.next_token(x[None], [], [])
    with pytest.raises(ValueError, match="NaN or inf"):  # a broken model must not hang
        s.next_token(np.full(10, np.nan, np.float32), [], [])
    near_one = Sampler(temperature=1.0, top_p=1 - 1e-12, seed=0)  # sums never quite reach it
    masked = np.array([0.0, 1.0, -np.inf, 2.0], np.float32)
    assert {near_one.next_token(masked, [], []) for _ in range(50)} == {0, 1, 3}


# ---------------------------------------------------------------------------- detok

SP_CORPUS = (
    """\
The quick brown fox jumps over the lazy dog. The quick brown fox jumps again.
Triton serves models over HTTP and gRPC; the response streams back token by token.
Hello world, hello again. naïve café résumé Grüße 京 こんにちは
""".splitlines()
    * 4
)


def _sentencepiece_like(llama2_decoder: bool) -> Tokenizer:
    """A Metaspace BPE with 256 byte-fallback tokens, like Llama-2 / Mistral.

    Characters the corpus lacks (🙂, 東, 🚀) are encoded as UTF-8 byte tokens, so one
    character spans several tokens.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(SP_CORPUS, trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    vocab.update({f"<0x{i:02X}>": len(vocab) + i for i in range(256)})
    spec["model"]["byte_fallback"] = True
    if llama2_decoder:  # Llama-2's tokenizer.json: replace, byte fallback, fuse, strip one space
        spec["decoder"] = json.loads(
            decoders.Sequence(
                [
                    decoders.Replace("▁", " "),
                    decoders.ByteFallback(),
                    decoders.Fuse(),
                    decoders.Strip(" ", 1, 0),
                ]
            ).__getstate__()
        )
    else:  # Mistral-style: byte fallback, then the Metaspace decoder
        spec["decoder"] = {
            "type": "Sequence",
            "decoders": [{"type": "ByteFallback"}, spec["decoder"]],
        }
    return Tokenizer.from_str(json.dumps(spec))


@pytest.fixture(scope="module", params=["byte-level", "metaspace", "llama2"])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    if request.param == "byte-level":
        from tritonkit.export import tiny

        return tiny.build_tokenizer().backend_tokenizer
    return _sentencepiece_like(llama2_decoder=request.param == "llama2")


@pytest.fixture(scope="module")
def metaspace() -> Tokenizer:
    return _sentencepiece_like(llama2_decoder=False)


def stream(tok: Tokenizer, prompt_ids: list[int], ids: list[int], **kw: Any) -> list[str]:
    """Every piece the detokenizer returns, flush last (empty pieces included)."""
    d = IncrementalDetokenizer(tok, prompt_ids, **kw)
    return [d.push(i) for i in ids] + [d.flush()]


TEXTS = [
    "café 🙂 東京",
    "Hello world, naïve résumé Grüße",
    "  two  spaces and\nnew lines\n\n",
    "こんにちは 🚀🚀 the lazy dog",
    "The quick brown fox",
]


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_decoded_text(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    pieces = stream(tokenizer, [], ids)
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_continue_the_prompt(tokenizer: Tokenizer, text: str) -> None:
    prompt = "Triton serves models over"
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    full = tokenizer.encode(f"{prompt} {text}", add_special_tokens=False).ids
    assert full[: len(prompt_ids)] == prompt_ids  # the test's premise: the prompt is a prefix
    generated = full[len(prompt_ids) :]
    joined = "".join(stream(tokenizer, prompt_ids, generated))
    assert joined == tokenizer.decode(full)[len(tokenizer.decode(prompt_ids)) :]
    assert joined == f" {text}"  # the space before the first word survives
    alone = tokenizer.decode(generated)
    assert joined == alone or joined == " " + alone  # Metaspace drops the first space alone


def test_metaspace_pieces_keep_their_leading_spaces(metaspace: Tokenizer) -> None:
    prompt_ids = metaspace.encode("The quick", add_special_tokens=False).ids
    generated = metaspace.encode("The quick brown fox jumps", add_special_tokens=False).ids[2:]
    assert [metaspace.id_to_token(i) for i in generated] == ["▁brown", "▁fox", "▁jumps"]
    assert stream(metaspace, prompt_ids, generated) == [" brown", " fox", " jumps", ""]


def test_naive_decode_fails_on_sentencepiece_tokenizers(metaspace: Tokenizer) -> None:
    """The join test is meaningful: decoding token by token breaks it on this tokenizer."""
    ids = metaspace.encode("Hello world 🙂", add_special_tokens=False).ids
    naive = [metaspace.decode([i]) for i in ids]
    assert "".join(naive) != metaspace.decode(ids)  # spaces lost: "Helloworld..."
    assert any("\ufffd" in piece for piece in naive)  # 🙂 is four byte tokens


def test_partial_characters_are_held_then_completed(metaspace: Tokenizer) -> None:
    ids = metaspace.encode("The quick 🙂", add_special_tokens=False).ids
    tokens = [metaspace.id_to_token(i) for i in ids]
    assert tokens == ["▁The", "▁quick", "▁", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert stream(metaspace, [], ids) == ["The", " quick", " ", "", "", "", "🙂", ""]
    # Generation cut mid-character: flush hands over what is there, like decode does.
    assert "".join(stream(metaspace, [], ids[:-1])) == metaspace.decode(ids[:-1])


def token_id(tok: Tokenizer, token: str) -> int:
    i = tok.token_to_id(token)
    assert i is not None, token
    return i


def random_ids(tok: Tokenizer, rng: random.Random) -> list[int]:
    """1 to 24 random ids, special ones included.

    Byte-level BPE takes any ids. A byte-fallback tokenizer gets its byte tokens only as
    whole UTF-8 characters: its decoder turns a run of byte tokens holding any invalid
    UTF-8 into one U+FFFD per byte, so a later bad byte would rewrite text already
    streamed (a documented limit, as in vLLM and TGI).
    """
    vocab = tok.get_vocab_size()
    if tok.token_to_id("<0x00>") is None:
        return [rng.randrange(vocab) for _ in range(rng.randrange(1, 25))]
    words = [i for i in range(vocab) if not str(tok.id_to_token(i)).startswith("<0x")]
    ids: list[int] = []
    length = rng.randrange(1, 25)
    while len(ids) < length:
        if rng.random() < 0.3:
            char = rng.choice("🙂東🚀é€")
            ids += [token_id(tok, f"<0x{byte:02X}>") for byte in char.encode()]
        else:
            ids.append(rng.choice(words))
    return ids


@pytest.mark.parametrize("with_prompt", [False, True])
def test_random_id_sequences_join_to_decode(tokenizer: Tokenizer, with_prompt: bool) -> None:
    rng = random.Random(0)
    prompt_ids = (
        tokenizer.encode("Hello world,", add_special_tokens=False).ids if with_prompt else []
    )
    for _ in range(150):
        ids = random_ids(tokenizer, rng)
        pieces = stream(tokenizer, prompt_ids, ids)
        full = tokenizer.decode(prompt_ids + ids)
        assert "".join(pieces) == full[len(tokenizer.decode(prompt_ids)) :], ids
        if "\ufffd" not in full:
            assert not any("\ufffd" in piece for piece in pieces)


def test_special_tokens_skipped_or_kept(tokenizer: Tokenizer) -> None:
    eos = token_id(tokenizer, "</s>")
    ids = tokenizer.encode("Hello world", add_special_tokens=False).ids
    seq = [*ids[:1], eos, *ids[1:], eos]
    assert "".join(stream(tokenizer, [eos], seq)) == tokenizer.decode(seq)
    kept = "".join(stream(tokenizer, [], seq, skip_special_tokens=False))
    assert kept == tokenizer.decode(seq, skip_special_tokens=False) and "</s>" in kept


def test_window_stays_bounded(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(" ".join(TEXTS) * 20, add_special_tokens=False).ids
    d = IncrementalDetokenizer(tokenizer, list(range(100)))
    longest = 0
    for i in ids:
        d.push(i)
        longest = max(longest, len(d.ids))
    assert longest <= 8, longest


# ---------------------------------------------------------------------------- stop


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out, stopped = "", False
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out += text
    return (out, True) if stopped else (out + matcher.flush(), False)


def test_stop_split_across_pieces_is_caught_and_excluded() -> None:
    m = StopMatcher(["\nUser:"])
    assert m.feed("Hello\nUs") == ("Hello", False)
    assert m.feed("er: next") == ("", True)
    assert m.feed("more") == ("", True)
    assert m.flush() == ""


def test_stop_inside_one_piece_and_earliest_of_many() -> None:
    assert StopMatcher(["END"]).feed("done END and more") == ("done ", True)
    assert StopMatcher(["b", "a"]).feed("xxaxb") == ("xx", True)


def test_held_text_is_flushed_without_a_match() -> None:
    m = StopMatcher(["###"])
    assert m.feed("a#") == ("a", False)
    assert m.feed("#") == ("", False)
    assert m.flush() == "##"


def test_partial_prefix_that_does_not_complete_is_released() -> None:
    m = StopMatcher(["#stop"])
    assert m.feed("ab#st") == ("ab", False)
    assert m.feed("ep") == ("#step", False)
    assert StopMatcher([]).feed("anything") == ("anything", False)
    with pytest.raises(ValueError, match="non-empty"):
        StopMatcher(["ok", ""])


def test_stop_matcher_agrees_with_find_on_random_splits() -> None:
    rng = random.Random(0)
    stops = ["#a", "bb#", "aab"]
    for _ in range(500):
        text = "".join(rng.choice("ab#") for _ in range(rng.randrange(0, 20)))
        cuts = sorted(rng.sample(range(len(text) + 1), rng.randrange(0, len(text) + 1)))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        expected = (text[: min(hits)], True) if hits else (text, False)
        assert feed_all(StopMatcher(stops), pieces) == expected, (text, pieces)


def test_detok_and_stop_together(metaspace: Tokenizer) -> None:
    prompt_ids = metaspace.encode("Say", add_special_tokens=False).ids
    ids = metaspace.encode(
        "Say the quick brown fox jumps over the lazy dog", add_special_tokens=False
    )
    d, m = IncrementalDetokenizer(metaspace, prompt_ids), StopMatcher([" lazy"])
    out, stopped = "", False
    for i in ids.ids[len(prompt_ids) :]:
        text, stopped = m.feed(d.push(i))
        out += text
        if stopped:
            break
    assert (out, stopped) == (" the quick brown fox jumps over the", True)


# ---- metrics buffer and responder thread -------------------------------------------------


class _Metric:
    def __init__(self) -> None:
        self.increments: list[float] = []
        self.sets: list[float] = []

    def increment(self, value: float) -> None:
        self.increments.append(value)

    def set(self, value: float) -> None:
        self.sets.append(value)


def test_metrics_are_gathered_and_sent_once_per_flush() -> None:
    from tritonkit.model_repository.runtime.metrics import COUNTERS, GAUGES, BufferedMetrics

    made: dict[str, tuple[str, _Metric]] = {}

    def factory(name: str, description: str, kind: str) -> _Metric:
        made[name] = (kind, _Metric())
        return made[name][1]

    metrics = BufferedMetrics(factory, flush_s=3600)  # flushed by hand below
    assert {n for n, _ in COUNTERS.values()} | {n for n, _ in GAUGES.values()} == set(made)
    for _ in range(100):
        metrics.add("generated", 2)
        metrics.set("batch", 3)
    metrics.set("batch", 5)
    assert made["tritonkit_generated_tokens_total"][1].increments == []  # nothing sent yet
    metrics.flush()
    assert made["tritonkit_generated_tokens_total"][1].increments == [200]  # one update
    assert made["tritonkit_running_batch_size"][1].sets == [5]  # the last value only
    metrics.close()
    assert made["tritonkit_running_batch_size"][0] == "gauge"


def test_responder_merges_queued_pieces_and_survives_a_failed_send() -> None:
    import threading

    from tritonkit.model_repository.runtime.generation import Output
    from tritonkit.model_repository.runtime.responder import Responder

    sent: list[tuple[str, Output]] = []
    errors: list[Exception] = []
    gate = threading.Event()

    def send(key: str, output: Output) -> None:
        gate.wait(5)  # hold the first send so the rest queue up behind it
        if key == "gone":
            raise ConnectionError("client went away")
        sent.append((key, output))

    responder = Responder(send, on_error=errors.append)
    responder.put("a", Output("first "))
    time.sleep(0.05)  # the thread takes "first" and blocks in send
    for piece in ("one ", "two ", "three"):
        responder.put("a", Output(piece))
    responder.put("gone", Output("lost"))
    responder.put("b", Output("done", final=True, finish_reason="stop"))
    gate.set()
    responder.close()
    texts = [(k, o.text) for k, o in sent]
    assert texts == [("a", "first "), ("a", "one two three"), ("b", "done")]
    assert len(errors) == 1 and "went away" in str(errors[0])


# ------------------------------------------------------------------- KV cache types


def _graph_with_past(path: Any, elem_type: int) -> None:
    """A decoder-shaped ONNX graph (one layer) whose past tensors are ``elem_type``."""
    import onnx
    from onnx import TensorProto, helper

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in
           ("input_ids", "attention_mask", "position_ids")]  # fmt: skip
    past = [helper.make_tensor_value_info(f"past_key_values.0.{k}", elem_type, ["b", 2, "p", 4])
            for k in ("key", "value")]  # fmt: skip
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s"])]
    outs += [helper.make_tensor_value_info(f"present.0.{k}", elem_type, ["b", 2, "p", 4])
             for k in ("key", "value")]  # fmt: skip
    nodes = [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)]
    nodes += [helper.make_node("Identity", [f"past_key_values.0.{k}"], [f"present.0.{k}"])
              for k in ("key", "value")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", ids + past, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_bfloat16_kv_cache_is_refused_by_name(tmp_path: Any) -> None:
    from onnx import TensorProto

    from tritonkit.core.layout import ExportReport
    from tritonkit.model_repository.runtime.decoder import OnnxDecoder
    from tritonkit.model_repository.runtime.engines import open_engine

    _graph_with_past(tmp_path / "f32.onnx", TensorProto.FLOAT)
    assert OnnxDecoder(str(tmp_path / "f32.onnx")).spec.kv_dtype is np.float32
    _graph_with_past(tmp_path / "bf16.onnx", TensorProto.BFLOAT16)
    with pytest.raises(ValueError, match=r"KV cache is tensor\(bfloat16\).*float16"):
        OnnxDecoder(str(tmp_path / "bf16.onnx"))

    dims = dict(num_layers=1, num_attention_heads=2, num_kv_heads=2, head_dim=4,
                hidden_size=8, vocab_size=16, max_positions=32)  # fmt: skip
    fused = {"passed": True, "graph": "fused", "dtype": "bfloat16", "dims": dims,
             "files": {"model": "model.onnx"}, "inputs": [], "outputs": []}  # fmt: skip
    with pytest.raises(ValueError, match="KV cache is bfloat16"):
        open_engine(str(tmp_path / "f32.onnx"), ExportReport.from_dict(fused), 2, 16)


# ---- the vLLM engine's mapping (vllm_params.py), without vLLM --------------------------


def test_vllm_sampling_settings_follow_the_request() -> None:
    from tritonkit.model_repository.runtime.vllm_params import sampling_kwargs, structured_kwargs

    p = parse_request(
        req(
            temperature=np.array([0.7], np.float32),
            top_k=np.array([5], np.int32),
            seed=np.array([9], np.uint64),
            stop_words=np.array([b"\n", b"."], np.object_),
            logprobs=np.array([3], np.int32),
            logit_bias=np.array([b'{"7": -100}'], np.object_),
            n=np.array([2], np.int32),
        )
    )
    kw = sampling_kwargs(p, 12)
    assert (kw["temperature"], kw["top_k"], kw["seed"], kw["n"]) == (pytest.approx(0.7), 5, 9, 2)
    assert kw["max_tokens"] == 12 and kw["stop"] == ["\n", "."]
    assert kw["logprobs"] == 3 and kw["logit_bias"] == {7: -100.0}
    assert kw["include_stop_str_in_output"] is False
    assert structured_kwargs(p) is None
    plain = sampling_kwargs(parse_request(req()), 4)
    assert plain["stop"] is None and "logprobs" not in plain and "logit_bias" not in plain
    schema = parse_request(req(guided_json=np.array([b'{"type": "object"}'], np.object_)))
    assert structured_kwargs(schema) == {
        "json": '{"type":"object"}',
        "disable_any_whitespace": True,
    }
    choice = parse_request(req(guided_choice=np.array([b"yes", b"no"], np.object_)))
    assert structured_kwargs(choice) == {"choice": ["yes", "no"]}


def test_vllm_logprobs_become_openai_entries() -> None:
    from types import SimpleNamespace as L

    from tritonkit.model_repository.runtime.vllm_params import logprob_entries

    positions = [
        {5: L(logprob=-0.1, rank=1, decoded_token=" Paris"), 6: L(logprob=-2.5, rank=2,
                                                                   decoded_token=" Lyon")},
        {9: L(logprob=-3.0, rank=4, decoded_token="é"), 1: L(logprob=-0.2, rank=1,
                                                            decoded_token="."),
         2: L(logprob=-1.9, rank=2, decoded_token="!")},
    ]  # fmt: skip
    entries = logprob_entries([5, 9], positions, top=2)
    assert [e["token"] for e in entries] == [" Paris", "é"]
    assert entries[1]["bytes"] == list("é".encode()) and entries[1]["logprob"] == -3.0
    assert [t["token"] for t in entries[0]["top_logprobs"]] == [" Paris", " Lyon"]
    assert [t["token"] for t in entries[1]["top_logprobs"]] == [".", "!"]  # by rank, top 2
    assert logprob_entries([5], None, 2) == []
