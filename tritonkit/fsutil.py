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


def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is where a filesystem (a volume, a bind mount) is mounted.

    ``os.path.ismount`` misses a bind mount from the same filesystem, so Linux's mount
    table is read too.
    """
    if os.path.ismount(path):
        return True
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    target = str(path.resolve())
    for line in table.splitlines():
        fields = line.split()
        # field 5 is the mount point, with space, tab, newline and backslash octal-escaped
        if len(fields) > 4 and _unescape(fields[4]) == target:
            return True
    return False


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def check_output_dir(output: Path, force: bool) -> None:
    """Refuse a file, a mount point, or a non-empty folder unless ``force``.

    A mount point (a Docker volume, say) cannot be replaced in one step, and every output
    here is written beside it and renamed into place, so it is refused before anything
    is written, with the folder inside it to use instead.

    Raises:
        UsageError: ``output`` is a file, a mount point, or a non-empty folder without
            ``force``.
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {str(output)!r} is a file; choose a folder path")
    if output.is_dir() and is_mount_point(output):
        raise UsageError(
            f"output {str(output)!r} is a mount point (a volume) and cannot be replaced in "
            f"one step: write into a folder inside it, e.g. {str(output / 'repository')!r}"
        )
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
