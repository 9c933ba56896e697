"""``main_export``: a Hugging Face causal LM to a verified ONNX decoder with KV cache.

Data flow: load (hub id / folder / tiny-llama) -> wrap (flat KV cache) -> torch.export
-> ONNX in a temporary folder -> verify against PyTorch -> export.json -> move into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit import __version__
from tritonkit.core.layout import EXPORT_REPORT, GENERATION_FILE, ONNX_FILE
from tritonkit.errors import ExportError, UsageError, VerificationError
from tritonkit.fsutil import check_output_dir, staged_output

from .architectures import BATCH, PAST_SEQUENCE, SEQUENCE, TOTAL_SEQUENCE, ModelDims, dims_of
from .compat import graph_min_onnxruntime, onnxruntime_conflict, onnxruntime_distributions
from .fused import FUSED, FUSED_ARCHITECTURES, build_fused, choose_graph
from .loading import LoadedModel, load
from .verify import Verification, failure_summary, verify
from .verify_fused import verify_fused
from .wrapper import DecoderWithPast, example_inputs, input_names, output_names

DEFAULT_OPSET = 18  # onnxruntime 1.19 in Triton 24.10 runs opsets up to 21
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # protobuf's 2 GB limit on one file
GREEDY_PROMPT = "The quick brown fox jumps over the lazy dog."


@dataclass
class ExportResult:
    """Where the export went and what its report says."""

    output: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def _dynamic_shapes(dims: ModelDims) -> tuple[Any, ...]:
    import torch

    batch = torch.export.Dim(BATCH)
    seq = torch.export.Dim(SEQUENCE)
    past = torch.export.Dim(PAST_SEQUENCE)
    total = torch.export.Dim(TOTAL_SEQUENCE)
    kv = tuple({0: batch, 2: past} for _ in range(2 * dims.num_layers))
    # input_ids, attention_mask, position_ids, *past (varargs need a tuple)
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, kv)


def _export_graph(
    model: Any, dims: ModelDims, path: Path, opset: int, device: str, threshold: int
) -> bool:
    """Export ``model`` to ``path``; returns whether weights went to external data."""
    import torch

    dtype = next(model.parameters()).dtype
    wrapper = DecoderWithPast(model).eval()
    inputs = example_inputs(dims, dtype, device)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                wrapper,
                inputs,
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(dims),
                input_names=input_names(dims.num_layers),
                output_names=output_names(dims.num_layers),
                opset_version=opset,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean the same here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.onnx.export failed: {first}") from exc
    assert program is not None
    _name_present_dims(program)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > threshold
    try:
        # External data is one file next to the model, referenced by a relative name.
        program.save(str(path), external_data=external)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return external


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision notices, axis renames) during export."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _name_present_dims(program: Any) -> None:
    """Name the presents' length ``total_sequence_length`` instead of an expression."""
    import onnx_ir as ir

    for value in program.model.graph.outputs:
        if value.name.startswith("present.") and value.shape is not None:
            dims = list(value.shape.dims)
            dims[2] = ir.SymbolicDim(TOTAL_SEQUENCE)
            value.shape = ir.Shape(dims)


def _io_spec(path: Path) -> dict[str, list[dict[str, Any]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {
            "name": v.name,
            "dtype": onnx.TensorProto.DataType.Name(t.elem_type),
            "shape": shape,
        }

    return {
        "inputs": [describe(v) for v in graph.input],
        "outputs": [describe(v) for v in graph.output],
    }


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "tritonkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _save_tokenizer_and_settings(loaded: Any, dims: ModelDims, folder: Path) -> dict[str, Any]:
    config = loaded.model.config
    gen = getattr(loaded.model, "generation_config", None)

    def ids(value: Any) -> list[int]:
        if value is None:
            return []
        return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]

    eos = ids(getattr(gen, "eos_token_id", None)) or ids(config.eos_token_id)
    pad = getattr(gen, "pad_token_id", None)
    if pad is None:
        pad = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else None
    tok = loaded.tokenizer
    if tok is not None:
        tok.save_pretrained(folder)
        if pad is None and tok.pad_token_id is not None:
            pad = tok.pad_token_id
        if not eos and tok.eos_token_id is not None:
            eos = [int(tok.eos_token_id)]
    settings = {
        "eos_token_ids": eos,
        "pad_token_id": int(pad) if pad is not None else (eos[0] if eos else 0),
        "bos_token_id": getattr(config, "bos_token_id", None),
        "max_context": dims.max_positions,
        "vocab_size": dims.vocab_size,
        "has_tokenizer": tok is not None,
        "has_chat_template": bool(getattr(tok, "chat_template", None)),
    }
    (folder / GENERATION_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    config.save_pretrained(folder)  # config.json, for reference and for TensorRT builds
    return settings


def main_export(
    model: str,
    output: str | Path,
    dtype: str = "float32",
    opset: int = DEFAULT_OPSET,
    device: str = "cpu",
    force: bool = False,
    new_tokens: int = 32,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    progress: Callable[[str], None] | None = None,
    gguf_file: str | None = None,
    graph: str = "auto",
    quantize: str | None = None,
) -> ExportResult:
    """Export ``model`` to ``output`` and verify it; the one entry point the CLI forwards to.

    ``model`` is an alias (``tiny-llama``, ``smollm2``), a ``.gguf`` file, a folder or a
    hub id; ``gguf_file`` names a GGUF file inside the folder ``model``. ``graph``:
    ``fused`` (GroupQueryAttention with a shared KV buffer, see ``fused.py``), ``concat``
    (our torch.export graph, every architecture), or ``auto`` (fused where it exists and
    onnxruntime-genai is installed). ``quantize="int4"`` stores the weights of the fused
    graph in 4 bits (see ``fused.build_fused``) and is judged by its teacher-forced quality
    (``quality.py``) instead of the strict checks its weights cannot meet. The output is
    written to a temporary sibling folder and moved into place at the end, so an
    interrupted export never leaves a folder that looks complete.

    Raises:
        UsageError: bad arguments, or ``output`` exists and is not empty without ``force``.
        ModelSourceError: the model cannot be found or loaded.
        UnsupportedModelError: not a causal LM, or an unsupported architecture.
        ExportError: the exporter or the disk failed.
        VerificationError: the export ran, but a check failed (the report is still written).
    """
    say = progress or (lambda _msg: None)
    output = Path(output).expanduser().resolve()
    _check_arguments(dtype, opset, device, graph, quantize)
    check_output_dir(output, force)

    started = time.perf_counter()
    say(f"loading {model}")
    loaded = load(
        model, dtype=dtype, device=device, gguf_file=gguf_file, progress=progress is not None
    )
    dims = dims_of(loaded.model.config)
    kind = _graph_kind(loaded, graph, quantize, dtype, device)
    timings = {"load": time.perf_counter() - started}
    opts = _Options(dtype, quantize, opset, device)

    with staged_output(output, ExportError) as staging:
        t0 = time.perf_counter()
        external = _write_graph(loaded, dims, kind, staging, opts, external_data_threshold, say)
        timings["export"] = time.perf_counter() - t0
        settings = _save_tokenizer_and_settings(loaded, dims, staging)
        t0 = time.perf_counter()
        verification = _verify_graph(loaded, dims, kind, staging / ONNX_FILE, opts, new_tokens, say)
        timings["verify"] = time.perf_counter() - t0
        report = _export_report(
            loaded,
            dims,
            kind,
            opts,
            verification,
            staging / ONNX_FILE,
            external,
            settings,
            timings,
        )
        (staging / EXPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n")

    result = ExportResult(output, report)
    if not verification.passed:
        raise VerificationError(failure_summary(report, EXPORT_REPORT))
    return result


@dataclass(frozen=True)
class _Options:
    """The options the graph is written, verified and reported with (``export.json``
    keeps this order)."""

    dtype: str
    quantize: str | None
    opset: int
    device: str


def _check_arguments(dtype: str, opset: int, device: str, graph: str, quantize: str | None) -> None:
    """Check the export's options against each other and this machine.

    Raises:
        UsageError: an unknown device or quantization, ``cuda`` without a GPU, int4 with
            the concat graph or the wrong dtype, an opset outside 14..23.
        ExportError: bfloat16 on the CPU, where onnxruntime cannot verify it.
    """
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
        _check_cuda_onnxruntime()
    if dtype == "bfloat16" and device == "cpu":
        raise ExportError(
            "onnxruntime's CPU kernels lack bfloat16, so the graph could not be verified here: "
            "export on a GPU (--device cuda with onnxruntime-gpu) or export float16"
        )
    if quantize not in (None, "int4"):
        raise UsageError(f"unknown quantization {quantize!r}; the one offered is int4")
    if quantize and graph == "concat":
        raise UsageError("--quantize int4 needs the fused graph; drop --graph concat")
    if quantize and dtype != ("float16" if device == "cuda" else "float32"):
        raise UsageError(
            "--quantize int4 keeps float32 activations on the CPU and float16 on a GPU: "
            f"use --dtype {'float16' if device == 'cuda' else 'float32'} with --device {device}"
        )
    if not 14 <= opset <= 23:
        raise UsageError(f"opset {opset} is out of range; use 14..23 (default {DEFAULT_OPSET})")


def _check_cuda_onnxruntime() -> None:
    """An export on CUDA is verified with onnxruntime's CUDA provider: refuse an
    environment where it is missing, instead of verifying another graph than asked.

    Raises:
        UsageError: onnxruntime and onnxruntime-gpu together, or no CUDA provider.
    """
    import onnxruntime as ort

    conflict = onnxruntime_conflict(onnxruntime_distributions())
    if conflict:
        raise UsageError(f"--device cuda: {conflict}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UsageError(
            f"--device cuda: onnxruntime {ort.__version__} here has no CUDA provider; "
            "pip install 'tritonkit[export-gpu]' (onnxruntime-gpu and onnxruntime-genai-cuda)"
        )


def _graph_kind(
    loaded: LoadedModel, graph: str, quantize: str | None, dtype: str, device: str
) -> str:
    """The graph to export for the loaded model (``fused`` or ``concat``).

    Raises:
        UsageError: int4 asked for an architecture without the fused graph, or a graph
            ``choose_graph`` refuses.
    """
    model_type = loaded.model.config.model_type
    if quantize and model_type not in FUSED_ARCHITECTURES:
        raise UsageError(
            f"--quantize int4 needs the fused graph, which supports "
            f"{', '.join(FUSED_ARCHITECTURES)}, not {model_type!r}: export it unquantized"
        )
    head_dim = dims_of(loaded.model.config).head_dim
    return choose_graph("fused" if quantize else graph, model_type, dtype, device, head_dim)


def _write_graph(
    loaded: LoadedModel,
    dims: ModelDims,
    kind: str,
    staging: Path,
    opts: _Options,
    external_data_threshold: int,
    say: Callable[[str], None],
) -> bool:
    """Write ``staging/model.onnx`` (fused by onnxruntime-genai's builder, or concat by
    torch.export); returns whether its weights went to external data.

    Raises:
        ExportError: the exporter or the disk failed.
    """
    if kind == FUSED:
        say("exporting to ONNX with fused attention (onnxruntime-genai's builder)")
        if opts.quantize:
            say(f"quantizing the weights to {opts.quantize} (block 32, k-quant, mixed)")
        build_fused(
            loaded.model,
            loaded.tokenizer,
            staging,
            opts.dtype,
            opts.device,
            dims.head_dim,
            opts.quantize,
        )
        return (staging / (ONNX_FILE + ".data")).is_file()
    say("exporting to ONNX (torch.export)")
    return _export_graph(
        loaded.model, dims, staging / ONNX_FILE, opts.opset, opts.device, external_data_threshold
    )


def _verify_graph(
    loaded: LoadedModel,
    dims: ModelDims,
    kind: str,
    graph_path: Path,
    opts: _Options,
    new_tokens: int,
    say: Callable[[str], None],
) -> Verification:
    """Verify the written graph against the PyTorch model, on the tokenized greedy
    prompt (made-up ids when the model has no tokenizer); never raises on a miss.

    Raises:
        ExportError: onnxruntime cannot load the graph.
    """
    if loaded.tokenizer is not None:
        prompt_ids = list(loaded.tokenizer(GREEDY_PROMPT)["input_ids"])
    else:
        prompt_ids = [(7 * i + 3) % dims.vocab_size for i in range(10)]
    args = (loaded.model, str(graph_path), dims, opts.dtype, prompt_ids)
    kwargs: dict[str, Any] = {
        "device": opts.device,
        "new_tokens": new_tokens,
        "progress": lambda name: say(f"verifying: {name}"),
        "tokenizer": loaded.tokenizer,
    }
    if kind == FUSED:
        return verify_fused(*args, precision=opts.quantize or opts.dtype, **kwargs)
    return verify(*args, **kwargs)


def _export_report(
    loaded: LoadedModel,
    dims: ModelDims,
    kind: str,
    opts: _Options,
    verification: Verification,
    graph_path: Path,
    external: bool,
    settings: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """``export.json``: the source, graph, options (dtype, quantize, opset, device), files,
    I/O, every check's result and the timings.

    Raises:
        OSError: the graph cannot be read back for its I/O spec.
    """
    return {
        "passed": verification.passed,
        "greedy_match": verification.greedy.match,
        "source": loaded.source_report(),
        "architecture": loaded.model.config.model_type,
        "graph": kind,
        "dims": dims.to_dict(),
        **dataclasses.asdict(opts),
        "files": {
            "model": ONNX_FILE,
            "external_data": ONNX_FILE + ".data" if external else None,
            "generation": GENERATION_FILE,
        },
        "generation": settings,
        **_io_spec(graph_path),
        "checks": [c.to_dict() for c in verification.checks],
        "greedy": verification.greedy.to_dict(),
        "quality": verification.quality.to_dict(),
        "timings_s": {step: round(seconds, 3) for step, seconds in timings.items()},
        "versions": _versions(),
        # The oldest onnxruntime that loads this graph: `repo build --target gpu` checks
        # it against the GPU image's (tritonkit/versions.py).
        "min_onnxruntime": graph_min_onnxruntime(graph_path),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
