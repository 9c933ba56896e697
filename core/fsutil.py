"""Output folders that appear complete or not at all.

Work is written to a hidden sibling folder and renamed into place at the end, so an
interrupted command never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tritonkit.errors import TritonkitError, UsageError


def check_output_dir(output: Path, force: bool) -> None:
    """Refuse a file, or a non-empty folder unless ``force``.

    Raises:
        UsageError: ``output`` is a file, or a non-empty folder without ``force``.
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {str(output)!r} is a file; choose a folder path")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(
            f"output folder {str(output)!r} exists and is not empty; pass --force to replace it"
        )


@contextmanager
def staged_output(output: Path, error: type[TritonkitError]) -> Iterator[Path]:
    """Yield a staging folder next to ``output``; on success it replaces ``output``.

    On any exception the staging folder is removed and ``output`` is left as it was.

    Raises:
        error: the folder cannot be created or moved (disk full, permissions).
    """
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        staging.chmod(0o755)
    except OSError as exc:
        raise error(f"cannot write to {output.parent}: {exc.strerror or exc}") from exc
    try:
        yield staging
        _move_into_place(staging, output, error)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, output: Path, error: type[TritonkitError]) -> None:
    try:
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
    except OSError as exc:
        raise error(f"cannot move the result into {output}: {exc.strerror or exc}") from exc


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no second copy of big weights), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
