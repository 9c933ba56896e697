"""The fused-attention graph: onnxruntime-genai's model builder, used as a library tool.

Our own export (``wrapper.py``, the "concat" graph) concatenates the past and new keys
and values into fresh present tensors every step and repeats the KV heads for the query
heads; a step at position 512 costs 1.7-1.9x one at position 16. onnxruntime's fused
``com.microsoft::GroupQueryAttention`` does the rotary embedding, the head grouping and
the KV cache write inside one op, and reads and writes one KV buffer of fixed capacity
shared by past and present. No optimizer pass turns a torch.export graph into it, while
onnxruntime-genai's model builder writes exactly that graph for Llama, Mistral, Qwen2
and Qwen3, so it is run here on the same (dequantized, clean) weights, and its graph is
verified against PyTorch like ours (``verify_fused.py``).

The graph ("fused"): inputs ``input_ids`` (B, S), ``attention_mask`` (B, T) marking each
row's real tokens from the left (right padding: row b holds ``sum(mask[b])`` tokens, the
new ones last), ``past_key_values.{i}.key|value`` (B, kv_heads, capacity, head_dim); no
``position_ids`` (positions follow from the mask). Outputs ``logits`` (B, 1, vocab) for
the last position only (``prune_lm_head``: a 512-token prompt no longer computes 100 MB of
logits it throws away) and ``present.{i}.key|value``, the same buffers when bound to them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tritonkit.core.layout import ONNX_FILE
from tritonkit.errors import ExportError, UsageError

FUSED = "fused"
CONCAT = "concat"
GRAPHS = ("auto", FUSED, CONCAT)
# Architectures the model builder writes with GroupQueryAttention and rotary inside.
FUSED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def builder_available() -> bool:
    """Whether onnxruntime-genai (its model builder) is installed."""
    try:
        import onnxruntime_genai.models.builder  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_onnxruntime() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


# Where the builder writes GroupQueryAttention (the only attention FusedDecoder runs):
# on the CPU in float32 (its float16 CPU graph has no fused attention), on CUDA in
# float16. Its CUDA float32 graph falls back to ai.onnx Attention with position_ids
# (onnxruntime has no float32 GroupQueryAttention on CUDA), and bfloat16 needs KV rows
# numpy cannot hold: both are served as the concat graph instead.
FUSED_DTYPES = {"cpu": ("float32",), "cuda": ("float16",)}
GQA_HEAD_MULTIPLE = 16  # onnxruntime's GroupQueryAttention refuses other head sizes


def fused_refusal(
    model_type: str, dtype: str, device: str, head_dim: int | None = None
) -> str | None:
    """Why the fused graph cannot be had for this architecture, dtype, device and head
    size (None when it can, installs aside)."""
    if model_type not in FUSED_ARCHITECTURES:
        return f"--graph fused supports {', '.join(FUSED_ARCHITECTURES)}, not {model_type!r}"
    if head_dim is not None and head_dim % GQA_HEAD_MULTIPLE:
        return (
            f"--graph fused needs a head size that is a multiple of {GQA_HEAD_MULTIPLE} "
            f"(onnxruntime's GroupQueryAttention), and this model's is {head_dim}"
        )
    if dtype not in FUSED_DTYPES.get(device, ()):
        allowed = FUSED_DTYPES.get(device, ())
        why = {
            ("cuda", "float32"): "onnxruntime has no float32 GroupQueryAttention on CUDA "
            "(the builder writes another attention op with position_ids, which the engine "
            "does not run)",
            ("cuda", "bfloat16"): "the engine's KV rows hold float16 or float32 (numpy has "
            "no bfloat16); float16 takes the same memory",
            ("cpu", "float16"): "the builder's float16 CPU graph has no fused attention",
        }.get((device, dtype), "the builder writes no fused attention for it")
        return f"--graph fused on {device} is {' or '.join(allowed)} only (asked: {dtype}): {why}"
    return None


def choose_graph(
    requested: str,
    model_type: str,
    dtype: str = "float32",
    device: str = "cpu",
    head_dim: int | None = None,
) -> str:
    """``fused`` or ``concat`` for ``requested`` (``auto``, ``fused`` or ``concat``).

    ``auto`` is fused where ``FUSED_DTYPES`` allows it and the builder is installed,
    else concat; ``fused`` where it cannot be had is refused with the reason.

    Raises:
        UsageError: ``fused`` asked for an architecture, dtype, device or install that
            cannot have it.
    """
    if requested not in GRAPHS:
        raise UsageError(f"unknown graph {requested!r}; choose one of {', '.join(GRAPHS)}")
    if requested == CONCAT:
        return CONCAT
    refusal = fused_refusal(model_type, dtype, device, head_dim)
    # The fused graph is verified by running it where it will serve: on a GPU that needs
    # onnxruntime-gpu (the concat graph is verified against PyTorch on the CPU too).
    available = builder_available() and (device != "cuda" or _cuda_onnxruntime())
    if requested == FUSED and refusal:
        raise UsageError(f"{refusal}; use --graph concat (or auto)")
    if requested == FUSED and not available:
        raise UsageError(
            "--graph fused needs onnxruntime-genai's model builder (pip install "
            "'tritonkit[export]', or 'tritonkit[export-gpu]' on a GPU machine), and "
            "onnxruntime-gpu for --device cuda; or use --graph concat"
        )
    return FUSED if refusal is None and available else CONCAT


def build_fused(
    model: Any,
    tokenizer: Any,
    output: Path,
    dtype: str,
    device: str,
    head_dim: int,
    quantize: str | None = None,
) -> None:
    """Write ``output/model.onnx`` (+ ``model.onnx.data``) with fused attention.

    ``model`` is saved as a plain Hugging Face folder first (the builder reads folders);
    ``quantize="int4"`` stores the MatMul weights as 4-bit blocks of 32 (MatMulNBits),
    the LM head and the most sensitive layers as 8-bit blocks.

    Raises:
        ExportError: the builder failed (its last line is in the message).
    """
    precision = "int4" if quantize == "int4" else PRECISIONS[dtype]
    provider = "cuda" if device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory(prefix="tritonkit-fused-") as tmp:
        hf_dir, built, cache = Path(tmp) / "hf", Path(tmp) / "out", Path(tmp) / "cache"
        model.save_pretrained(hf_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(hf_dir)
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir)]
        cmd += ["-o", str(built), "-p", precision, "-e", provider, "-c", str(cache)]
        options = ["prune_lm_head=true", f"filename={ONNX_FILE}"]
        if quantize == "int4":
            # k-quant (scales fitted per block, not just max-abs rounding), with the LM
            # head and the layers most sensitive to it kept in 8 bits, as llama.cpp's
            # Q4_K_M does: on SmolLM2-135M top-1 agreement 0.83 against 0.69 for plain
            # round-to-nearest 4 bits (see quality.py). The CPU's default accuracy level
            # (int8 activations inside MatMulNBits) is kept: it is the fast kernel.
            options += ["block_size=32", "algo_config=k_quant_mixed"]
        cmd += ["--extra_options", *options]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not (built / ONNX_FILE).is_file():
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            raise ExportError(
                "onnxruntime-genai's model builder failed: "
                f"{lines[-1] if lines else f'exit code {proc.returncode}'}"
            )
        # The builder also writes a tokenizer and its runtime config; ours come from the
        # export (tokenizer, generation.json), so only the graph is kept.
        for name in (ONNX_FILE, f"{ONNX_FILE}.data"):
            if (built / name).is_file():
                shutil.move(str(built / name), output / name)
    _name_cache_dims(output / ONNX_FILE, head_dim)


def _name_cache_dims(path: Path, head_dim: int) -> None:
    """The builder leaves the cache's last dim symbolic (``kv_cache_dim``); it is the head
    size, and Triton configs and profilers want it as a number, as in the concat graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # the weights stay where they are
    for value in [*model.graph.input, *model.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            dim = value.type.tensor_type.shape.dim[3]
            dim.ClearField("dim_param")
            dim.dim_value = head_dim
    onnx.save(model, str(path))
