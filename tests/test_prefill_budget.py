"""The scheduler's prefill budget, sized from measured costs, on an engine whose costs are
a model (a clock it advances), so every figure is exact: a long prompt arriving among
running streams keeps their largest gap near ``STALL_FACTOR`` decode steps, and with no
stream running it is read in large runs."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from tritonkit.model_repository.runtime.scheduler import (
    IDLE_CHUNKS,
    MIN_CHUNK,
    Scheduler,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostModel:
    """An engine whose prefill costs ``fixed + per_token x n`` and decode ``step`` seconds."""

    def __init__(self, clock: Clock, fixed: float, per_token: float, step: float) -> None:
        self.clock, self.fixed, self.per_token, self.step = clock, fixed, per_token, step
        self.free = list(range(8))
        self.chunks: list[int] = []

    def admit(self, prompt_ids: list[int]) -> tuple[int, int] | None:
        return (self.free.pop(0), 0) if self.free else None

    def reserve(self) -> int | None:
        return self.free.pop(0) if self.free else None

    def prefill(self, handle: int, ids: list[int]) -> np.ndarray:
        self.clock.now += self.fixed + self.per_token * len(ids)
        self.chunks.append(len(ids))
        return np.zeros(4, np.float32)

    def decode(self, handles: list[int], tokens: list[int]) -> np.ndarray:
        self.clock.now += self.step
        return np.zeros((len(handles), 4), np.float32)

    def release(self, handle: int) -> None:
        self.free.append(handle)

    def reset(self) -> None:
        self.free = list(range(8))


class Request:
    """A sequence that wants ``tokens`` tokens and notes when each one came."""

    def __init__(self, clock: Clock, prompt: int, tokens: int) -> None:
        self.clock = clock
        self.prompt_ids = list(range(prompt))
        self.cached_tokens = 0
        self.tokens = tokens
        self.times: list[float] = []

    def next_token(self, logits: np.ndarray) -> int:
        return 1

    def accept(self, token: int) -> bool:
        self.times.append(self.clock())
        return len(self.times) >= self.tokens

    def cancelled(self) -> bool:
        return False

    def finish_cancelled(self) -> None:
        pass

    def fail(self, message: str) -> None:
        raise AssertionError(message)


def run(scheduler: Scheduler, limit: int = 10_000) -> None:
    for _ in range(limit):
        if not scheduler.pending:
            return
        scheduler.run_once()
    raise AssertionError("did not finish")


def _stall(per_token: float, step: float, chunk: int = 128) -> tuple[Any, ...]:
    clock = Clock()
    engine = CostModel(clock, fixed=0.002, per_token=per_token, step=step)
    scheduler = Scheduler(engine, max_batch_size=8, prefill_chunk=chunk, clock=clock)  # type: ignore[arg-type]
    stream = Request(clock, prompt=8, tokens=400)
    scheduler.submit(stream)
    for _ in range(20):  # the stream runs alone for a while: costs are measured
        scheduler.run_once()
    alone = statistics.median(np.diff(stream.times))  # the stream's usual gap
    long = Request(clock, prompt=1000, tokens=1)
    arrived = clock()
    scheduler.submit(long)
    while not long.times:
        scheduler.run_once()
    gaps = np.diff(stream.times) / alone  # each gap in usual gaps
    return gaps, long.times[0] - arrived, engine.chunks


def test_a_long_prompt_keeps_running_streams_flowing() -> None:
    # SmolLM2 on this CPU, roughly: 2.3 ms a prefilled token, 21 ms a decode step.
    gaps, ttft, chunks = _stall(per_token=0.0023, step=0.021)
    assert max(gaps) <= 5  # x the usual gap; 15x with fixed 128-token chunks
    reading = chunks[1:]  # the long prompt's chunks (the first is the stream's own)
    assert min(reading[:-1]) >= MIN_CHUNK and max(reading) < 128
    # ... and the long prompt's own first token comes little later than with the fixed
    # 128-token chunks (which take ceil(1000/128) runs of 128 and a step each): each of
    # the extra runs also waits for the streams' decode step
    fixed = 8 * (0.002 + 0.0023 * 128 + 0.021)
    assert ttft <= 1.25 * fixed


def test_fast_prefill_uses_the_whole_chunk() -> None:
    # A GPU-like cost: prefill is cheap per token, so the budget hits prefill_chunk.
    _gaps, _ttft, chunks = _stall(per_token=0.00002, step=0.004)
    assert max(chunks[1:]) == 128


def test_with_nothing_running_a_prompt_is_read_in_large_runs() -> None:
    clock = Clock()
    engine = CostModel(clock, fixed=0.002, per_token=0.0023, step=0.021)
    scheduler = Scheduler(engine, max_batch_size=8, prefill_chunk=128, clock=clock)  # type: ignore[arg-type]
    scheduler.submit(Request(clock, prompt=1000, tokens=2))
    run(scheduler)
    assert engine.chunks[0] == 128 * IDLE_CHUNKS
