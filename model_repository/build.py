"""``build_repository``: an export folder -> a Triton model repository.

What the repository looks like (folder and file names, ``NAME/V/decoder.json``, the
tokenizer folder) is declared in ``runtime/layout.py``; see its diagram.

``NAME_sync`` is a small non-decoupled twin of the entry model for unary calls
(HTTP /infer, gRPC ModelInfer), which Triton refuses on decoupled models.
The entry model runs the decoder's graph in-process from ``NAME_decoder/V/``, so the
weights are stored once; the decoder model serves the same file to perf_analyzer
and direct callers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tritonkit.client.chat import ChatTemplate
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.fsutil import check_output_dir, link_or_copy, staged_output

from . import config as cfg
from . import gpus
from .runtime import layout
from .runtime.layout import DecoderRef, ExportReport, LayoutError

HERE = Path(__file__).parent
TARGETS = ("cpu", "gpu")


@dataclass
class BuiltRepository:
    """What was built, for printing."""

    path: Path
    entry_model: str
    decoder_model: str
    version: int
    target: str
    kv_cache_bytes: int = 0  # the fused engine's KV rows, all full (per model instance)
    kv_plan: gpus.KvPlan | None = None  # gpu target: the memory budget and what it chose


def _buildable_export(export_dir: Path, allow_unverified: bool) -> ExportReport:
    """Read and check an export folder's ``export.json`` for building a repository.

    Raises:
        RepositoryError: not an export folder, no tokenizer, or an export that failed
            verification (unless ``allow_unverified``).
    """
    try:
        report = layout.read_export_report(export_dir)
    except LayoutError as exc:
        raise RepositoryError(
            f"{exc}; run `tritonkit export onnx --output {export_dir}` first"
        ) from exc
    if not report.passed and not allow_unverified:
        raise RepositoryError(
            f"the export in {export_dir} failed verification; fix it or pass --allow-unverified"
        )
    if not (export_dir / layout.TOKENIZER_FILE).is_file():
        raise RepositoryError(
            f"{export_dir} has no {layout.TOKENIZER_FILE}; the entry model needs a fast "
            "tokenizer (export from a folder or hub id that has one)"
        )
    return report


def _chat_template(export_dir: Path) -> str | None:
    """The export's chat template as the entry config carries it; None when it has none.

    Raises:
        RepositoryError: the tokenizer files are not JSON or the template is not jinja.
    """
    try:
        template = ChatTemplate.from_dir(export_dir)
    except UsageError as exc:
        raise RepositoryError(f"{exc}; fix the export's tokenizer files") from exc
    return None if template.is_plain else template.to_config()


def copy_runtime(dest: Path) -> None:
    """Copy the pure runtime modules (numpy/onnxruntime/tokenizers only) to ``dest``."""
    dest.mkdir(parents=True)
    for src in sorted((HERE / "runtime").glob("*.py")):
        shutil.copy2(src, dest / src.name)


def build_repository(
    export_dir: str | Path,
    output: str | Path,
    name: str = "llm",
    target: str = "cpu",
    version: int = 1,
    max_batch_size: int = 16,
    force: bool = False,
    allow_unverified: bool = False,
    tensorrt_accelerator: bool = False,
    sync_instances: int = 4,
    backend: str = "onnxruntime",
    plan: str | Path | None = None,
    max_context: int | None = None,
    prefill_chunk: int = 128,
    prefix_cache: bool = True,
    stall_factor: float = 4.5,
    gpu: str = gpus.DEFAULT_GPU,
    gpu_memory_utilization: float = gpus.DEFAULT_UTILIZATION,
) -> BuiltRepository:
    """Assemble a Triton model repository from an export folder.

    ``max_context``: tokens per request (prompt plus answer), which sizes each row of the
    fused engine's KV cache (default on the CPU: the model's own context, whose memory the
    OS commits only as rows fill; on a GPU, where it is allocated whole: what fits
    ``gpu``'s memory times ``gpu_memory_utilization`` after the weights, see ``gpus.py``).
    ``prefill_chunk``: prompt tokens read per loop iteration between decode steps.
    ``prefix_cache``: a finished request's KV row is kept for later prompts that start
    the same way (recorded in the entry config; the fused graph only).
    ``stall_factor``: while streams run, a prompt is read in chunks that keep their gap
    near this many decode steps (larger: long prompts start sooner, streams stutter more).

    Raises:
        UsageError: bad arguments, a non-empty ``output`` without ``force``, or (gpu
            target) a context or batch that does not fit the GPU.
        RepositoryError: the export folder is missing, incomplete or unverified, or (gpu
            target) holds a graph the GPU image cannot serve.
    """
    export_dir = Path(export_dir).expanduser().resolve()
    output = Path(output).expanduser().resolve()
    plan_file = _checked_arguments(name, target, version, max_batch_size, backend, plan)
    if not stall_factor > 1:
        raise UsageError(
            f"--stall-factor must be > 1 (a stream's gap in decode steps), got {stall_factor}"
        )
    if not export_dir.is_dir():
        raise RepositoryError(f"export folder {str(export_dir)!r} does not exist")
    report = _buildable_export(export_dir, allow_unverified)
    kv_plan = None
    if target == "gpu":
        gpus.check_gpu_graph(
            report, _min_onnxruntime(export_dir, report), backend, tensorrt_accelerator
        )
        _checked_context(report, max_context, prefill_chunk)
        weights = gpus.weights_bytes(export_dir, report)
        kv_plan = gpus.plan_kv_cache(
            report,
            weights,
            gpus.resolve_gpu(gpu),
            max_batch_size,
            max_context,
            gpu_memory_utilization,
        )
        context = kv_plan.context
    else:
        context = _checked_context(report, max_context, prefill_chunk)
    chat_template = _chat_template(export_dir)
    check_output_dir(output, force)
    decoder = layout.decoder_model_name(name)
    with staged_output(output, RepositoryError) as repo:
        _write_decoder(
            repo,
            decoder,
            version,
            export_dir,
            report,
            target,
            plan_file,
            tensorrt_accelerator,
            backend,
        )
        _write_entry(
            repo,
            name,
            version,
            export_dir,
            DecoderRef(decoder, version, report.model_file),
            target,
            max_batch_size,
            context,
            tensorrt_accelerator,
            chat_template,
            prefill_chunk,
            prefix_cache,
            stall_factor,
        )
        _write_sync(repo, name, version, sync_instances, target)
    return BuiltRepository(
        output,
        name,
        decoder,
        version,
        target,
        _kv_cache_bytes(report, max_batch_size, context),
        kv_plan,
    )


def _min_onnxruntime(export_dir: Path, report: ExportReport) -> str:
    """The oldest onnxruntime that loads the export's graph: from ``export.json``, or
    read from the graph for an export made before the report recorded it.

    Raises:
        RepositoryError: neither is possible here (no ``onnx`` package).
    """
    if report.min_onnxruntime:
        return report.min_onnxruntime
    try:
        from tritonkit.export.compat import graph_min_onnxruntime
    except ImportError:
        raise RepositoryError(
            f"{export_dir}'s export.json predates min_onnxruntime and the onnx package is "
            "not installed to read the graph: re-export, or pip install 'tritonkit[export]'"
        ) from None
    return graph_min_onnxruntime(export_dir / report.model_file)


def _checked_arguments(
    name: str,
    target: str,
    version: int,
    max_batch_size: int,
    backend: str,
    plan: str | Path | None,
) -> Path | None:
    """Check the arguments that need no export folder; returns the TensorRT engine's
    ``model.plan`` (None for the onnxruntime backend).

    Raises:
        UsageError: an unknown target or backend, a TensorRT backend without a GPU target or
            a ``plan`` folder holding model.plan, a bad version, name or max batch size.
    """
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose cpu or gpu")
    if backend not in ("onnxruntime", "tensorrt"):
        raise UsageError(f"unknown backend {backend!r}; choose onnxruntime or tensorrt")
    plan_file = None
    if backend == "tensorrt":
        if target != "gpu":
            raise UsageError("--engine tensorrt needs --target gpu (engines run on a GPU)")
        plan_file = Path(plan or "").expanduser().resolve() / "model.plan"
        if plan is None or not plan_file.is_file():
            raise UsageError(
                "--engine tensorrt needs --plan DIR holding model.plan "
                "(build it on the GPU with `tritonkit export tensorrt`)"
            )
        _check_engine_profiles(plan_file.parent)
    check_common(name, target, version, max_batch_size)
    return plan_file


def check_common(name: str, target: str, version: int, max_batch_size: int) -> None:
    """The arguments every engine's builder checks alike.

    Raises:
        UsageError: an unknown target, a bad version, model name or max batch size.
    """
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose cpu or gpu")
    if version < 1:
        raise UsageError(f"version must be >= 1, got {version}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise UsageError(f"model name {name!r} may hold letters, digits, '-' and '_' only")
    if not 1 <= max_batch_size <= 256:
        raise UsageError(f"max batch size must be in 1..256, got {max_batch_size}")


def _check_engine_profiles(engine_dir: Path) -> None:
    """The engine's report must list the profiles the tensorrt_plan config names.

    Raises:
        UsageError: its tensorrt.json is unreadable or lists other profiles.
    """
    path = engine_dir / layout.TENSORRT_REPORT
    if not path.is_file():
        return  # an engine built elsewhere: the config names the profiles tritonkit builds
    try:
        profiles = tuple(json.loads(path.read_text()).get("profiles") or layout.TENSORRT_PROFILES)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise UsageError(f"{path} is not a TensorRT build report: {exc}") from exc
    if profiles != layout.TENSORRT_PROFILES:
        raise UsageError(
            f"{path} lists optimization profiles {list(profiles)}, not "
            f"{list(layout.TENSORRT_PROFILES)}: rebuild the engine with this tritonkit"
        )


def _checked_context(report: ExportReport, max_context: int | None, prefill_chunk: int) -> int:
    """Tokens per request: ``max_context``, or the model's own context when None.

    Raises:
        UsageError: a context outside 2..the model's context, or a prefill chunk below 1.
    """
    model_context = report.dims.max_positions
    context = model_context if max_context is None else max_context
    if not 2 <= context <= model_context:
        raise UsageError(
            f"--max-context must be in 2..{model_context} (the model's context), got {context}"
        )
    if prefill_chunk < 1:
        raise UsageError(f"--prefill-chunk must be >= 1, got {prefill_chunk}")
    return context


def _write_decoder(
    repo: Path,
    decoder: str,
    version: int,
    export_dir: Path,
    report: ExportReport,
    target: str,
    plan: Path | None,
    tensorrt_accelerator: bool,
    backend: str,
) -> None:
    """Write the decoder model: the graph and its weights (stored once), the CPU's
    ``model.py``, the TensorRT engine when there is one, and its config.

    Raises:
        OSError: the files could not be linked, copied or written.
    """
    vdir = repo / decoder / str(version)
    vdir.mkdir(parents=True)
    for filename in (report.model_file, report.external_data):
        if filename:
            link_or_copy(export_dir / filename, vdir / filename)
    if target == "cpu":
        shutil.copy2(HERE / "decoder" / layout.MODEL_FILE, vdir)
    if plan is not None:  # Triton serves the engine; the entry model keeps the ONNX graph
        link_or_copy(plan, vdir / "model.plan")
    cfg.write(
        cfg.decoder_config(
            decoder,
            [cfg.tensor_from_report(t) for t in report.inputs],
            [cfg.tensor_from_report(t) for t in report.outputs],
            target,
            tensorrt_accelerator=tensorrt_accelerator,
            backend=backend,
        ),
        repo / decoder,
    )


def _write_entry(
    repo: Path,
    name: str,
    version: int,
    export_dir: Path,
    ref: DecoderRef,
    target: str,
    max_batch_size: int,
    context: int,
    tensorrt_accelerator: bool,
    chat_template: str | None,
    prefill_chunk: int,
    prefix_cache: bool = True,
    stall_factor: float = 4.5,
) -> None:
    """Write the entry model: generation loop, runtime modules, the decoder it runs
    (``decoder.json``), the tokenizer files and its config.

    Raises:
        OSError: the files could not be copied or written.
    """
    entry_dir = repo / name
    vdir = entry_dir / str(version)
    vdir.mkdir(parents=True)
    shutil.copy2(HERE / "llm" / layout.MODEL_FILE, vdir)
    copy_runtime(vdir / layout.RUNTIME_PACKAGE)
    # Which decoder graph this version runs: versions of NAME and NAME_decoder move together.
    (vdir / layout.DECODER_REF).write_text(layout.decoder_ref_text(ref))
    tok_dir = layout.tokenizer_dir(vdir)
    tok_dir.mkdir()
    for filename in layout.TOKENIZER_FILES:
        if (export_dir / filename).is_file():
            shutil.copy2(export_dir / filename, tok_dir / filename)
    cfg.write(
        cfg.entry_config(
            name,
            ref.model,
            target,
            max_batch_size=max_batch_size,
            max_context=context,
            execution_provider="tensorrt" if tensorrt_accelerator else "cuda",
            chat_template=chat_template,
            prefill_chunk=prefill_chunk,
            prefix_cache=prefix_cache,
            stall_factor=stall_factor,
        ),
        entry_dir,
    )


def _write_sync(repo: Path, name: str, version: int, instances: int, target: str) -> None:
    """Write the unary twin: HTTP /infer and gRPC ModelInfer reject decoupled models.

    Raises:
        OSError: the files could not be copied or written.
    """
    sync = layout.sync_model_name(name)
    (repo / sync / str(version)).mkdir(parents=True)
    shutil.copy2(HERE / "llm_sync" / layout.MODEL_FILE, repo / sync / str(version))
    cfg.write(cfg.sync_config(sync, name, instances, target), repo / sync)


def _kv_cache_bytes(report: ExportReport, rows: int, context: int) -> int:
    """The fused engine's KV cache when every row is full (0 for the concat graph)."""
    if not report.fused:
        return 0
    d = report.dims
    itemsize = 2 if report.dtype in ("float16", "bfloat16") else 4
    return 2 * d.num_layers * rows * d.num_kv_heads * context * d.head_dim * itemsize
