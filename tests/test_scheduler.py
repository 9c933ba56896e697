"""The in-flight batching scheduler on real exported graphs, stepped by hand (no server).

Requests are real ``GenerationRequest``s whose responses land in a list; the engine is
onnxruntime running a tiny-llama export, of each graph kind (fused attention over
preallocated KV rows, and the concat graph). Stepping with ``run_once`` makes arrivals
exact: a request joins the running batch at the step the test chooses.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tokenizers import Tokenizer

from tritonkit.core.layout import read_export_report
from tritonkit.core.params import parse_request
from tritonkit.export import main_export
from tritonkit.model_repository.runtime.engines import open_engine
from tritonkit.model_repository.runtime.generation import GenerationRequest, Output
from tritonkit.model_repository.runtime.scheduler import MAX_LOOP_FAILURES, Scheduler

PROMPTS = (
    "The quick brown fox",
    "Triton serves models over HTTP and gRPC. A client sends a request",
    "Batching",
    "Azure Blob Storage holds the model repository; each version is verified",
)


class Engine:
    """A tokenizer, an engine and a way to make requests whose outputs are recorded."""

    CONTEXT = 256  # tokens per row: every test fits

    def __init__(self, export: Path, onnx_path: Path | None = None) -> None:
        self.export = export
        self.tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
        settings = json.loads((export / "generation.json").read_text())
        self.report = read_export_report(export)
        self.eos = settings["eos_token_ids"]
        self.context = self.CONTEXT
        self.path = str(onnx_path or export / "model.onnx")

    def scheduler(self, **kwargs: Any) -> Scheduler:
        """A scheduler over a fresh engine (its own KV rows)."""
        engine = open_engine(self.path, self.report, max_rows=8, max_context=self.CONTEXT)
        return Scheduler(engine, max_batch_size=8, **kwargs)

    def request(self, prompt: str, **params: Any) -> tuple[GenerationRequest, list[Output]]:
        outputs: list[Output] = []
        fields = {"text_input": np.array([prompt.encode()], np.object_)}
        fields["exclude_input_in_output"] = np.array([True])
        for key, value in {"max_tokens": 24, "min_tokens": 24, **params}.items():
            dtype = np.float32 if isinstance(value, float) else np.int32
            fields[key] = np.array([value], dtype)
        parsed = parse_request(fields)
        ids = self.tokenizer.encode(parsed.prompt).ids
        req = GenerationRequest(
            parsed, ids, self.tokenizer, self.eos, self.context, emit=outputs.append
        )
        return req, outputs


def final(outputs: list[Output]) -> Output:
    assert outputs and outputs[-1].final, outputs
    return outputs[-1]


def drain(scheduler: Scheduler, limit: int = 500) -> None:
    for _ in range(limit):
        if not scheduler.pending:
            return
        scheduler.run_once()
    raise AssertionError("the scheduler did not finish its requests")


@pytest.fixture(scope="module", params=["fused", "concat"])
def export(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"sched-{request.param}") / "export"
    result = main_export("tiny-llama", out, graph=request.param)
    assert result.report["graph"] == request.param
    return result.output


@pytest.fixture(scope="module")
def engine(export: Path) -> Engine:
    return Engine(export)


@pytest.fixture(scope="module")
def alone(engine: Engine) -> dict[str, str]:
    """Each prompt's greedy text when it runs alone."""
    texts = {}
    for prompt in PROMPTS:
        scheduler = engine.scheduler()
        req, outputs = engine.request(prompt)
        scheduler.submit(req)
        drain(scheduler)
        texts[prompt] = final(outputs).text
    assert len(set(texts.values())) == len(texts)  # different prompts, different texts
    return texts


def test_staggered_arrivals_match_each_request_alone(engine, alone):
    scheduler = engine.scheduler()
    outs = {}
    for step, prompt in enumerate(PROMPTS):
        req, outs[prompt] = engine.request(prompt)
        scheduler.submit(req)
        for _ in range(step + 2):  # each joins a batch whose rows are at other lengths
            scheduler.run_once()
    drain(scheduler)
    for prompt in PROMPTS:
        assert final(outs[prompt]).text == alone[prompt], prompt


def test_hostile_requests_fail_alone_and_the_batch_goes_on(engine, alone):
    scheduler = engine.scheduler()
    outs = {}
    for prompt in PROMPTS[:3]:
        req, outs[prompt] = engine.request(prompt)
        scheduler.submit(req)
    scheduler.run_once()
    # A denormal temperature is greedy (no division overflow); a denormal penalty turns
    # every seen token's logit into inf, so sampling from it is impossible: that request
    # fails, alone.
    tiny_t, tiny_t_out = engine.request(PROMPTS[3], temperature=1e-40)
    overflow, overflow_out = engine.request(
        PROMPTS[3], repetition_penalty=1e-45, temperature=1.0, seed=1
    )
    scheduler.submit(tiny_t)
    scheduler.submit(overflow)
    drain(scheduler)
    assert final(tiny_t_out).text == alone[PROMPTS[3]] and final(tiny_t_out).error is None
    assert "NaN or inf" in (final(overflow_out).error or "")
    for prompt in PROMPTS[:3]:
        assert final(outs[prompt]).error is None
        assert final(outs[prompt]).text == alone[prompt]
    after, after_out = engine.request(PROMPTS[0])
    scheduler.submit(after)
    drain(scheduler)
    assert final(after_out).text == alone[PROMPTS[0]]


def test_a_row_with_nan_logits_fails_alone(export, tmp_path, alone):
    """A real fault in the graph: one token's embedding row is NaN."""
    engine = Engine(export)
    poison = engine.tokenizer.encode(" zebra").ids[-1]
    broken = tmp_path / "model.onnx"
    model = onnx.load(str(export / "model.onnx"))  # with its external data, if any
    table = next(t for t in model.graph.initializer if "embed_tokens" in t.name)
    weights = numpy_helper.to_array(table).copy()
    weights[poison] = np.nan
    table.CopyFrom(numpy_helper.from_array(weights, table.name))
    onnx.save(model, str(broken))
    engine = Engine(export, broken)

    scheduler = engine.scheduler()
    healthy, healthy_out = engine.request(PROMPTS[0])
    scheduler.submit(healthy)
    scheduler.run_once()
    sick, sick_out = engine.request("a zebra")
    scheduler.submit(sick)
    drain(scheduler)
    assert "NaN or inf" in (final(sick_out).error or "")
    assert final(healthy_out).error is None and final(healthy_out).text == alone[PROMPTS[0]]


class Exploding:
    """A request whose ``cancelled()`` raises: a fault outside the decode step."""

    def __init__(self, inner: GenerationRequest) -> None:
        self.inner = inner
        self.prompt_ids = inner.prompt_ids
        self.failed: str | None = None

    def next_token(self, logits):
        return self.inner.next_token(logits)

    def accept(self, token):
        return self.inner.accept(token)

    def cancelled(self):
        raise RuntimeError("the client connection is in a bad state")

    def finish_cancelled(self):
        self.inner.finish_cancelled()

    def fail(self, message):
        self.failed = message


def test_a_fault_in_one_requests_cancel_check_stays_with_it(engine, alone):
    scheduler = engine.scheduler()
    good, good_out = engine.request(PROMPTS[1])
    bad = Exploding(engine.request(PROMPTS[2])[0])
    scheduler.submit(good)
    scheduler.submit(bad)
    drain(scheduler)
    assert bad.failed and "bad state" in bad.failed
    assert final(good_out).text == alone[PROMPTS[1]]


@pytest.mark.timeout(60)
def test_a_loop_that_keeps_failing_stops_and_fails_fast(engine, monkeypatch):
    scheduler = engine.scheduler()
    calls = []

    def broken_admit():
        calls.append(1)
        raise RuntimeError("corrupted state")

    monkeypatch.setattr(scheduler, "_admit", broken_admit)
    scheduler.start()
    try:
        first, first_out = engine.request(PROMPTS[0])
        scheduler.submit(first)
        deadline = time.monotonic() + 20
        while scheduler.broken is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.broken is not None and "corrupted state" in scheduler.broken
        assert len(calls) == MAX_LOOP_FAILURES
        assert final(first_out).error  # the waiting request was not left hanging
        late, late_out = engine.request(PROMPTS[1])
        started = time.perf_counter()
        scheduler.submit(late)
        assert final(late_out).error == scheduler.broken  # at once, not after a timeout
        assert time.perf_counter() - started < 0.5
    finally:
        scheduler.stop(timeout=1)


def test_threads_submitting_together_each_get_their_answer(engine, alone):
    scheduler = engine.scheduler()
    scheduler.start()
    try:
        outs: dict[str, list[Output]] = {}

        def send(prompt: str) -> None:
            req, outs[prompt] = engine.request(prompt)
            scheduler.submit(req)

        threads = [threading.Thread(target=send, args=(p,)) for p in PROMPTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 30
        while scheduler.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        for prompt in PROMPTS:
            assert final(outs[prompt]).text == alone[prompt]
    finally:
        scheduler.stop(timeout=1)


def test_a_long_prompt_is_prefilled_between_decode_steps(engine, alone):
    """Chunked prefill: while a 150-token prompt is read 16 tokens at a time, the running
    stream gets a token at every iteration instead of waiting for the whole prompt."""
    scheduler = engine.scheduler(prefill_chunk=16)
    stream, stream_out = engine.request(PROMPTS[0])
    scheduler.submit(stream)
    scheduler.run_once()
    long_prompt = " ".join([PROMPTS[1]] * 12)
    reader, reader_out = engine.request(long_prompt)
    chunks = -(-len(reader.prompt_ids) // 16)
    assert chunks >= 8
    scheduler.submit(reader)
    before = len(stream.generated)
    for i in range(chunks):
        assert reader.timing.first_token is None, i  # still reading its prompt
        scheduler.run_once()
    assert reader.timing.first_token is not None  # its first token came with the last chunk
    assert len(stream.generated) == before + chunks  # one token per iteration meanwhile
    drain(scheduler)
    assert final(stream_out).text == alone[PROMPTS[0]]
    solo = engine.scheduler()
    again, again_out = engine.request(long_prompt)
    solo.submit(again)
    drain(solo)
    assert final(reader_out).text == final(again_out).text  # chunking changed nothing


def test_requests_wait_for_a_free_row_and_never_fit_is_refused(engine, alone):
    scheduler = engine.scheduler()
    outs = []
    for _ in range(10):  # more requests than the engine's 8 rows
        req, out = engine.request(PROMPTS[2])
        scheduler.submit(req)
        outs.append(out)
    scheduler.run_once()
    assert len(scheduler._prefilling) + len(scheduler._running) == 8
    assert len(scheduler._waiting) == 2  # waiting for a row, not failed
    drain(scheduler)
    assert [final(o).text for o in outs] == [alone[PROMPTS[2]]] * 10
    from tritonkit.core.params import RequestError

    with pytest.raises(RequestError, match="context"):  # a prompt longer than a row
        engine.request(" ".join([PROMPTS[1]] * 40))
    # A generation that would outgrow its row stops at the row's end ("length").
    req, out = engine.request(PROMPTS[0], max_tokens=Engine.CONTEXT, min_tokens=Engine.CONTEXT)
    scheduler.submit(req)
    drain(scheduler)
    assert final(out).finish_reason == "length" and final(out).error is None
    assert len(req.prompt_ids) + final(out).num_output_tokens == Engine.CONTEXT


def test_a_full_wait_queue_refuses_at_once_with_server_busy(engine, alone):
    from tritonkit.core.interface import ERROR_SERVER_BUSY, error_code

    scheduler = engine.scheduler(max_waiting=3)
    outs = []
    for _ in range(5):  # nothing runs yet: all of them wait
        req, out = engine.request(PROMPTS[0])
        scheduler.submit(req)
        outs.append(out)
    assert len(scheduler._waiting) == 3
    refused = [final(o).error for o in outs[3:]]
    assert all(e and error_code(e) == ERROR_SERVER_BUSY for e in refused), refused
    assert "3 requests are already waiting" in refused[0]
    drain(scheduler)
    assert [final(o).text for o in outs[:3]] == [alone[PROMPTS[0]]] * 3


def test_cancelled_requests_leave_the_wait_queue_before_taking_a_row(engine, monkeypatch):
    from tritonkit.model_repository.runtime import scheduler as sched

    monkeypatch.setattr(sched, "WAITING_SCAN_BATCH", 8)
    scheduler = engine.scheduler(max_waiting=100)
    waiting = []
    for i in range(30):  # more than the 8 rows: 22 wait
        req, out = engine.request(PROMPTS[i % 3], max_tokens=4, min_tokens=4)
        req._is_cancelled = lambda i=i: i >= 8  # the clients of all but the first 8 left
        req._cancel_checked = -1e9
        scheduler.submit(req)
        waiting.append((req, out))
    steps = 0
    while scheduler._waiting and steps < 8:  # 8 asked a step, rotating through the queue
        scheduler.run_once()
        steps += 1
    assert len(scheduler._waiting) == 0 and steps <= 5  # 22 cancelled, 8 asked a step
    assert all(final(out).cancelled for _req, out in waiting[8:])
    drain(scheduler)
    assert all(final(out).error is None for _req, out in waiting[:8])
    assert not any(final(out).text for _req, out in waiting[8:])  # never prefilled


def test_a_scheduler_that_gave_up_says_engine_failed(engine, monkeypatch):
    from tritonkit.core.interface import ERROR_ENGINE_FAILED, error_code

    told: list[str] = []
    scheduler = engine.scheduler(on_broken=told.append)
    scheduler._give_up("the decode kept failing")
    req, out = engine.request(PROMPTS[0])
    scheduler.submit(req)
    assert error_code(final(out).error or "") == ERROR_ENGINE_FAILED
    assert told == [scheduler.broken]  # the entry model sets tritonkit_engine_broken
