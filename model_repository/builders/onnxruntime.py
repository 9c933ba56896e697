"""tritonkit's engine: an `export onnx` folder -> a repository.

    REPO/NAME/V/model.py            llm/model.py: generation loop over the graph in-process
    REPO/NAME/V/tritonkit_runtime/  the engine runtime and the request core (common.py)
    REPO/NAME/V/decoder.json        which NAME_decoder graph this version runs
    REPO/NAME/V/tokenizer/          the tokenizer files
    REPO/NAME_decoder/V/            the graph and its weights (stored once; model.plan too
                                    for TensorRTPlan), for perf_analyzer and direct calls
    REPO/NAME_sync/                 the unary twin

The file names are declared in ``tritonkit.core.layout``; see its diagram.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tritonkit.core import layout
from tritonkit.core.layout import DecoderRef, ExportReport, LayoutError
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.fsutil import link_or_copy

from .. import config as cfg
from .. import gpus
from ..spec import BuiltRepository, OnnxRuntime, RepositorySpec, TensorRTPlan
from .common import SOURCES, chat_template, copy_runtime, output_folder, write_sync


def build(
    export_dir: Path, output: Path, spec: RepositorySpec, engine: OnnxRuntime, force: bool
) -> BuiltRepository:
    """Assemble the repository (``spec`` and ``engine`` are checked already).

    On the CPU ``max_context`` defaults to the model's own context, whose memory the OS
    commits only as rows fill; on a GPU, where the cache is allocated whole, to what fits
    ``engine.gpu``'s memory times its utilization after the weights (``gpus.py``).

    Raises:
        UsageError: a context out of range, a TensorRT plan built with other profiles, a
            non-empty ``output`` without ``force``, or (gpu) a context or batch that does
            not fit the GPU.
        RepositoryError: the export folder is missing, incomplete or unverified, or (gpu)
            holds a graph the GPU image cannot serve.
    """
    plan = None
    if isinstance(engine, TensorRTPlan):
        plan = Path(engine.plan).expanduser().resolve() / "model.plan"
        _check_engine_profiles(plan.parent)
    if not export_dir.is_dir():
        raise RepositoryError(f"export folder {str(export_dir)!r} does not exist")
    report = _buildable_export(export_dir, spec.allow_unverified)
    kv_plan = None
    if spec.target == "gpu":
        backend = "tensorrt" if plan is not None else "onnxruntime"
        gpus.check_gpu_graph(
            report, _min_onnxruntime(export_dir, report), backend, engine.tensorrt_accelerator
        )
        _checked_context(report, spec.max_context)
        kv_plan = gpus.plan_kv_cache(
            report,
            gpus.weights_bytes(export_dir, report),
            gpus.resolve_gpu(engine.gpu),
            spec.max_batch_size,
            spec.max_context,
            engine.gpu_memory_utilization,
        )
        context = kv_plan.context
    else:
        context = _checked_context(report, spec.max_context)
    template = chat_template(export_dir)
    decoder = layout.decoder_model_name(spec.name)
    with output_folder(output, force) as repo:
        _write_decoder(repo, decoder, spec, export_dir, report, plan, engine)
        _write_entry(
            repo,
            spec,
            engine,
            export_dir,
            DecoderRef(decoder, spec.version, report.model_file),
            context,
            template,
        )
        write_sync(repo, spec.name, spec.version, spec.sync_instances, spec.target)
    return BuiltRepository(
        output,
        spec.name,
        decoder,
        spec.version,
        spec.target,
        engine.kind,
        _kv_cache_bytes(report, spec.max_batch_size, context),
        kv_plan,
    )


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


def _checked_context(report: ExportReport, max_context: int | None) -> int:
    """Tokens per request: ``max_context``, or the model's own context when None.

    Raises:
        UsageError: a context outside 2..the model's context.
    """
    model_context = report.dims.max_positions
    context = model_context if max_context is None else max_context
    if not 2 <= context <= model_context:
        raise UsageError(
            f"--max-context must be in 2..{model_context} (the model's context), got {context}"
        )
    return context


def _write_decoder(
    repo: Path,
    decoder: str,
    spec: RepositorySpec,
    export_dir: Path,
    report: ExportReport,
    plan: Path | None,
    engine: OnnxRuntime,
) -> None:
    """Write the decoder model: the graph and its weights (stored once), the CPU's
    ``model.py``, the TensorRT engine when there is one, and its config.

    Raises:
        OSError: the files could not be linked, copied or written.
    """
    vdir = repo / decoder / str(spec.version)
    vdir.mkdir(parents=True)
    for filename in (report.model_file, report.external_data):
        if filename:
            link_or_copy(export_dir / filename, vdir / filename)
    if spec.target == "cpu":
        shutil.copy2(SOURCES / "decoder" / layout.MODEL_FILE, vdir)
    if plan is not None:  # Triton serves the engine; the entry model keeps the ONNX graph
        link_or_copy(plan, vdir / "model.plan")
    cfg.write(
        cfg.decoder_config(
            decoder,
            [cfg.tensor_from_report(t) for t in report.inputs],
            [cfg.tensor_from_report(t) for t in report.outputs],
            spec.target,
            tensorrt_accelerator=engine.tensorrt_accelerator,
            backend="tensorrt" if plan is not None else "onnxruntime",
        ),
        repo / decoder,
    )


def _write_entry(
    repo: Path,
    spec: RepositorySpec,
    engine: OnnxRuntime,
    export_dir: Path,
    ref: DecoderRef,
    context: int,
    template: str | None,
) -> None:
    """Write the entry model: generation loop, runtime modules, the decoder it runs
    (``decoder.json``), the tokenizer files and its config.

    Raises:
        OSError: the files could not be copied or written.
    """
    entry_dir = repo / spec.name
    vdir = entry_dir / str(spec.version)
    vdir.mkdir(parents=True)
    shutil.copy2(SOURCES / "llm" / layout.MODEL_FILE, vdir)
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
            spec.name,
            ref.model,
            spec.target,
            max_batch_size=spec.max_batch_size,
            max_context=context,
            execution_provider="tensorrt" if engine.tensorrt_accelerator else "cuda",
            chat_template=template,
            prefill_chunk=engine.prefill_chunk,
            prefix_cache=spec.prefix_cache,
            stall_factor=engine.stall_factor,
        ),
        entry_dir,
    )


def _kv_cache_bytes(report: ExportReport, rows: int, context: int) -> int:
    """The fused engine's KV cache when every row is full (0 for the concat graph)."""
    if not report.fused:
        return 0
    d = report.dims
    itemsize = 2 if report.dtype in ("float16", "bfloat16") else 4
    return 2 * d.num_layers * rows * d.num_kv_heads * context * d.head_dim * itemsize
