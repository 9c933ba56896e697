"""GPU targets: which graphs a GPU repository may hold, and a KV cache that fits the GPU.

On a GPU the fused engine allocates its whole KV cache up front, ``rows x context``
tokens per layer, in device memory. The model's own context is the wrong default there:
Llama-3.1-8B with 16 rows of 131,072 tokens would need about 275 GB. So a GPU build sizes
the context from a memory budget, the way vLLM's ``gpu_memory_utilization`` does:

    budget   = GPU memory x utilization
    KV cache = budget - weights - RESERVED (CUDA context, onnxruntime's arena, logits)
    context  = min(model context, the GPU's default cap, KV cache / (rows x bytes a token))

rounded down to a multiple of ``CONTEXT_STEP``. An asked ``--max-context`` that does not
fit is refused, naming what would.

A T4 (compute capability 7.5) has no flash-attention kernel for GroupQueryAttention in
onnxruntime (that needs 8.0+); its fallback reads the whole allocated row every step, so a
step costs in proportion to the allocated context, not the tokens held. Its default
context is capped at ``T4_CONTEXT``; an A10 or A100 has no such cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonkit.core.layout import ExportReport
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.versions import ONNXRUNTIME, TRITON_ONNXRUNTIME, TRITON_TAG, at_least

GIB = 1 << 30
RESERVED = 1 * GIB  # CUDA context, onnxruntime's arena and workspaces, logits
CONTEXT_STEP = 256
T4_CONTEXT = 4096
DEFAULT_UTILIZATION = 0.9


@dataclass(frozen=True)
class Gpu:
    """One GPU model as an Azure VM size offers it."""

    name: str
    memory_gib: float
    compute_capability: str
    azure_sizes: tuple[str, ...]
    context_cap: int | None = None  # default context cap (no flash attention)

    @property
    def flash_attention(self) -> bool:
        return float(self.compute_capability) >= 8.0


GPUS: dict[str, Gpu] = {
    # memory_gib: what the card has, as nvidia-smi reports it (MiB / 1024), not its GB label
    "t4": Gpu("T4", 15.0, "7.5", ("Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3"), T4_CONTEXT),
    "a10": Gpu("A10", 22.5, "8.6", ("Standard_NV36ads_A10_v5",)),
    "a100": Gpu("A100 80GB", 80.0, "8.0", ("Standard_NC24ads_A100_v4",)),
    "h100": Gpu("H100 NVL", 93.6, "9.0", ("Standard_NC40ads_H100_v5",)),
}
DEFAULT_GPU = "t4"  # the VM size the README's create_vm.sh uses


@dataclass(frozen=True)
class KvPlan:
    """What a GPU build chose, for printing and for the entry config."""

    gpu: Gpu
    utilization: float
    weights_bytes: int
    kv_budget_bytes: int
    bytes_per_token: int  # one token of one row, every layer, keys and values
    rows: int
    context: int

    @property
    def kv_cache_bytes(self) -> int:
        return self.rows * self.context * self.bytes_per_token

    def describe(self) -> str:
        """One line: the budget and what it bought."""
        gib = GIB
        cap = "" if self.gpu.flash_attention else " (no flash attention: context capped)"
        return (
            f"{self.gpu.name} {self.gpu.memory_gib:g} GiB x {self.utilization:g}: weights "
            f"{self.weights_bytes / gib:.2f} GiB, KV cache {self.kv_cache_bytes / gib:.2f} GiB "
            f"= {self.rows} rows x {self.context} tokens{cap}"
        )


def resolve_gpu(name: str) -> Gpu:
    """A GPU by its short name (``t4``, ``a10``, ``a100``, ``h100``).

    Raises:
        UsageError: an unknown name.
    """
    try:
        return GPUS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown GPU {name!r}; choose one of {', '.join(GPUS)}") from None


def weights_bytes(export_dir: Path, report: ExportReport) -> int:
    """The graph and its external weights, as loaded into GPU memory."""
    files = [report.model_file, report.external_data]
    return sum((export_dir / f).stat().st_size for f in files if f)


def plan_kv_cache(
    report: ExportReport,
    weights: int,
    gpu: Gpu,
    rows: int,
    asked_context: int | None,
    utilization: float = DEFAULT_UTILIZATION,
) -> KvPlan:
    """The context each of ``rows`` rows gets within ``gpu``'s budget.

    Raises:
        UsageError: a utilization outside (0, 1], weights that leave no room, or an asked
            context that does not fit (the message says what would).
    """
    if not 0 < utilization <= 1:
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1], got {utilization}")
    d = report.dims
    itemsize = 2 if report.dtype in ("float16", "bfloat16") else 4
    per_token = 2 * d.num_layers * d.num_kv_heads * d.head_dim * itemsize
    budget = int(gpu.memory_gib * GIB * utilization) - weights - RESERVED
    fits = budget // (rows * per_token) if budget > 0 else 0
    fits = min(fits, d.max_positions)
    if asked_context is not None:
        if asked_context > fits:
            instead = f"--max-context {fits} or " if fits >= 2 else ""
            raise UsageError(
                f"--max-context {asked_context} x {rows} rows needs "
                f"{asked_context * rows * per_token / GIB:.2f} GiB of KV cache and the "
                f"{gpu.name} has {max(budget, 0) / GIB:.2f} GiB left after the weights: "
                f"use {instead}fewer --max-batch-size rows, or a larger GPU (--gpu)"
            )
        return KvPlan(gpu, utilization, weights, max(budget, 0), per_token, rows, asked_context)
    context = min(fits, gpu.context_cap or fits)
    if context < d.max_positions:
        context = _rounded(context)
    if context < CONTEXT_STEP and context < d.max_positions:
        raise UsageError(
            f"the weights ({weights / GIB:.2f} GiB) leave room for only {context} tokens a row "
            f"on a {gpu.name} at {rows} rows: lower --max-batch-size, quantize (--quantize "
            "int4 at export) or choose a larger GPU (--gpu)"
        )
    return KvPlan(gpu, utilization, weights, max(budget, 0), per_token, rows, context)


def _rounded(tokens: int) -> int:
    return max(tokens // CONTEXT_STEP * CONTEXT_STEP, 0)


def check_gpu_graph(
    report: ExportReport, min_onnxruntime: str, backend: str, tensorrt_accelerator: bool = False
) -> None:
    """Refuse a graph the GPU image cannot serve as built.

    Raises:
        RepositoryError: a fused graph exported for the CPU, a fused graph with the TensorRT
            accelerator, or one whose minimum onnxruntime is newer than the GPU image's
            (the entry model's onnxruntime-gpu, or Triton's onnxruntime backend for the
            decoder model).
    """
    if report.fused and tensorrt_accelerator:
        raise RepositoryError(
            "--tensorrt-accelerator cannot take the fused graph: TensorRT has no "
            "GroupQueryAttention, so onnxruntime splits the graph and its TensorRT provider "
            "refuses the pieces' inner shapes, which no profile covers; leave the flag out "
            "(CUDA runs the fused graph) or export --graph concat for TensorRT"
        )
    if report.fused and report.device != "cuda":
        raise RepositoryError(
            f"this fused graph was exported for the CPU ({report.quantize or report.dtype}, "
            "GroupQueryAttention in float32): on a GPU its attention would run on the CPU "
            "and copy the KV cache across every step. Export it for the GPU (--dtype float16 "
            "--device cuda, on a GPU machine) or with --graph concat"
        )
    if min_onnxruntime == "unknown":
        raise RepositoryError(
            "the graph uses an opset or operator newer than tritonkit knows: it cannot tell "
            f"whether onnxruntime {ONNXRUNTIME} (the GPU image's) loads it; export with this "
            "version of tritonkit"
        )
    checks = [("the entry model's onnxruntime-gpu", ONNXRUNTIME)]
    if backend == "onnxruntime":  # the decoder model on Triton's own onnxruntime backend
        checks.append((f"Triton {TRITON_TAG}'s onnxruntime backend", TRITON_ONNXRUNTIME))
    for what, version in checks:
        if not at_least(version, min_onnxruntime):
            raise RepositoryError(
                f"the graph needs onnxruntime >= {min_onnxruntime} and {what} is {version}: "
                "move the image to a newer release in tritonkit/versions.py, or export with "
                "--graph concat"
            )
