"""The fused-attention graph run with its KV cache in preallocated rows (slots).

One buffer per layer and kind, shaped (max_batch, kv_heads, capacity, head_dim), is
allocated once per model instance: numpy memory on the CPU (the OS commits its pages
only as rows fill up) or device memory on a GPU. A request owns one row (a slot) from
its first prefill chunk to its last token. Every run binds the rows it touches as both
``past_key_values.*`` and ``present.*`` (the same memory), so GroupQueryAttention reads
the cache in place and writes only the new positions: nothing is copied when a request
joins or leaves the batch, and on a GPU the cache never leaves the device.

    prefill(slot, chunk)  rows [slot, slot+1)      mask (1, held + chunk)   writes held..
    decode(slots, tokens) rows [min, max(slots)+1) mask (B, T), right-padded, one new each

A decode step runs the contiguous rows from the lowest to the highest slot asked for. A
row that is not stepping (free, part-way through its prefill, or keeping a finished
request's prefix) gets a dummy token whose key and value land at its current length, the
position its own next write overwrites, past everything it keeps.

Each row also knows the token ids its cache holds (``tokens``), so a finished request's
row can be reused by a later prompt that starts the same way (``truncate`` keeps the
shared prefix in place; ``copy_prefix`` copies it into another row inside the buffers,
on the device where they live).

Imports only numpy and onnxruntime: this module runs inside the Triton container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .decoder import make_session

_ORT_TYPES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)"}


@dataclass(frozen=True)
class CacheShape:
    """The KV cache of one model instance."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_batch: int  # rows (concurrent requests)
    capacity: int  # tokens per row: prompt plus generated
    dtype: Any = np.float32

    @property
    def nbytes(self) -> int:
        """Bytes of every buffer together, when every row is full."""
        per_row = self.num_kv_heads * self.capacity * self.head_dim * np.dtype(self.dtype).itemsize
        return 2 * self.num_layers * self.max_batch * per_row


_LOGIT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class CacheFull(RuntimeError):
    """A row would hold more tokens than its capacity."""


class FusedDecoder:
    """``prefill`` and ``decode`` over rows of a preallocated KV cache (see the module)."""

    def __init__(
        self,
        path: str,
        shape: CacheShape,
        providers: list[str] | None = None,  # e.g. ["CUDAExecutionProvider", "CPU..."]
        intra_op_threads: int | None = None,  # None: auto_threads; 0: onnxruntime decides
        device_id: int = 0,
        provider_options: dict[str, dict[str, str]] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.session, self.device, self.device_id = make_session(
            path, providers, intra_op_threads, device_id, provider_options
        )
        self.shape = shape
        self.lengths = np.zeros(shape.max_batch, np.int64)  # tokens held by each row
        # The ids of the tokens each row holds (the first lengths[slot] of its line):
        # compared with a new prompt when the engine looks for a kept prefix.
        self.token_ids = np.full((shape.max_batch, shape.capacity), -1, np.int32)
        names = [i.name for i in self.session.get_inputs()]
        self.cache_names = [
            (f"past_key_values.{i}.{kind}", f"present.{i}.{kind}")
            for i in range(shape.num_layers)
            for kind in ("key", "value")
        ]
        missing = [p for p, _ in self.cache_names if p not in names]
        if missing or "position_ids" in names:
            raise ValueError(f"{path} is not a fused-attention graph (inputs {names[:4]}...)")
        dims = (shape.max_batch, shape.num_kv_heads, shape.capacity, shape.head_dim)
        self._buffers: list[Any]  # numpy arrays (CPU) or OrtValues (GPU), one per name pair
        if self.device == "cuda":
            self._buffers = [
                ort.OrtValue.ortvalue_from_shape_and_type(dims, shape.dtype, "cuda", device_id)
                for _ in self.cache_names
            ]
            self._base = [b.data_ptr() for b in self._buffers]
        else:
            self._buffers = [np.zeros(dims, shape.dtype) for _ in self.cache_names]
            self._base = [b.ctypes.data for b in self._buffers]
        self._row_bytes = int(np.prod(dims[1:])) * np.dtype(shape.dtype).itemsize
        # An IOBinding per (first row, rows) with the KV bound once, and one host buffer
        # the logits land in: a step then binds only its two small inputs. Binding 2L
        # caches anew each step cost about 8 us a layer in Python (a tenth of a 0.3 ms
        # step on tiny-llama; 1 ms of a 30-layer model's step, which a GPU would feel).
        out = next(o for o in self.session.get_outputs() if o.name == "logits")
        vocab = out.shape[-1]
        dtype = _LOGIT_TYPES.get(out.type)
        self._logits = (
            np.empty((shape.max_batch, 1, vocab), dtype)
            if isinstance(vocab, int) and dtype is not None
            else None  # otherwise onnxruntime allocates the logits each run
        )  # (max_batch, 1, vocab)
        self._bindings: dict[tuple[int, int], Any] = {}

    # ---- the two kinds of run ------------------------------------------------------------

    def prefill(self, slot: int, ids: list[int] | np.ndarray) -> np.ndarray:
        """Append ``ids`` to row ``slot``; returns the logits of the last one (vocab,).

        Raises:
            CacheFull: the row would exceed the capacity.
        """
        held, n = int(self.lengths[slot]), len(ids)
        if held + n > self.shape.capacity:
            raise CacheFull(f"{held + n} tokens do not fit a row of {self.shape.capacity}")
        input_ids = np.asarray(ids, np.int64)[None]  # (1, n)
        mask = np.ones((1, held + n), np.int64)  # (1, held + n)
        logits = self._run(input_ids, mask, first=slot, rows=1)
        self.lengths[slot] += n
        self.token_ids[slot, held : held + n] = ids
        return logits[0]

    def decode(self, slots: list[int], tokens: list[int]) -> np.ndarray:
        """One new token for each of ``slots``; returns their logits (len(slots), vocab).

        Raises:
            CacheFull: a row is at its capacity.
        """
        first = min(slots)
        rows = max(slots) + 1 - first
        stepping = np.asarray(slots, np.int64)
        if (self.lengths[stepping] + 1 > self.shape.capacity).any():
            raise CacheFull(f"a row is full ({self.shape.capacity} tokens)")
        input_ids = np.zeros((rows, 1), np.int64)  # (B, 1): 0 for rows not stepping
        input_ids[stepping - first, 0] = tokens
        lengths = self.lengths[first : first + rows] + 1  # (B,) tokens after this step
        total = int(lengths.max())
        mask = (np.arange(total)[None, :] < lengths[:, None]).astype(np.int64)  # (B, T)
        logits = self._run(input_ids, mask, first=first, rows=rows)  # (B, vocab)
        self.token_ids[stepping, self.lengths[stepping]] = tokens
        self.lengths[stepping] += 1
        return logits[stepping - first]

    def release(self, slot: int) -> None:
        """Forget row ``slot``'s contents (they are simply overwritten later)."""
        self.truncate(slot, 0)

    def truncate(self, slot: int, n: int) -> None:
        """Keep the first ``n`` tokens of row ``slot``; the next write lands at ``n``."""
        self.lengths[slot] = min(n, int(self.lengths[slot]))

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Row ``dst`` holds the first ``n`` tokens of row ``src``, copied inside the
        buffers: numpy on the CPU, device to device on a GPU (``device_copy``)."""
        n = min(n, int(self.lengths[src]))
        if self.device == "cuda":
            device_copy(self._base, self._row_bytes, self.shape, src, dst, n, self.device_id)
        else:
            for buffer in self._buffers:
                buffer[dst, :, :n] = buffer[src, :, :n]  # (kv, n, hd)
        self.lengths[dst] = n
        self.token_ids[dst, :n] = self.token_ids[src, :n]

    def load_rows(self, rows: dict[int, list[np.ndarray]]) -> None:
        """Set rows to given caches (each 2L arrays (kv_heads, P, head_dim)): for
        verification, which feeds the graph the reference's own past."""
        host = [
            b if isinstance(b, np.ndarray) else b.numpy() for b in self._buffers
        ]  # (max_batch, kv, capacity, hd) each
        for slot, caches in rows.items():
            n = caches[0].shape[1]
            for buffer, cache in zip(host, caches):
                buffer[slot, :, :n] = cache
            self.lengths[slot] = n
            self.token_ids[slot, :n] = -1  # a reference's cache: no prompt may match it
        if self.device == "cuda":
            for buffer, array in zip(self._buffers, host):
                buffer.update_inplace(array)

    def row(self, slot: int) -> list[np.ndarray]:
        """Row ``slot``'s cache as 2L arrays (kv_heads, held, head_dim), copied to the host."""
        n = int(self.lengths[slot])
        return [
            (b if isinstance(b, np.ndarray) else b.numpy())[slot, :, :n].copy()
            for b in self._buffers
        ]

    # ---- binding -------------------------------------------------------------------------

    def _run(self, input_ids: np.ndarray, mask: np.ndarray, first: int, rows: int) -> np.ndarray:
        """Logits (rows, vocab) of the last position of rows ``first``..``first+rows-1``."""
        binding = self._bindings.get((first, rows))
        if binding is None:
            binding = self._bind(first, rows)
            if self._logits is not None:
                self._bindings[(first, rows)] = binding
        binding.bind_cpu_input("input_ids", input_ids)  # (B, S)
        binding.bind_cpu_input("attention_mask", mask)  # (B, T)
        self.session.run_with_iobinding(binding)
        if self._logits is None:
            logits = binding.get_outputs()[-1].numpy()  # (B, 1, vocab)
            return logits[:, -1, :]
        return self._logits[:rows, -1, :].astype(np.float32)  # (B, vocab), a copy

    def _bind(self, first: int, rows: int) -> Any:
        """An IOBinding of rows ``first``..``first+rows-1``' caches (in place) and logits."""
        binding = self.session.io_binding()
        s = self.shape
        dims = [rows, s.num_kv_heads, s.capacity, s.head_dim]
        offset = first * self._row_bytes
        for (past, present), base in zip(self.cache_names, self._base):
            # The same memory in and out: GroupQueryAttention updates it in place.
            binding.bind_input(past, self.device, self.device_id, s.dtype, dims, base + offset)
            binding.bind_output(present, self.device, self.device_id, s.dtype, dims, base + offset)
        if self._logits is None:
            binding.bind_output("logits", "cpu")
        else:  # the first ``rows`` rows of the buffer: contiguous, at its start
            logits = self._logits
            shape = [rows, 1, logits.shape[-1]]
            binding.bind_output("logits", "cpu", 0, logits.dtype.type, shape, logits.ctypes.data)
        return binding


def device_copy(
    bases: list[int], row_bytes: int, shape: CacheShape, src: int, dst: int, n: int, device: int
) -> None:
    """Copy the first ``n`` positions of row ``src`` to row ``dst`` in every GPU buffer
    with one strided ``cudaMemcpy2DAsync`` per buffer (device to device; the host never
    sees the cache). A row is (kv_heads, capacity, head_dim): ``kv_heads`` blocks of
    ``n * head_dim`` elements, ``capacity * head_dim`` apart.

    Raises:
        RuntimeError: the CUDA runtime is missing or a copy failed.
    """
    cuda = _cudart()
    item = np.dtype(shape.dtype).itemsize
    pitch = shape.capacity * shape.head_dim * item  # bytes from one head's block to the next
    width = n * shape.head_dim * item  # bytes copied per head
    if width == 0:
        return
    if cuda.cudaSetDevice(device) != 0:
        raise RuntimeError(f"cudaSetDevice({device}) failed")
    for base in bases:
        status = cuda.cudaMemcpy2DAsync(
            _ptr(base + dst * row_bytes), pitch, _ptr(base + src * row_bytes), pitch,
            width, shape.num_kv_heads, _DEVICE_TO_DEVICE, None,
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"cudaMemcpy2DAsync failed with CUDA error {status}")
    if cuda.cudaStreamSynchronize(None) != 0:
        raise RuntimeError("cudaStreamSynchronize failed after a KV row copy")


_DEVICE_TO_DEVICE = 3  # cudaMemcpyDeviceToDevice


def _ptr(address: int) -> Any:
    import ctypes

    return ctypes.c_void_p(address)


def _cudart() -> Any:
    """The CUDA runtime library of the image (libcudart.so.13, the one onnxruntime-gpu
    links), with the argument types of the three calls ``device_copy`` makes."""
    import ctypes
    import ctypes.util

    for name in ("libcudart.so.13", "libcudart.so", ctypes.util.find_library("cudart")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        size = ctypes.c_size_t
        lib.cudaMemcpy2DAsync.argtypes = [ctypes.c_void_p, size, ctypes.c_void_p, size, size,
                                          size, ctypes.c_int, ctypes.c_void_p]  # fmt: skip
        lib.cudaSetDevice.argtypes = [ctypes.c_int]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        return lib
    raise RuntimeError("no CUDA runtime (libcudart) to copy KV rows with")
