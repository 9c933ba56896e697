"""The exported ONNX decoder, run in-process with onnxruntime, its KV cache kept resident.

Imports only numpy and onnxruntime: this module runs inside the Triton container.
One graph serves prefill (past 0) and decode (sequence 1); see tritonkit.export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DecoderSpec:
    """What the engine needs to know about a graph, read from its inputs."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    kv_dtype: Any  # numpy dtype of the past/present tensors


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
SMALL_MODEL_BYTES = 64 << 20  # below this a step is overhead-bound: one thread is fastest


def auto_threads(path: str) -> int:
    """1 intra-op thread for small graphs (thread hand-offs cost more than they save,
    measured on tiny-llama: 3.2x vs 2.6x batch-8 speed-up), else 0 (onnxruntime decides)."""
    size = sum(os.path.getsize(p) for p in (path, path + ".data") if os.path.exists(p))
    return 1 if size < SMALL_MODEL_BYTES else 0


class GpuUnavailable(RuntimeError):
    """A GPU provider was asked for and the session would run on the CPU instead."""


def make_session(
    path: str,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    device_id: int = 0,
    provider_options: dict[str, dict[str, str]] | None = None,
) -> tuple[Any, str, int]:
    """An onnxruntime session for a decoder graph; returns ``(session, device, device_id)``
    with ``device`` "cuda" when its first provider is a GPU one, else "cpu".

    ``intra_op_threads`` None picks ``auto_threads``; 0 lets onnxruntime decide.
    ``provider_options`` adds options per provider name (``device_id`` is always set).
    When ``providers`` names a GPU provider, the session must run on it: onnxruntime only
    logs a warning when the CUDA provider cannot start and runs on the CPU, which on a GPU
    VM would serve at a fraction of the speed without saying so.

    Raises:
        GpuUnavailable: a GPU provider was asked for and this onnxruntime lacks it, or it
            failed to start (the message names the likely cause and the fix).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = auto_threads(path) if intra_op_threads is None else intra_op_threads
    if threads:
        opts.intra_op_num_threads = threads
    # Spinning worker threads would take the cores that Triton's request threads need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    asked = providers or ["CPUExecutionProvider"]
    wants_gpu = any(p in GPU_PROVIDERS for p in asked)
    if wants_gpu and not any(p in available for p in asked if p in GPU_PROVIDERS):
        raise GpuUnavailable(gpu_unavailable_message(ort.__version__, available, started=False))
    chosen: list[Any] = []
    for p in asked:
        if p not in available:
            continue
        options = dict((provider_options or {}).get(p, {}))
        if p in GPU_PROVIDERS:
            options["device_id"] = str(device_id)
        chosen.append((p, options) if options else p)
    session = ort.InferenceSession(path, opts, providers=chosen or None)
    on_gpu = session.get_providers()[0] in GPU_PROVIDERS
    if wants_gpu and not on_gpu:
        raise GpuUnavailable(gpu_unavailable_message(ort.__version__, available, started=True))
    return session, "cuda" if on_gpu else "cpu", device_id if on_gpu else 0


def gpu_unavailable_message(version: str, available: list[str], started: bool) -> str:
    """One line: why a GPU session would fall back to the CPU, and what to do."""
    if not started:
        return (
            f"onnxruntime {version} here has no CUDA provider (it has {', '.join(available)}): "
            "install onnxruntime-gpu alone (pip uninstall onnxruntime onnxruntime-gpu, then "
            "pip install onnxruntime-gpu); both in one environment hide the CUDA provider"
        )
    return (
        f"onnxruntime {version}'s CUDA provider failed to start, so the graph would run on "
        "the CPU: its CUDA or cuDNN libraries are missing or of another major version "
        "(see the log line above from onnxruntime naming the library; the GPU image pins "
        "the versions that agree, see tritonkit/versions.py)"
    )


KV_DTYPES: dict[str, Any] = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _kv_dtype(onnx_type: str) -> Any:
    """The numpy type of a graph's past tensors.

    Raises:
        ValueError: a type this runtime cannot feed (bfloat16: numpy has none).
    """
    try:
        return KV_DTYPES[onnx_type]
    except KeyError:
        raise ValueError(
            f"the decoder's KV cache is {onnx_type}; this runtime feeds "
            f"{' or '.join(KV_DTYPES)} only: export with --dtype float32 or float16"
        ) from None


class OnnxDecoder:
    """``forward(ids, mask, positions, past) -> (last_logits, presents)`` over onnxruntime.

    Presents come back as onnxruntime ``OrtValue``s and are fed to the next step as
    they are (IO binding), so the cache is not copied through numpy between steps;
    on a GPU provider they stay in device memory.
    """

    def __init__(
        self,
        path: str,
        providers: list[str] | None = None,  # e.g. ["CUDAExecutionProvider", "CPU..."]
        intra_op_threads: int | None = None,  # None: auto_threads; 0: onnxruntime decides
        device_id: int = 0,  # the GPU Triton gave this instance (KIND_GPU)
        provider_options: dict[str, dict[str, str]] | None = None,
    ) -> None:
        # On a GPU the presents are bound to device memory and fed back as they are:
        # the KV cache stays on the GPU between steps.
        self.session, self.device, self.device_id = make_session(
            path, providers, intra_op_threads, device_id, provider_options
        )
        inputs = self.session.get_inputs()
        past = [i for i in inputs if i.name.startswith("past_key_values.")]
        shape = past[0].shape  # [batch_size, kv_heads, past_sequence_length, head_dim]
        self.spec = DecoderSpec(
            num_layers=len(past) // 2,
            num_kv_heads=int(shape[1]),
            head_dim=int(shape[3]),
            kv_dtype=_kv_dtype(past[0].type),
        )
        self.past_names = [i.name for i in past]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int) -> list[Any]:
        """Zero-length past tensors for a prefill: each (B, kv_heads, 0, head_dim)."""
        s = self.spec
        return [np.zeros((batch, s.num_kv_heads, 0, s.head_dim), s.kv_dtype)] * (2 * s.num_layers)

    def forward(
        self,
        input_ids: np.ndarray,  # (B, S) int64
        attention_mask: np.ndarray,  # (B, P+S) int64
        position_ids: np.ndarray,  # (B, S) int64
        past: list[Any],  # 2L arrays or OrtValues, each (B, kv_heads, P, head_dim)
    ) -> tuple[np.ndarray, list[Any]]:
        """Run one step; returns the last position's logits (B, vocab) and the presents."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, np.int64))
        for name, value in zip(self.past_names, past):
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()[:, -1, :]  # (B, S, vocab) -> (B, vocab)
        return logits, list(outputs[1:])
