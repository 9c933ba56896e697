"""In-flight batching: one thread steps every running sequence together.

A request that arrives is prefilled on its own and joins the running batch at the
next decode step; a finished or cancelled one leaves it at once. Each keeps its own
KV rows and sampling settings (see ``KVBatch`` and ``GenerationRequest``).

    submit() --> waiting queue --> prefill (B=1) --> running batch --> decode step (B=n)
                                        |                 ^   |
                                        +--- first token  +---+ next token, until done

Faults stay with their request: a row whose logits are not finite, or whose sampling or
output fails, gets an error alone and the batch goes on; only a failure of the decoder
itself fails the rows it was stepping. If the loop fails outside those guards
``MAX_LOOP_FAILURES`` times in a row, the scheduler stops and every request, waiting or
new, gets an immediate error (``broken``): never a hang.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .decoder import OnnxDecoder
from .kvbatch import KVBatch

MAX_LOOP_FAILURES = 3  # consecutive unexpected loop failures before the scheduler gives up


class Sequence(Protocol):
    """What the scheduler needs from a request (``GenerationRequest`` implements it)."""

    prompt_ids: list[int]

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
    prefilled: int
    waiting: int
    step_seconds: float


class Scheduler:
    """Owns the decoder and the running batch; ``submit`` is safe from any thread."""

    def __init__(
        self,
        decoder: OnnxDecoder,
        max_batch_size: int = 16,
        on_step: Callable[[StepStats], None] | None = None,
    ) -> None:
        self.decoder = decoder
        self.max_batch_size = max_batch_size
        self.on_step = on_step
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._batch = KVBatch()
        self._last: list[int] = []  # the last token of each running row
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
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=5)
        for seq in [*self._waiting, *self._running]:
            _fail(seq, "the model is being unloaded; retry the request")
        self._waiting.clear()
        self._running.clear()

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; it joins the running batch at the next step (or fails at once
        when the scheduler is ``broken``)."""
        with self._cv:
            if self.broken is None:
                self._waiting.append(seq)
                self._cv.notify()
                return
        _fail(seq, self.broken)

    @property
    def pending(self) -> int:
        """Sequences waiting or running."""
        return len(self._waiting) + len(self._running)

    # ---- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._running:
                    self._cv.wait()
                if self._stopping:
                    return
            try:
                self.run_once()
                failures = 0
            except Exception as exc:  # a bug outside the per-request guards
                failures += 1
                self._fail_running(f"internal error in the generation loop: {exc}")
                if failures >= MAX_LOOP_FAILURES:
                    self._give_up(f"the generation loop failed {failures} times ({exc})")
                    return

    def _give_up(self, why: str) -> None:
        """Stop for good: fail what waits, and make every later ``submit`` fail at once."""
        with self._cv:
            self.broken = f"the model cannot generate: {why}; reload it (or restart the server)"
            waiting, self._waiting = list(self._waiting), collections.deque()
        for seq in waiting:
            _fail(seq, self.broken)

    def run_once(self) -> None:
        """Admit waiting sequences, then one decode step for the batch (if any)."""
        started = time.perf_counter()
        self._drop_cancelled()
        prefilled = self._admit()
        rows = len(self._running)
        if self._running:
            try:
                self._decode_step()
            except Exception as exc:  # an engine failure fails this batch, not the server
                self._fail_running(f"generation failed: {exc}")
        if self.on_step:
            stats = StepStats(
                batch_size=len(self._running),
                decoded_rows=rows,
                prefilled=prefilled,
                waiting=len(self._waiting),
                step_seconds=time.perf_counter() - started,
            )
            with contextlib.suppress(Exception):  # metrics never stop generation
                self.on_step(stats)

    def _admit(self) -> int:
        admitted = 0
        while len(self._running) < self.max_batch_size:
            with self._cv:
                if not self._waiting:
                    break
                seq = self._waiting.popleft()
            try:
                if seq.cancelled():
                    seq.finish_cancelled()
                    continue
                self._prefill(seq)
            except Exception as exc:  # one bad prompt must not stop the others
                _fail(seq, f"prefill failed: {exc}")
            admitted += 1
        return admitted

    def _prefill(self, seq: Sequence) -> None:
        n = len(seq.prompt_ids)
        ids = np.asarray([seq.prompt_ids], np.int64)  # (1, n)
        mask = np.ones((1, n), np.int64)
        positions = np.arange(n, dtype=np.int64)[None]  # (1, n)
        logits, presents = self.decoder.forward(ids, mask, positions, self.decoder.empty_past(1))
        token = seq.next_token(_finite(logits[0]))
        if seq.accept(token):
            return  # finished on its first token
        self._batch.join(presents, n)
        self._running.append(seq)
        self._last.append(token)

    def _decode_step(self) -> None:
        ids = np.asarray(self._last, np.int64)[:, None]  # (B, 1)
        mask, positions = self._batch.step_inputs()  # (B, P+1), (B, 1)
        logits, presents = self.decoder.forward(ids, mask, positions, self._batch.past)
        self._batch.advance(presents, mask)
        finished = []
        for row, seq in enumerate(self._running):
            try:
                token = seq.next_token(_finite(logits[row]))  # (vocab,)
                self._last[row] = token
                if seq.accept(token):
                    finished.append(row)
            except Exception as exc:  # this row's fault: it fails alone
                _fail(seq, f"generation failed: {exc}")
                finished.append(row)
        self._remove(finished)

    def _drop_cancelled(self) -> None:
        gone = []
        for row, seq in enumerate(self._running):
            try:
                if seq.cancelled():
                    seq.finish_cancelled()
                    gone.append(row)
            except Exception as exc:  # asking about one client must not stop the others
                _fail(seq, f"generation failed: {exc}")
                gone.append(row)
        self._remove(gone)

    def _remove(self, rows: list[int]) -> None:
        if not rows:
            return
        self._batch.remove(rows)
        drop = set(rows)
        self._running = [s for i, s in enumerate(self._running) if i not in drop]
        self._last = [t for i, t in enumerate(self._last) if i not in drop]

    def _fail_running(self, message: str) -> None:
        for seq in self._running:
            _fail(seq, message)
        self._running = []
        self._last = []
        self._batch = KVBatch()


def _finite(logits: np.ndarray) -> np.ndarray:
    """``logits`` (vocab,) when every value is finite.

    Raises:
        ValueError: NaN or inf, which no sampling setting can make sense of.
    """
    if not np.isfinite(logits).all():
        raise ValueError("the model's logits hold NaN or inf for this request")
    return logits


def _fail(seq: Sequence, message: str) -> None:
    """Close ``seq`` with an error; a failure to send it is that request's alone."""
    with contextlib.suppress(Exception):
        seq.fail(message)
