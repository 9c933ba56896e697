"""In-flight batching with chunked prefill: one thread steps every running sequence together.

    submit() --> waiting --> prefilling (chunk by chunk) --> running --> decode steps
                  (a free row)      |   first token              ^  |  next token,
                                    +----------------------------+  +- until done

Each iteration of the loop: drop what was cancelled; give waiting requests free rows
(starting each from the longest prefix of its prompt the engine still holds); prefill a
budget of prompt tokens (the oldest prefilling request first, so several short prompts
share one iteration and a long one takes several); then one decode step for every
running request. A long prompt therefore never stalls the running streams for longer
than one budget.

The budget is sized from measured costs (``prefill_budget``): while streams run, as many
tokens as fit in ``stall_factor - 1`` decode steps (so a running stream's gap stays near
``stall_factor`` times its usual step; a config parameter, ``STALL_FACTOR`` by default),
between ``MIN_CHUNK`` and ``prefill_chunk``; with nothing running, ``IDLE_CHUNKS`` x
``prefill_chunk`` (nobody waits on the loop, and larger runs read a prompt faster).
Each request keeps its own row and sampling settings; the engine (``engines.py``) owns
the KV cache.

The wait queue is bounded (``max_waiting``): past it a request is refused at once with a
``server_busy`` error (the gateway answers 503 with Retry-After), and a request whose
client went away while it waited is dropped from the queue (a few asked each step)
instead of taking a row and a prefill later.

Faults stay with their request: a row whose logits are not finite, or whose sampling or
output fails, gets an error alone and the batch goes on; only a failure of the engine's
decode fails the rows it was stepping. If the loop fails outside those guards
``MAX_LOOP_FAILURES`` times in a row, the scheduler stops and every request, waiting or
new, gets an immediate error (``broken``): never a hang.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tritonkit.core.interface import ERROR_ENGINE_FAILED, ERROR_SERVER_BUSY, coded_error

from .engines import Engine

MAX_LOOP_FAILURES = 3  # consecutive unexpected loop failures before the scheduler gives up
DEFAULT_PREFILL_CHUNK = 128  # prompt tokens per iteration (a config parameter)
DEFAULT_MAX_WAITING = 256  # requests waiting for a row; one more is refused (server_busy)
# The waiting queue is asked about cancellations a few requests per step, rotating: each
# question is an IPC round trip (~0.5 ms), so a full queue of 256 costs a running stream
# about 2 ms a step, never 128 ms at once; it is scanned whole every 64 steps.
WAITING_SCAN_BATCH = 4
# Prefill budget while streams run: a stream's gap is about STALL_FACTOR decode steps
# (a step plus STALL_FACTOR - 1 steps' worth of prefill). The two goals pull apart: a
# smaller factor shortens the streams' largest gap, a larger one reads a long arriving
# prompt in fewer runs (each run also waits for a decode step); 4.5 keeps the gap under
# 5x the median step and the long prompt's first token within about 1.2x of 128-token
# chunks on SmolLM2 on a CPU (benchmarks/scheduler_bench.py).
STALL_FACTOR = 4.5
MIN_CHUNK = 16  # prompt tokens per iteration at least, however slow prefill is
IDLE_CHUNKS = 4  # with no stream running, prefill up to this many prefill_chunks at once
_EMA = 0.3  # weight of the newest measurement in the running cost estimates


class Schedulable(Protocol):
    """What the scheduler needs from a request (``GenerationRequest`` implements it)."""

    prompt_ids: list[int]
    cached_tokens: int  # set by the scheduler: prompt tokens found in the row's cache
    forks: list[Any]  # the request's other choices (n > 1), forked after its prefill

    def next_token(self, logits: np.ndarray) -> int:
        """Choose the next token from this sequence's logits (vocab,)."""
        ...

    def accept(self, token: int) -> bool:
        """Take a generated token and emit its text; True once the sequence is finished."""
        ...

    def cancelled(self) -> bool:
        """True when the client has gone or cancelled."""
        ...

    def finish_cancelled(self) -> None:
        """Close a cancelled sequence (no more output)."""
        ...

    def fail(self, message: str) -> None:
        """Close the sequence with an error response carrying ``message``."""
        ...


@dataclass
class StepStats:
    """What one loop iteration did, for metrics."""

    batch_size: int  # running after the step
    decoded_rows: int  # sequences that advanced together in this step's decode (0: none)
    prefilled: int  # prompt tokens prefilled in this iteration
    waiting: int  # requests not yet generating (waiting for a row, or being prefilled)


@dataclass(eq=False)
class _Row:
    """A request that holds an engine row."""

    seq: Schedulable
    handle: Any
    fed: int = 0  # prompt tokens prefilled so far
    last: int = -1  # the last token generated
    forks: list[tuple[Any, Any]] = field(default_factory=list)  # (choice, its row) to fork


class Scheduler:
    """Owns the engine's rows and the running batch; ``submit`` is safe from any thread."""

    def __init__(
        self,
        engine: Engine,
        max_batch_size: int = 16,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        on_step: Callable[[StepStats], None] | None = None,
        max_waiting: int = DEFAULT_MAX_WAITING,
        on_broken: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        stall_factor: float = STALL_FACTOR,
    ) -> None:
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {max_waiting}")
        self.max_waiting = max_waiting
        self.on_broken = on_broken  # told once, when the loop gives up for good
        self._waiting_scanned = 0  # where the next scan of the waiting queue starts
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.prefill_chunk = prefill_chunk
        self.clock = clock
        if stall_factor <= 1:
            raise ValueError(f"stall_factor must be > 1, got {stall_factor}")
        self.stall_factor = stall_factor
        self._decode_s: float | None = None  # a decode step's seconds (running average)
        self._token_s: float | None = None  # a prefilled token's seconds (running average)
        self.on_step = on_step
        self._waiting: collections.deque[Schedulable] = collections.deque()
        self._prefilling: list[_Row] = []
        self._running: list[_Row] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.broken: str | None = None  # why the loop stopped for good; None while healthy

    # ---- control ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the stepping thread."""
        self._thread = threading.Thread(target=self._loop, name="tritonkit-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let running sequences finish (up to ``timeout``), then fail what is left."""
        deadline = time.monotonic() + timeout
        while self.pending and self.broken is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=5)
        message = "the model is being unloaded; retry the request"
        rows = [*self._prefilling, *self._running]
        forks = [seq for r in rows for seq, _handle in r.forks]
        for seq in [*self._waiting, *(r.seq for r in rows), *forks]:
            _fail(seq, message)
        for seq in self._waiting:  # their other choices never got a row
            _fail_forks(seq, message)
        self._waiting.clear()
        self._prefilling.clear()
        self._running.clear()

    def submit(self, seq: Schedulable) -> None:
        """Queue ``seq``; it gets a row at the next step (or fails at once when the
        scheduler is ``broken``)."""
        with self._cv:
            if self.broken is None and len(self._waiting) < self.max_waiting:
                self._waiting.append(seq)
                self._cv.notify()
                return
            why = self.broken or coded_error(
                ERROR_SERVER_BUSY,
                f"{len(self._waiting)} requests are already waiting for this model; retry shortly",
            )
        _fail(seq, why)
        _fail_forks(seq, why)

    @property
    def pending(self) -> int:
        """Sequences waiting, being prefilled or running."""
        return len(self._waiting) + len(self._prefilling) + len(self._running)

    # ---- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cv:
                while not self._stopping and not self.pending:
                    self._cv.wait()
                if self._stopping:
                    return
            try:
                self.run_once()
                failures = 0
            except Exception as exc:  # a bug outside the per-request guards
                failures += 1
                self._fail_rows(f"internal error in the generation loop: {exc}")
                if failures >= MAX_LOOP_FAILURES:
                    self._give_up(f"the generation loop failed {failures} times ({exc})")
                    return

    def run_once(self) -> None:
        """Admit waiting sequences, prefill one chunk's worth, then one decode step."""
        self._drop_cancelled()
        self._admit()
        prefilled = self._prefill()
        rows = len(self._running)
        if self._running:
            self._decode_step()
        if self.on_step:
            stats = StepStats(
                batch_size=len(self._running),
                decoded_rows=rows,
                prefilled=prefilled,
                waiting=len(self._waiting) + len(self._prefilling),
            )
            with contextlib.suppress(Exception):  # metrics never stop generation
                self.on_step(stats)

    def _admit(self) -> None:
        while len(self._prefilling) + len(self._running) < self.max_batch_size:
            with self._cv:
                if not self._waiting:
                    return
                seq = self._waiting[0]
            forks = list(getattr(seq, "forks", ()))  # n > 1: a row for every choice at once
            busy = len(self._prefilling) + len(self._running)
            if forks and (
                self.engine.free_rows() < 1 + len(forks)
                or busy + 1 + len(forks) > self.max_batch_size
            ):
                return  # it waits until its n rows are free
            admitted = self.engine.admit(seq.prompt_ids)
            if admitted is None:
                return  # every row is taken: it waits for one to be released
            handle, cached = admitted  # the first `cached` prompt tokens are in the row
            with self._cv:
                self._waiting.popleft()
            seq.cached_tokens = cached
            row = _Row(seq, handle, fed=cached)
            for fork in forks:
                fork.cached_tokens = cached
                row.forks.append((fork, self.engine.reserve()))
            self._prefilling.append(row)

    def prefill_budget(self) -> int:
        """Prompt tokens to prefill in this iteration (see the module docstring)."""
        if not self._running:
            return self.prefill_chunk * IDLE_CHUNKS
        if self._decode_s is None or not self._token_s:
            return self.prefill_chunk  # nothing measured yet
        fit = (self.stall_factor - 1) * self._decode_s / self._token_s
        return int(min(self.prefill_chunk, max(MIN_CHUNK, fit)))

    def _prefill(self) -> int:
        """A budget of prompt tokens, oldest request first; returns how many."""
        total = budget = self.prefill_budget()
        while budget > 0 and self._prefilling:
            row = self._prefilling[0]
            prompt = row.seq.prompt_ids
            n = min(len(prompt) - row.fed, budget)
            try:
                t0 = self.clock()
                logits = self.engine.prefill(row.handle, prompt[row.fed : row.fed + n])
                self._token_s = _average(self._token_s, (self.clock() - t0) / n)
                row.fed += n
                budget -= n
                if row.fed < len(prompt):
                    continue  # the rest in the next iteration, after a decode step
                self._prefilling.pop(0)
                logits = _finite(logits)
                self._fork(row, logits)
                token = row.seq.next_token(logits)
                if row.seq.accept(token):
                    self.engine.release(row.handle)  # finished on its first token
                    continue
                row.last = token
                self._running.append(row)
            except Exception as exc:  # one bad prompt must not stop the others
                self._drop(row, f"prefill failed: {exc}")
        return total - budget

    def _fork(self, row: _Row, logits: np.ndarray) -> None:
        """The other choices of ``row``'s request start from its prefilled row: each gets
        a copy of the KV and samples its first token from the same logits."""
        forks, row.forks = row.forks, []
        for seq, handle in forks:
            fork = _Row(seq, handle, fed=row.fed)
            try:
                self.engine.copy_row(row.handle, handle)
                token = seq.next_token(logits)
                fork.last = token
                if seq.accept(token):
                    self.engine.release(handle)
                    continue
                self._running.append(fork)
            except Exception as exc:  # this choice's fault: it fails alone
                self._drop(fork, f"generation failed: {exc}")

    def _decode_step(self) -> None:
        rows = list(self._running)
        try:
            t0 = self.clock()
            logits = self.engine.decode([r.handle for r in rows], [r.last for r in rows])
            self._decode_s = _average(self._decode_s, self.clock() - t0)
        except Exception as exc:  # the engine itself failed: these rows cannot go on
            for row in rows:
                self._drop(row, f"generation failed: {exc}")
            return
        for row, row_logits in zip(rows, logits):  # (vocab,) each
            try:
                token = row.seq.next_token(_finite(row_logits))
                row.last = token
                if row.seq.accept(token):
                    self._running.remove(row)
                    self.engine.release(row.handle)
            except Exception as exc:  # this row's fault: it fails alone
                self._drop(row, f"generation failed: {exc}")

    def _drop_cancelled(self) -> None:
        if self._waiting:
            with self._cv:
                waiting = list(self._waiting)
            start = self._waiting_scanned % len(waiting)
            batch = (waiting[start:] + waiting[:start])[:WAITING_SCAN_BATCH]
            self._waiting_scanned = start + len(batch)
            gone: list[tuple[Schedulable, str | None]] = []  # (request, its error or None)
            for seq in batch:
                try:
                    if seq.cancelled():
                        gone.append((seq, None))
                except Exception as exc:  # asking about one client must not stop the others
                    gone.append((seq, f"generation failed: {exc}"))
            if gone:
                dropped = {id(seq) for seq, _error in gone}
                with self._cv:
                    self._waiting = collections.deque(
                        seq for seq in self._waiting if id(seq) not in dropped
                    )
                for seq, error in gone:
                    if error is not None:
                        _fail(seq, error)
                        _fail_forks(seq, error)
                        continue
                    for choice in [seq, *getattr(seq, "forks", ())]:
                        with contextlib.suppress(Exception):
                            choice.finish_cancelled()
        for row in [*self._prefilling, *self._running]:
            try:
                if row.seq.cancelled():
                    row.seq.finish_cancelled()
                    self._drop(row, None)
            except Exception as exc:  # asking about one client must not stop the others
                self._drop(row, f"generation failed: {exc}")

    def _drop(self, row: _Row, error: str | None) -> None:
        """Take ``row`` out of the batch and free its engine row; fail it with ``error``
        (None: cancelled). Choices not yet forked from it end the same way."""
        for rows in (self._prefilling, self._running):
            if row in rows:
                rows.remove(row)
        with contextlib.suppress(Exception):  # a failed row's cache is not trusted again
            self.engine.release(row.handle, keep=error is None)
        if error is not None:
            _fail(row.seq, error)
        forks, row.forks = row.forks, []
        for seq, handle in forks:
            with contextlib.suppress(Exception):
                self.engine.release(handle)
            if error is not None:
                _fail(seq, error)
            else:
                with contextlib.suppress(Exception):
                    seq.finish_cancelled()

    def _fail_rows(self, message: str) -> None:
        for row in [*self._prefilling, *self._running]:
            _fail(row.seq, message)
            for seq, _handle in row.forks:
                _fail(seq, message)
        self._prefilling, self._running = [], []
        with contextlib.suppress(Exception):
            self.engine.reset()

    def _give_up(self, why: str) -> None:
        """Stop for good: fail what waits, and make every later ``submit`` fail at once."""
        with self._cv:
            self.broken = coded_error(
                ERROR_ENGINE_FAILED,
                f"the model cannot generate: {why}; reload it (or restart the server)",
            )
            waiting, self._waiting = list(self._waiting), collections.deque()
        for seq in waiting:
            _fail(seq, self.broken)
            _fail_forks(seq, self.broken)
        if self.on_broken is not None:
            with contextlib.suppress(Exception):
                self.on_broken(self.broken)


def _average(previous: float | None, value: float) -> float:
    """An exponential running average (the first value stands alone)."""
    return value if previous is None else (1 - _EMA) * previous + _EMA * value


def _finite(logits: np.ndarray) -> np.ndarray:
    """``logits`` (vocab,) when every value is finite.

    Raises:
        ValueError: NaN or inf, which no sampling setting can make sense of.
    """
    if not np.isfinite(logits).all():
        raise ValueError("the model's logits hold NaN or inf for this request")
    return logits


def _fail(seq: Schedulable, message: str) -> None:
    """Close ``seq`` with an error; a failure to send it is that request's alone."""
    with contextlib.suppress(Exception):
        seq.fail(message)


def _fail_forks(seq: Schedulable, message: str) -> None:
    """Close the other choices of a request that never got its rows."""
    for fork in getattr(seq, "forks", ()):
        _fail(fork, message)
