"""vLLM: an `export hf` folder -> a repository served by vLLM's ``AsyncLLM``.

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

from tritonkit.core import layout
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.fsutil import link_or_copy

from .. import config as cfg
from ..spec import BuiltRepository, RepositorySpec, Vllm
from .common import SOURCES, chat_template, copy_runtime, output_folder, write_sync

REQUIRED = ("config.json", "tokenizer.json")


def build(
    hf: Path, output: Path, spec: RepositorySpec, engine: Vllm, force: bool
) -> BuiltRepository:
    """Assemble a repository whose entry model serves ``hf`` with vLLM (``spec`` and
    ``engine`` are checked already). ``max_context`` is vLLM's ``max_model_len``
    (default the model's own).

    Raises:
        UsageError: a context over the model's, or a non-empty ``output`` without ``force``.
        RepositoryError: ``hf`` is not a Hugging Face folder with weights and
            tokenizer.json, or has no ``tritonkit export hf`` report (unless
            ``allow_unverified``).
    """
    model_context = _checked_folder(hf, spec.allow_unverified)
    context = spec.max_context or model_context
    if not 1 <= context <= model_context:
        raise UsageError(
            f"--max-context must be in 1..{model_context} (the model's), got {context}"
        )
    template = chat_template(hf)
    with output_folder(output, force) as repo:
        entry_dir = repo / spec.name
        vdir = entry_dir / str(spec.version)
        vdir.mkdir(parents=True)
        shutil.copy2(SOURCES / "vllm" / layout.MODEL_FILE, vdir / layout.MODEL_FILE)
        copy_runtime(vdir / layout.RUNTIME_PACKAGE)
        (vdir / layout.HF_DIR).mkdir()
        for path in sorted(hf.iterdir()):
            if path.is_file():
                link_or_copy(path, vdir / layout.HF_DIR / path.name)
        cfg.write(
            cfg.vllm_entry_config(
                spec.name,
                spec.target,
                max_batch_size=spec.max_batch_size,
                max_context=context,
                chat_template=template,
                prefix_cache=spec.prefix_cache,
                # float32 on the CPU: vLLM has no fast half-precision kernels there
                dtype=engine.dtype or ("float32" if spec.target == "cpu" else "auto"),
                cpu_kv_cache_gib=engine.cpu_kv_cache_gib,
                gpu_memory_utilization=engine.gpu_memory_utilization,
            ),
            entry_dir,
        )
        write_sync(repo, spec.name, spec.version, spec.sync_instances, spec.target)
    return BuiltRepository(output, spec.name, "", spec.version, spec.target, engine.kind)


def _checked_folder(hf: Path, allow_unverified: bool) -> int:
    """The model's context length, after checking ``hf`` is a servable folder.

    Raises:
        RepositoryError: it is not one, or it is unverified without ``allow_unverified``.
    """
    if not hf.is_dir():
        raise RepositoryError(f"Hugging Face folder {str(hf)!r} does not exist")
    missing = [f for f in REQUIRED if not (hf / f).is_file()]
    if not any(hf.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise RepositoryError(
            f"{hf} is not a Hugging Face model folder (missing {', '.join(missing)}): write "
            "one with `tritonkit export hf --model SRC --output DIR`"
        )
    if not (hf / layout.IMPORT_REPORT).is_file() and not allow_unverified:
        raise RepositoryError(
            f"{hf} has no {layout.IMPORT_REPORT}: it was not written and verified by "
            "`tritonkit export hf`; re-import it, or pass --allow-unverified"
        )
    try:
        config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
        return int(config.get("max_position_embeddings") or 2048)
    except (OSError, ValueError, TypeError) as exc:
        raise RepositoryError(f"{hf}/config.json is unreadable: {exc}") from exc
