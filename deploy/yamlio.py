"""Manifests as YAML: one text for stdout (``---`` separated) or a folder of files.

Objects are plain dicts; they are written with ``yaml.safe_dump`` (no tags, keys in the
order the generator built them) and the folder appears complete or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tritonkit.errors import ManifestError
from tritonkit.fsutil import check_output_dir, staged_output


def dump(document: Mapping[str, Any]) -> str:
    """One document as YAML text."""
    import yaml

    return str(yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False))


def dump_all(documents: Iterable[Mapping[str, Any]]) -> str:
    """Several documents as one YAML stream, ``---`` between them."""
    return "---\n".join(dump(d) for d in documents)


def write_folder(files: Mapping[str, str], output: Path, force: bool = False) -> Path:
    """Write ``files`` (name -> text) into the folder ``output``, replacing it as a whole.

    Raises:
        UsageError: ``output`` is a file, a mount point, or a non-empty folder without
            ``force``.
        ManifestError: a file name that is not a plain name, or the folder cannot be written.
    """
    for name in files:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ManifestError(f"file name {name!r} is not a plain file name")
    check_output_dir(output, force)
    with staged_output(output, ManifestError) as staging:
        for name, text in files.items():
            (staging / name).write_text(text)
    return output
