"""In-flight batching: one thread steps every running sequence together.

A request that arrives is prefilled on its own and joins the running batch at the
next decode step; a finished or cancelled one leaves it at once. Each keeps its own
KV rows and sampling settings (see ``KVBatch`` and ``GenerationRequest``).

    submit() --> waiting queue --> prefill (B=1) --> running batch --> decode step (B=n)
                                        |                 ^   |
                                        +--- first token  +---+ next token, until done
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .decoder import OnnxDecoder
from .kvbatch import KVBatch


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
            seq.fail("the model is being unloaded; retry the request")
        self._waiting.clear()
        self._running.clear()

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; it joins the running batch at the next step."""
        with self._cv:
            self._waiting.append(seq)
            self._cv.notify()

    @property
    def pending(self) -> int:
        """Sequences waiting or running."""
        return len(self._waiting) + len(self._running)

    # ---- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._running:
                    self._cv.wait()
                if self._stopping:
                    return
            self.run_once()

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
            self.on_step(
                StepStats(
                    batch_size=len(self._running),
                    decoded_rows=rows,
                    prefilled=prefilled,
                    waiting=len(self._waiting),
                    step_seconds=time.perf_counter() - started,
                )
            )

    def _admit(self) -> int:
        admitted = 0
        while len(self._running) < self.max_batch_size:
            with self._cv:
                if not self._waiting:
                    break
                seq = self._waiting.popleft()
            if seq.cancelled():
                seq.finish_cancelled()
                continue
            try:
                self._prefill(seq)
            except Exception as exc:  # one bad prompt must not stop the others
                seq.fail(f"prefill failed: {exc}")
            admitted += 1
        return admitted

    def _prefill(self, seq: Sequence) -> None:
        n = len(seq.prompt_ids)
        ids = np.asarray([seq.prompt_ids], np.int64)  # (1, n)
        mask = np.ones((1, n), np.int64)
        positions = np.arange(n, dtype=np.int64)[None]  # (1, n)
        logits, presents = self.decoder.forward(ids, mask, positions, self.decoder.empty_past(1))
        token = seq.next_token(logits[0])
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
            token = seq.next_token(logits[row])  # (vocab,)
            self._last[row] = token
            if seq.accept(token):
                finished.append(row)
        self._remove(finished)

    def _drop_cancelled(self) -> None:
        gone = [row for row, seq in enumerate(self._running) if seq.cancelled()]
        for row in gone:
            self._running[row].finish_cancelled()
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
            seq.fail(message)
        self._running = []
        self._last = []
        self._batch = KVBatch()
