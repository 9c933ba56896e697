"""``build_vllm_repository``: a Hugging Face folder -> a repository served by vLLM.

The repository has the same entry model name, request interface, unary twin and chat
template parameter as tritonkit's own engine's, so clients, the gateway, perf, Blob
versions and the deploy paths take it as they are:

    REPO/NAME/config.pbtxt            decoupled python backend, engine: vllm
    REPO/NAME/V/model.py              vllm/model.py: the interface over vLLM's AsyncLLM
    REPO/NAME/V/tritonkit_runtime/    the parser, responder and metrics both engines use
    REPO/NAME/V/hf/                   the Hugging Face folder vLLM loads (hard links)
    REPO/NAME_sync/                   the unary twin, as for the other engine

There is no decoder model: vLLM runs the weights itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tritonkit.errors import RepositoryError, UsageError
from tritonkit.fsutil import check_output_dir, link_or_copy, staged_output

from . import config as cfg
from .build import (
    HERE,
    BuiltRepository,
    _chat_template,
    _write_sync,
    check_common,
    copy_runtime,
)
from .runtime import layout

HF_DIR, IMPORT_REPORT = layout.HF_DIR, layout.IMPORT_REPORT
REQUIRED = ("config.json", "tokenizer.json")


def build_vllm_repository(
    hf_dir: str | Path,
    output: str | Path,
    name: str = "llm",
    target: str = "cpu",
    version: int = 1,
    max_batch_size: int = 16,
    force: bool = False,
    allow_unverified: bool = False,
    sync_instances: int = 4,
    max_context: int | None = None,
    prefix_cache: bool = True,
    dtype: str | None = None,
    cpu_kv_cache_gib: float = 1.0,
    gpu_memory_utilization: float = 0.9,
) -> BuiltRepository:
    """Assemble a repository whose entry model serves ``hf_dir`` with vLLM.

    ``max_context``: tokens per request (vLLM's ``max_model_len``; default the model's
    own). ``dtype``: vLLM's (default float32 on the CPU, where vLLM has no fast
    half-precision kernels here, and the checkpoint's own on a GPU).
    ``cpu_kv_cache_gib``: vLLM's KV cache on the CPU (``VLLM_CPU_KVCACHE_SPACE``).

    Raises:
        UsageError: bad arguments, or a non-empty ``output`` without ``force``.
        RepositoryError: ``hf_dir`` is not a Hugging Face folder with weights and
            tokenizer.json, or has no ``tritonkit export hf`` report (unless
            ``allow_unverified``), or the context exceeds the model's.
    """
    hf = Path(hf_dir).expanduser().resolve()
    output = Path(output).expanduser().resolve()
    check_common(name, target, version, max_batch_size)
    if not cpu_kv_cache_gib > 0 or not 0 < gpu_memory_utilization <= 1:
        raise UsageError("--cpu-kv-cache-gib must be > 0 and --gpu-memory-utilization in (0, 1]")
    model_context = _checked_folder(hf, allow_unverified)
    context = max_context or model_context
    if not 1 <= context <= model_context:
        raise UsageError(
            f"--max-context must be in 1..{model_context} (the model's), got {context}"
        )
    chat_template = _chat_template(hf)
    check_output_dir(output, force)
    with staged_output(output, RepositoryError) as repo:
        entry_dir = repo / name
        vdir = entry_dir / str(version)
        vdir.mkdir(parents=True)
        shutil.copy2(HERE / "vllm" / layout.MODEL_FILE, vdir / layout.MODEL_FILE)
        copy_runtime(vdir / layout.RUNTIME_PACKAGE)
        (vdir / HF_DIR).mkdir()
        for path in sorted(hf.iterdir()):
            if path.is_file():
                link_or_copy(path, vdir / HF_DIR / path.name)
        cfg.write(
            cfg.vllm_entry_config(
                name,
                target,
                max_batch_size=max_batch_size,
                max_context=context,
                chat_template=chat_template,
                prefix_cache=prefix_cache,
                dtype=dtype or ("float32" if target == "cpu" else "auto"),
                cpu_kv_cache_gib=cpu_kv_cache_gib,
                gpu_memory_utilization=gpu_memory_utilization,
            ),
            entry_dir,
        )
        _write_sync(repo, name, version, sync_instances, target)
    return BuiltRepository(output, name, "", version, target)


def _checked_folder(hf: Path, allow_unverified: bool) -> int:
    """The model's context length, after checking ``hf`` is a servable folder.

    Raises:
        RepositoryError: it is not one, or it is unverified without ``allow_unverified``.
    """
    if not hf.is_dir():
        raise RepositoryError(f"Hugging Face folder {str(hf)!r} does not exist")
    missing = [f for f in REQUIRED if not (hf / f).is_file()]
    if missing or not any(hf.glob("*.safetensors")):
        what = ", ".join(missing + ([] if any(hf.glob("*.safetensors")) else ["*.safetensors"]))
        raise RepositoryError(
            f"{hf} is not a Hugging Face model folder (missing {what}): write one with "
            "`tritonkit export hf --model SRC --output DIR`"
        )
    if not (hf / IMPORT_REPORT).is_file() and not allow_unverified:
        raise RepositoryError(
            f"{hf} has no {IMPORT_REPORT}: it was not written and verified by "
            "`tritonkit export hf`; re-import it, or pass --allow-unverified"
        )
    try:
        config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
        return int(config.get("max_position_embeddings") or 2048)
    except (OSError, ValueError, TypeError) as exc:
        raise RepositoryError(f"{hf}/config.json is unreadable: {exc}") from exc
