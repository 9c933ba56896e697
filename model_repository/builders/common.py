"""What every engine's builder writes alike.

The entry model runs inside Triton's python backend, where tritonkit is not installed
(the GPU image, vLLM's environment): ``copy_runtime`` vendors the engine runtime and the
request core (``tritonkit.core``) into one flat ``tritonkit_runtime`` package next to
``model.py``, rewriting the core's absolute imports to relative ones, the way pip
vendors its dependencies. A served version thus carries the contract it was built with.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tritonkit.client.chat import ChatTemplate
from tritonkit.core import layout
from tritonkit.errors import RepositoryError, UsageError
from tritonkit.fsutil import check_output_dir, staged_output

from .. import config as cfg

SOURCES = Path(__file__).resolve().parent.parent  # model_repository/: llm/, vllm/, runtime/
CORE = Path(layout.__file__).resolve().parent
_CORE_IMPORT = re.compile(r"^(\s*)from tritonkit\.core(\.(\w+))? import ", re.MULTILINE)


def copy_runtime(dest: Path) -> None:
    """Write the runtime package the entry model imports: ``runtime/*.py`` and the core
    modules, with ``from tritonkit.core[.X] import`` made relative.

    Raises:
        RepositoryError: a module still imports ``tritonkit`` after the rewrite (it
            would fail inside Triton, where tritonkit is not installed).
        OSError: the files could not be written.
    """
    dest.mkdir(parents=True)
    modules = sorted((SOURCES / "runtime").glob("*.py")) + sorted(
        p for p in CORE.glob("*.py") if p.name != "__init__.py"
    )
    for src in modules:
        text = _CORE_IMPORT.sub(
            lambda m: f"{m[1]}from .{m[3] or ''} import ", src.read_text(encoding="utf-8")
        )
        if re.search(r"^\s*(from|import) tritonkit\b", text, re.MULTILINE):
            raise RepositoryError(
                f"{src} imports tritonkit outside tritonkit.core; the entry model could not "
                "load it inside Triton"
            )
        (dest / src.name).write_text(text, encoding="utf-8")
        shutil.copystat(src, dest / src.name)


def chat_template(source: Path) -> str | None:
    """The source's chat template as the entry config carries it; None when it has none.

    Raises:
        RepositoryError: the tokenizer files are not JSON or the template is not jinja.
    """
    try:
        template = ChatTemplate.from_dir(source)
    except UsageError as exc:
        raise RepositoryError(f"{exc}; fix the tokenizer files in {source}") from exc
    return None if template.is_plain else template.to_config()


def write_sync(repo: Path, name: str, version: int, instances: int, target: str) -> None:
    """Write the unary twin: HTTP /infer and gRPC ModelInfer reject decoupled models.

    Raises:
        OSError: the files could not be copied or written.
    """
    sync = layout.sync_model_name(name)
    (repo / sync / str(version)).mkdir(parents=True)
    shutil.copy2(SOURCES / "llm_sync" / layout.MODEL_FILE, repo / sync / str(version))
    cfg.write(cfg.sync_config(sync, name, instances, target), repo / sync)


@contextmanager
def output_folder(output: Path, force: bool) -> Iterator[Path]:
    """A staging folder that replaces ``output`` when the block succeeds; nothing is left
    behind when it raises.

    Raises:
        UsageError: ``output`` is not empty and ``force`` is not set.
    """
    check_output_dir(output, force)
    with staged_output(output, RepositoryError) as repo:
        yield repo
