"""What a repository is built with: the settings every engine shares, and one typed spec
per engine.

    build_repository(source, output, Vllm(dtype="bfloat16"), RepositorySpec(target="gpu"))

``RepositorySpec`` holds what every repository has whichever engine generates: the entry
model's name, the target, the version, rows in flight, the context, the prefix cache and
the unary twin. An engine spec holds its own options and names its builder module
(``builders/``); ``build.build_repository`` dispatches on it. A further engine (TensorRT-LLM)
is one more spec class and one more builder module, and nothing else changes: the
entry models all serve ``tritonkit.core.interface``, so clients, the gateway, perf, Blob
and deploy take its repositories as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tritonkit.errors import UsageError

from .gpus import DEFAULT_GPU, DEFAULT_UTILIZATION, KvPlan

TARGETS = ("cpu", "gpu")


@dataclass(frozen=True)
class RepositorySpec:
    """The settings every engine's repository has.

    ``max_batch_size``: sequences generated at once (rows of the KV cache; vLLM's
    ``max_num_seqs``). ``max_context``: tokens per request, prompt plus answer (default:
    the model's own; on the GPU with tritonkit's engine, what fits the memory).
    ``sync_instances``: instances of the unary twin ``NAME_sync``.
    ``allow_unverified``: accept a source whose verification failed or is missing.
    """

    name: str = "llm"
    target: str = "cpu"
    version: int = 1
    max_batch_size: int = 16
    max_context: int | None = None
    prefix_cache: bool = True
    sync_instances: int = 4
    allow_unverified: bool = False

    def check(self) -> None:
        """Check the fields on their own (an engine checks them against its source).

        Raises:
            UsageError: an unknown target, a bad version, model name, batch size or
                instance count.
        """
        if self.target not in TARGETS:
            raise UsageError(f"unknown target {self.target!r}; choose cpu or gpu")
        if self.version < 1:
            raise UsageError(f"version must be >= 1, got {self.version}")
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise UsageError(f"model name {self.name!r} may hold letters, digits, '-' and '_' only")
        if not 1 <= self.max_batch_size <= 256:
            raise UsageError(f"max batch size must be in 1..256, got {self.max_batch_size}")
        if self.sync_instances < 1:
            raise UsageError(f"sync instances must be >= 1, got {self.sync_instances}")


@dataclass
class BuiltRepository:
    """What was built, for printing."""

    path: Path
    entry_model: str
    decoder_model: str  # "" where the engine runs the weights itself (vLLM)
    version: int
    target: str
    engine: str = "onnxruntime"
    kv_cache_bytes: int = 0  # tritonkit's fused engine: its KV rows, all full (per instance)
    kv_plan: KvPlan | None = None  # gpu target: the memory budget and what it chose


@dataclass(frozen=True)
class EngineSpec:
    """The slot: an engine's options, the name users pick it by, its builder (the module
    whose ``build(source, output, spec, engine, force)`` writes the repository; tritonkit's
    are in ``builders/``, another package may bring its own) and the folder it builds from.
    """

    kind: ClassVar[str]
    builder: ClassVar[str]
    source: ClassVar[str]  # what --export names, for help and errors

    def check(self, spec: RepositorySpec) -> None:
        """Check the options against ``spec``, before any file is read or written.

        Raises:
            UsageError: an option out of range or one ``spec``'s target cannot take.
        """


@dataclass(frozen=True)
class OnnxRuntime(EngineSpec):
    """tritonkit's engine: the entry model runs the verified ONNX decoder in-process with
    onnxruntime (in-flight batching, chunked prefill, prefix cache); ``NAME_decoder``
    serves the same graph to perf_analyzer and direct callers.

    ``prefill_chunk``: prompt tokens read per loop iteration between decode steps.
    ``stall_factor``: while streams run, prompts are read in chunks that keep a stream's
    gap near this many decode steps. ``tensorrt_accelerator`` (gpu): onnxruntime's
    TensorRT execution provider inside the entry model. ``gpu`` and
    ``gpu_memory_utilization`` (gpu): the card whose memory sizes the KV cache.
    """

    kind: ClassVar[str] = "onnxruntime"
    builder: ClassVar[str] = "tritonkit.model_repository.builders.onnxruntime"
    source: ClassVar[str] = "a `tritonkit export onnx` folder"

    prefill_chunk: int = 128
    stall_factor: float = 4.5
    tensorrt_accelerator: bool = False
    gpu: str = DEFAULT_GPU
    gpu_memory_utilization: float = DEFAULT_UTILIZATION

    def check(self, spec: RepositorySpec) -> None:
        if self.prefill_chunk < 1:
            raise UsageError(f"--prefill-chunk must be >= 1, got {self.prefill_chunk}")
        if not self.stall_factor > 1:
            raise UsageError(
                "--stall-factor must be > 1 (a stream's gap in decode steps), got "
                f"{self.stall_factor}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise UsageError(
                f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )


@dataclass(frozen=True, kw_only=True)
class TensorRTPlan(OnnxRuntime):
    """tritonkit's engine with ``NAME_decoder`` served from a TensorRT engine
    (``plan``: a `tritonkit export tensorrt` folder holding model.plan); the entry model
    keeps the ONNX graph. GPU target only."""

    kind: ClassVar[str] = "tensorrt"
    plan: Path

    def check(self, spec: RepositorySpec) -> None:
        super().check(spec)
        if spec.target != "gpu":
            raise UsageError("--engine tensorrt needs --target gpu (engines run on a GPU)")
        if not (Path(self.plan).expanduser() / "model.plan").is_file():
            raise UsageError(
                "--engine tensorrt needs --plan DIR holding model.plan "
                "(build it on the GPU with `tritonkit export tensorrt`)"
            )


@dataclass(frozen=True)
class Vllm(EngineSpec):
    """vLLM's ``AsyncLLM`` behind the same entry model interface, from a Hugging Face
    folder (`tritonkit export hf`); there is no decoder model.

    ``dtype``: the weights' (default float32 on the CPU, the checkpoint's on a GPU).
    ``cpu_kv_cache_gib``: the KV cache on the CPU (``VLLM_CPU_KVCACHE_SPACE``).
    ``gpu_memory_utilization``: vLLM's, on a GPU.
    """

    kind: ClassVar[str] = "vllm"
    builder: ClassVar[str] = "tritonkit.model_repository.builders.vllm"
    source: ClassVar[str] = "a `tritonkit export hf` folder"

    dtype: str | None = None
    cpu_kv_cache_gib: float = 1.0
    gpu_memory_utilization: float = DEFAULT_UTILIZATION

    def check(self, spec: RepositorySpec) -> None:
        if not self.cpu_kv_cache_gib > 0:
            raise UsageError(f"--cpu-kv-cache-gib must be > 0, got {self.cpu_kv_cache_gib}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise UsageError(
                f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.dtype not in (None, "auto", "float32", "float16", "bfloat16"):
            raise UsageError(f"unknown dtype {self.dtype!r}; choose auto, float32, float16 "
                             "or bfloat16")  # fmt: skip


ENGINES: dict[str, type[EngineSpec]] = {e.kind: e for e in (OnnxRuntime, TensorRTPlan, Vllm)}


def engine_spec(kind: str, **options: Any) -> EngineSpec:
    """The spec for the engine called ``kind``, built from the options it has (others,
    such as a CLI's flags for other engines, are ignored; None keeps a default).

    Raises:
        UsageError: an unknown engine, or a required option missing.
    """
    if kind not in ENGINES:
        raise UsageError(f"unknown engine {kind!r}; choose {', '.join(ENGINES)}")
    cls = ENGINES[kind]
    fields = cls.__dataclass_fields__
    chosen = {k: v for k, v in options.items() if k in fields and v is not None}
    try:
        return cls(**chosen)
    except TypeError as exc:
        missing = [k for k, f in fields.items() if k not in chosen and f.init and _required(f)]
        raise UsageError(
            f"--engine {kind} needs " + ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        ) from exc


def foreign_options(kind: str, chosen: dict[str, Any]) -> list[str]:
    """Among ``chosen`` (options a user set, by field name), those that belong to other
    engines only: a CLI refuses them rather than ignore them silently."""
    own = set(ENGINES[kind].__dataclass_fields__) if kind in ENGINES else set()
    others = {f for e in ENGINES.values() for f in e.__dataclass_fields__} - own
    return sorted(k for k in chosen if k in others)


def _required(field: Any) -> bool:
    from dataclasses import MISSING

    return bool(field.default is MISSING and field.default_factory is MISSING)
