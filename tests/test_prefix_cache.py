"""Automatic prefix caching: a finished request's KV row serves later prompts that start
the same way. In process, over the real fused engine (tiny-llama, then SmolLM2): the
output with the cache equals the output without it, token for token; rows are reused in
place or copied, evicted least recently used, and a cancelled request leaves a row the
next one can trust. Through Triton and the gateway: ``cached_tokens`` and the metrics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from tritonkit.core.layout import read_export_report
from tritonkit.core.params import parse_request
from tritonkit.export import main_export
from tritonkit.model_repository.runtime.engines import MIN_COPY_TOKENS, FusedEngine, open_engine
from tritonkit.model_repository.runtime.generation import GenerationRequest, Output
from tritonkit.model_repository.runtime.scheduler import Scheduler

SYSTEM = (
    "You are the assistant of a harbour office. Ships arrive at dawn and leave at dusk; "
    "every captain files a manifest, pays the mooring fee and signs the register. "
) * 6


class Runner:
    """Requests through a real scheduler over the export's engine."""

    def __init__(self, export: Path, context: int = 1024) -> None:
        self.tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
        self.eos = json.loads((export / "generation.json").read_text())["eos_token_ids"]
        self.report = read_export_report(export)
        self.path = str(export / self.report.model_file)
        self.context = context

    def scheduler(self, prefix_cache: bool = True, rows: int = 4, **kwargs: Any) -> Scheduler:
        engine = open_engine(self.path, self.report, rows, self.context, prefix_cache=prefix_cache)
        return Scheduler(engine, max_batch_size=rows, **kwargs)

    def request(self, prompt: str, tokens: int = 12, **hooks: Any) -> tuple[Any, list[Output]]:
        outputs: list[Output] = []
        fields = {
            "text_input": np.array([prompt.encode()], np.object_),
            "exclude_input_in_output": np.array([True]),
            "max_tokens": np.array([tokens], np.int32),
            "min_tokens": np.array([tokens], np.int32),
        }
        params = parse_request(fields)
        ids = self.tokenizer.encode(prompt).ids
        seq = GenerationRequest(params, ids, self.tokenizer, self.eos, self.context,
                                emit=outputs.append, **hooks)  # fmt: skip
        return seq, outputs

    def run(self, scheduler: Scheduler, prompt: str, tokens: int = 12) -> tuple[list[int], int]:
        """(generated ids, cached prompt tokens) of one request run alone."""
        seq, outputs = self.request(prompt, tokens)
        scheduler.submit(seq)
        drain(scheduler)
        assert outputs[-1].final and outputs[-1].error is None, outputs[-1]
        assert outputs[-1].cached_tokens == seq.cached_tokens
        return list(seq.generated), seq.cached_tokens


def drain(scheduler: Scheduler, limit: int = 2000) -> None:
    for _ in range(limit):
        if not scheduler.pending:
            return
        scheduler.run_once()
    raise AssertionError("the scheduler did not finish")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    out = tmp_path_factory.mktemp("prefix") / "export"
    return Runner(main_export("tiny-llama", out, graph="fused").output)


def _turns(first: str) -> list[str]:
    """A chat's prompts, each the whole conversation so far (as a chat app sends it)."""
    a = f"{SYSTEM}\nuser: {first}\nassistant:"
    b = f"{a} The manifest is filed.\nuser: And the fee?\nassistant:"
    c = f"{b} It is paid.\nuser: Who signs the register?\nassistant:"
    return [a, b, c]


@pytest.mark.parametrize("chunk", [16, 128])
def test_a_chat_reuses_its_history_and_answers_the_same(tiny: Runner, chunk: int) -> None:
    cold = tiny.scheduler(prefix_cache=False, prefill_chunk=chunk)
    warm = tiny.scheduler(prefill_chunk=chunk)
    for prompt in _turns("When do ships arrive?"):
        expected, none = tiny.run(cold, prompt)
        got, cached = tiny.run(warm, prompt)
        assert none == 0 and got == expected
    second, third = (len(tiny.tokenizer.encode(p).ids) for p in _turns("When do ships arrive?")[1:])
    assert second <= cached < third and cached % chunk != 0  # the match ends mid-chunk
    stats = warm.engine.stats  # type: ignore[attr-defined]
    assert (stats.hits, stats.misses) == (2, 1) and stats.cached_tokens >= 2 * len(SYSTEM) // 8


def test_a_running_rows_prefix_is_copied_into_a_free_row(tiny: Runner) -> None:
    alone = tiny.scheduler(prefix_cache=False)
    a, b = _turns("When do ships arrive?")[0], _turns("Where is the office?")[0]
    want_b, _ = tiny.run(alone, b)
    scheduler = tiny.scheduler()
    first, _out = tiny.request(a, tokens=40)
    scheduler.submit(first)
    for _ in range(3):  # the first request is prefilled and decoding: its row is busy
        scheduler.run_once()
    second, second_out = tiny.request(b)
    scheduler.submit(second)
    drain(scheduler)
    shared = len(tiny.tokenizer.encode(SYSTEM).ids)
    assert second.cached_tokens >= min(shared - 2, MIN_COPY_TOKENS)
    assert second.generated == want_b and second_out[-1].cached_tokens == second.cached_tokens


def test_rows_are_evicted_least_recently_used(tiny: Runner) -> None:
    scheduler = tiny.scheduler(rows=2)
    engine = scheduler.engine
    assert isinstance(engine, FusedEngine)
    prompts = [f"{word} " * 40 + "end" for word in ("alpha", "bravo", "charlie")]
    for p in prompts:  # alpha -> row 0, bravo -> row 1, charlie evicts alpha (older)
        assert tiny.run(scheduler, p)[1] == 0
    assert engine.stats.evictions == 1 and engine.stats.kept == 2
    assert tiny.run(scheduler, prompts[1])[1] > 0  # bravo is still kept
    assert tiny.run(scheduler, prompts[0])[1] == 0  # alpha was evicted
    # The cache never makes a request wait: two new prompts take both rows at once.
    x, _ = tiny.request("x " * 30)
    y, _ = tiny.request("y " * 30)
    scheduler.submit(x)
    scheduler.submit(y)
    scheduler.run_once()
    assert scheduler.pending == 2 and not scheduler._waiting


def test_a_request_cancelled_while_reusing_a_prefix_leaves_a_trusted_row(tiny: Runner) -> None:
    cold = tiny.scheduler(prefix_cache=False, prefill_chunk=8)
    prompt = _turns("When do ships arrive?")[1]
    expected, _ = tiny.run(cold, prompt)
    warm = tiny.scheduler(prefill_chunk=8)
    tiny.run(warm, _turns("When do ships arrive?")[0])  # keeps the history
    gone = {"now": False}
    seq, outputs = tiny.request(prompt, is_cancelled=lambda: gone["now"])
    warm.submit(seq)
    warm.run_once()  # admitted from the kept prefix, prefilling the rest in chunks of 8
    assert seq.cached_tokens > 0 and warm.pending
    gone["now"] = True
    seq._cancel_checked = 0.0
    drain(warm)
    assert outputs[-1].cancelled
    got, cached = tiny.run(warm, prompt)
    assert got == expected and cached > 0


def test_off_and_reset_keep_nothing(tiny: Runner) -> None:
    off = tiny.scheduler(prefix_cache=False)
    prompt = _turns("When do ships arrive?")[0]
    tiny.run(off, prompt)
    assert tiny.run(off, prompt)[1] == 0
    on = tiny.scheduler()
    tiny.run(on, prompt)
    on.engine.reset()
    assert tiny.run(on, prompt)[1] == 0


def test_a_row_that_filled_the_context_is_kept_safely(tmp_path: Path, tiny: Runner) -> None:
    small = Runner(Path(tiny.path).parent, context=64)
    scheduler = small.scheduler(rows=2)
    seq, outputs = small.request("word " * 10, tokens=64)
    scheduler.submit(seq)
    drain(scheduler)
    assert outputs[-1].finish_reason == "length"
    decoder = scheduler.engine.decoder  # type: ignore[attr-defined]
    assert max(decoder.lengths) == 63  # the last token is never fed: room for a dummy write
    other, other_out = small.request("other " * 3, tokens=4)
    scheduler.submit(other)
    drain(scheduler)  # a decode step over both rows does not overrun the kept one
    assert other_out[-1].error is None


def test_the_concat_engine_keeps_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("prefix-concat") / "export"
    runner = Runner(main_export("tiny-llama", out, graph="concat").output)
    scheduler = runner.scheduler()
    prompt = _turns("When do ships arrive?")[0]
    runner.run(scheduler, prompt)
    assert runner.run(scheduler, prompt)[1] == 0


# ---- the real model ------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_chat_turns_are_exact_with_the_cache(smollm2_export: Path) -> None:
    from tritonkit.client.chat import ChatTemplate

    template = ChatTemplate.from_dir(smollm2_export)
    runner = Runner(smollm2_export, context=2048)
    cold = runner.scheduler(prefix_cache=False, rows=2, prefill_chunk=64)
    warm = runner.scheduler(rows=2, prefill_chunk=64)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "When do ships arrive?"}]  # fmt: skip
    cached = []
    for question in ("And when do they leave?", "What does a captain sign?"):
        prompt = template.render(messages)
        expected, _ = runner.run(cold, prompt, tokens=24)
        got, n = runner.run(warm, prompt, tokens=24)
        assert got == expected
        cached.append(n)
        answer = runner.tokenizer.decode(got)
        messages += [{"role": "assistant", "content": answer},
                     {"role": "user", "content": question}]  # fmt: skip
    prompt = template.render(messages)
    expected, _ = runner.run(cold, prompt, tokens=24)
    got, n = runner.run(warm, prompt, tokens=24)
    assert got == expected
    assert cached[0] == 0 and cached[1] > 100 and n > cached[1]


@pytest.mark.slow
def test_cached_tokens_reach_the_client_the_gateway_and_the_metrics(smollm2_served: Any) -> None:
    import httpx
    import openai

    from tritonkit.client import LLMClient
    from tritonkit.gateway import GatewayConfig, GatewayServer

    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Who pays the mooring fee?"}]  # fmt: skip
    with LLMClient(smollm2_served.grpc_url, model="smol") as client:
        first = client.chat(messages, max_tokens=4)
        again = client.chat(messages, max_tokens=4, on_text=lambda _p: None)
    assert again.text == first.text
    assert again.cached_tokens and again.cached_tokens >= first.num_input_tokens - 1 - 4
    with GatewayServer(GatewayConfig(triton_url=smollm2_served.grpc_url)) as gw:
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        reply = oai.chat.completions.create(model="smol", messages=messages, max_tokens=4)
        details = reply.usage.prompt_tokens_details
        assert details is not None and details.cached_tokens and details.cached_tokens > 100
        chunks = list(oai.chat.completions.create(
            model="smol", messages=messages, max_tokens=4, stream=True,
            stream_options={"include_usage": True},
        ))  # fmt: skip
        assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 100
    time.sleep(0.6)  # the entry model flushes its metrics every 0.25 s
    text = httpx.get(f"http://{smollm2_served.metrics_url}/metrics", timeout=10).text
    name = "tritonkit_prefix_cache_hits_total{"
    hits = [line for line in text.splitlines() if line.startswith(name) and 'model="smol"' in line]
    assert hits and float(hits[0].split()[-1]) >= 3


def test_the_gpu_row_copy_addresses_the_right_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: the CUDA runtime is replaced by host memmoves with cudaMemcpy2D's
    meaning, over numpy buffers shaped as the GPU's, to check the strides and offsets."""
    import ctypes

    from tritonkit.model_repository.runtime import fused_decoder
    from tritonkit.model_repository.runtime.fused_decoder import CacheShape, device_copy

    class FakeCudart:
        def cudaSetDevice(self, device: int) -> int:
            return 0

        def cudaStreamSynchronize(self, stream: Any) -> int:
            return 0

        def cudaMemcpy2DAsync(self, dst, dpitch, src, spitch, width, height, kind, stream):
            assert kind == 3 and stream is None  # device to device, on the default stream
            for h in range(height):
                ctypes.memmove(dst.value + h * dpitch, src.value + h * spitch, width)
            return 0

    monkeypatch.setattr(fused_decoder, "_cudart", lambda: FakeCudart())
    shape = CacheShape(num_layers=1, num_kv_heads=3, head_dim=4, max_batch=4, capacity=10,
                       dtype=np.float16)  # fmt: skip
    rng = np.random.default_rng(0)
    buffers = [rng.normal(size=(4, 3, 10, 4)).astype(np.float16) for _ in range(2)]
    want = [b.copy() for b in buffers]
    for w in want:
        w[2, :, :7] = w[1, :, :7]
    row_bytes = 3 * 10 * 4 * 2
    device_copy([b.ctypes.data for b in buffers], row_bytes, shape, 1, 2, 7, 0)
    for got, expected in zip(buffers, want):
        np.testing.assert_array_equal(got, expected)


def test_a_short_match_never_costs_a_long_kept_prefix(tiny: Runner) -> None:
    """A prompt that shares only a few tokens (a BOS, a template header) with a kept row
    takes an empty row; one that shares a long prefix but not the rest copies it, so the
    kept conversation stays whole."""
    scheduler = tiny.scheduler(rows=4)
    engine = scheduler.engine
    assert isinstance(engine, FusedEngine)
    turn = _turns("When do ships arrive?")[0]
    tiny.run(scheduler, turn)
    kept = int(max(engine.decoder.lengths))
    assert tiny.run(scheduler, "You are a pirate. " * 4)[1] == 0  # shares "You are a"
    assert int(max(engine.decoder.lengths)) == kept
    branch = _turns("Where is the office?")[0]  # the same system prompt, another question
    _, cached = tiny.run(scheduler, branch)
    assert cached >= MIN_COPY_TOKENS and kept in engine.decoder.lengths  # copied, kept whole
    assert engine.stats.evictions == 0


def test_a_failed_copy_costs_a_prefill_and_a_failed_row_is_not_kept(
    tiny: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = tiny.scheduler(rows=4)
    engine = scheduler.engine
    assert isinstance(engine, FusedEngine)
    a, b = _turns("When do ships arrive?")[0], _turns("Where is the office?")[0]
    want_b, _ = tiny.run(tiny.scheduler(prefix_cache=False), b)
    tiny.run(scheduler, a)

    def broken(*_args: Any) -> None:
        raise RuntimeError("cudaMemcpy2DAsync failed with CUDA error 700")

    monkeypatch.setattr(engine.decoder, "copy_prefix", broken)
    got, cached = tiny.run(scheduler, b)  # wants a copy of a's system prompt: it fails
    assert (got, cached) == (want_b, 0) and scheduler.broken is None
    monkeypatch.undo()
    poisoned, outputs = tiny.request(a)
    poisoned.next_token = lambda _logits: (_ for _ in ()).throw(ValueError("bad row"))
    scheduler.submit(poisoned)
    drain(scheduler)
    assert outputs[-1].error and "bad row" in outputs[-1].error
    ids = np.asarray(tiny.tokenizer.encode(a).ids, np.int32)
    decoder = engine.decoder
    for slot in range(len(decoder.lengths)):  # no row holds a's prompt any more
        held = decoder.token_ids[slot, : decoder.lengths[slot]]
        m = min(held.size, ids.size)
        assert m < ids.size - 1 or not np.array_equal(held[:m], ids[:m])


def test_reused_bindings_give_each_step_its_own_logits(tiny: Runner) -> None:
    """The decoder binds each (first row, rows) window once and reuses it; its logits
    equal a decoder that binds everything anew each run, and a later step never
    overwrites the logits an earlier one returned."""
    fresh = open_engine(tiny.path, tiny.report, 4, tiny.context, prefix_cache=False)
    reused = open_engine(tiny.path, tiny.report, 4, tiny.context, prefix_cache=False)
    fresh.decoder._logits = None  # the per-run path: onnxruntime allocates the logits
    assert reused.decoder._logits is not None
    prompts = [tiny.tokenizer.encode(p).ids for p in ("a harbour", "ships at dawn", "the fee")]
    kept = []
    for engine in (fresh, reused):
        for slot, ids in enumerate(prompts):
            last = engine.decoder.prefill(slot, ids)  # (vocab,)
            kept.append((last, last.copy()))
    steps = [([0, 1, 2], [5, 6, 7]), ([1], [8]), ([0, 2], [9, 10]), ([2], [11]), ([0], [12])]
    for slots, tokens in steps:
        want = fresh.decoder.decode(slots, tokens)  # (len(slots), vocab)
        got = reused.decoder.decode(slots, tokens)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        kept.append((got, got.copy()))
    for returned, snapshot in kept:  # no later step wrote into an earlier result
        np.testing.assert_array_equal(returned, snapshot)
    assert len(reused.decoder._bindings) == 4  # (0, 3), (1, 1), (2, 1), (0, 1)
