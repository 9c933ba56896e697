"""What a published version is: its ``manifest.json``, and the local files it is made from.

Layout in the container (PREFIX may be empty)::

    PREFIX/MODEL/config.pbtxt          which versions Triton serves (version_policy)
    PREFIX/MODEL/N/<files>             the version's files, as in a local repository
    PREFIX/MODEL/N/manifest.json       written LAST: a version without it is incomplete
    PREFIX/MODEL/N.claim               the publisher's claim on N (a leased blob)
    PREFIX/releases/R/...              immutable releases (``release.py``): never a model

The manifest lists every file with its size, SHA-256 and MD5, and carries the
config the version was published with (``config.pbtxt`` text, version_policy [N]),
the decoder version an entry model runs, the export report, the source, the time and
the tool's version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tritonkit.core import layout
from tritonkit.core.layout import CONFIG_FILE as CONFIG
from tritonkit.core.layout import DECODER_REF
from tritonkit.errors import BlobError, RepositoryError

MANIFEST = "manifest.json"
RELEASES = "releases"  # PREFIX/releases/: reserved for release.py, never a model
MAX_RELEASE = 999_999


def release_folder(number: int) -> str:
    """The folder of release ``number`` under ``PREFIX/releases/``: six digits, zero-padded.

    Fixed width, because KServe's storage initializer and Azure ML download every blob
    whose name *starts with* the path they are given: with plain numbers, releases/1 would
    also bring releases/10 to releases/19.

    Raises:
        ValueError: ``number`` is not in 1..999999.
    """
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_RELEASE:
        raise ValueError(f"a release number is a whole number in 1..{MAX_RELEASE}, got {number!r}")
    return f"{number:06d}"


def release_number(folder: str) -> int | None:
    """The number a release folder name stands for, or None when it is not one (only the
    canonical six-digit form counts: "7" and "0000007" are not release folders)."""
    return int(folder) if re.fullmatch(r"[0-9]{6}", folder) and folder != "000000" else None


FORMAT = 1
HASH_CHUNK = 4 * 1024 * 1024
SKIPPED_DIRS = {"__pycache__"}
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # a folder name, never "." or ".."


def safe_model_name(name: object) -> bool:
    """Whether ``name`` can be a model folder: no separators, no "..", not hidden."""
    return isinstance(name, str) and bool(MODEL_NAME.match(name)) and ".." not in name


def check_relative_path(path: object) -> str | None:
    """Why ``path`` cannot be a file inside a version folder, or None when it can.

    A file path in a manifest is a relative POSIX path that stays inside the version
    folder: no absolute path, no "..", no backslash, no empty or "." part, no control
    characters, and not the manifest or config itself.
    """
    if not isinstance(path, str) or not path:
        return "is not a non-empty string"
    if path.startswith("/") or "\\" in path or re.match(r"^[A-Za-z]:", path):
        return "is absolute or holds a backslash"
    if any(ord(c) < 32 for c in path):
        return "holds a control character"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "leaves the version folder (empty, '.' or '..' part)"
    if path in (MANIFEST, CONFIG):
        return "names the manifest or the config"
    return None


T = TypeVar("T")


def parse_record(cls: Callable[..., T], entry: type, data: bytes, fmt: int) -> T:
    """``cls`` from JSON holding a ``files`` list of ``entry`` and ``format`` ``fmt``.

    Raises:
        ValueError, TypeError, KeyError, AttributeError: the JSON is not such a record.
    """
    raw = json.loads(data)
    files = [entry(**f) for f in raw.pop("files")]
    if raw.get("format") != fmt:
        raise ValueError(f"format {raw.get('format')}, expected {fmt}")
    return cls(files=files, **raw)


def files_problem(files: Iterable[Any], path_problem: Callable[[Any], str | None]) -> str | None:
    """The first unsafe entry of a file list (by ``path_problem``, listed twice, a SHA-256
    that is not 64 lowercase hex digits, a size that is not a byte count), or None."""
    seen: set[str] = set()
    for f in files:
        why = path_problem(f.path)
        if why:
            return f"file path {f.path!r} {why}"
        if f.path in seen:
            return f"file path {f.path!r} is listed twice"
        seen.add(f.path)
        if not isinstance(f.sha256, str) or not SHA256_HEX.match(f.sha256):
            return f"the SHA-256 of {f.path!r} is not 64 lowercase hex digits"
        if isinstance(f.size, bool) or not isinstance(f.size, int) or f.size < 0:
            return f"the size of {f.path!r} is not a byte count"
    return None


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: its path inside the version folder and its digests."""

    path: str  # posix, relative to MODEL/N/
    size: int
    sha256: str  # hex
    md5: str  # base64, as Azure's Content-MD5


class FileRecord:
    """A JSON document listing files (a manifest, a release.json); its subclasses are
    dataclasses with a ``files`` field."""

    files: list[Any]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1) + "\n").encode()  # type: ignore[call-overload]


@dataclass
class Manifest(FileRecord):
    """``MODEL/N/manifest.json``."""

    model: str
    version: int
    files: list[FileEntry]
    config: str  # config.pbtxt as served with this version (version_policy [N])
    published_at: str
    tritonkit_version: str
    decoder: dict[str, Any] | None = None  # {"model": NAME_decoder, "version": M}
    export: dict[str, Any] | None = None  # the export report (export.json)
    source: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest.

        Raises:
            BlobError: not a manifest this version of tritonkit can read.
        """
        try:
            manifest = parse_record(cls, FileEntry, data, FORMAT)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BlobError(f"{where} is not a tritonkit manifest ({exc}); re-publish it") from exc
        problem = manifest.problem()
        if problem:
            raise BlobError(
                f"{where} is refused: {problem}; it was not written by tritonkit, or was changed "
                "after publishing (nothing was pulled)"
            )
        return manifest

    def problem(self) -> str | None:
        """What makes this manifest unsafe to act on (see ``check_relative_path``), or None.

        Every field that names a file or a folder is checked, since a pull writes and links
        files by them: a hostile manifest must not reach outside the output.
        """
        if not safe_model_name(self.model):
            return f"model name {self.model!r} is not a folder name"
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            return f"version {self.version!r} is not a positive integer"
        problem = files_problem(self.files, check_relative_path)
        if problem:
            return problem
        if self.decoder is not None:
            model, version = self.decoder.get("model"), self.decoder.get("version")
            if not safe_model_name(model) or not isinstance(version, int) or version < 1:
                return f"decoder reference {self.decoder!r} is not a model name and version"
        return None


@dataclass
class Digests:
    """SHA-256 (hex) and MD5 (base64) of some bytes, computed in one pass."""

    sha256: str
    md5: str


class Hasher:
    """SHA-256 and MD5 together, fed in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5()

    def update(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self._md5.update(data)

    def digests(self) -> Digests:
        return Digests(self._sha.hexdigest(), base64.b64encode(self._md5.digest()).decode())


def hash_bytes(data: bytes) -> Digests:
    """Both digests of ``data``."""
    hasher = Hasher()
    hasher.update(data)
    return hasher.digests()


def hash_file(path: Path) -> Digests:
    """Both digests of a file, read in chunks."""
    hasher = Hasher()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.digests()


def sha256_file(path: Path) -> str:
    """The SHA-256 (hex) of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass
class LocalModel:
    """One model of a local repository, at the version that will be published."""

    name: str
    folder: Path  # REPO/MODEL
    version: int  # the local version folder published (its highest)
    config: Any  # model_config_pb2.ModelConfig
    files: list[Path]  # relative to folder/version, sorted

    @property
    def version_dir(self) -> Path:
        return self.folder / str(self.version)

    def decoder_ref(self) -> dict[str, Any] | None:
        """The decoder an entry model's version runs (its ``decoder.json``), if any."""
        if not (self.version_dir / DECODER_REF).is_file():
            return None
        try:
            ref = layout.read_decoder_ref(self.version_dir)
        except layout.LayoutError as exc:
            raise RepositoryError(str(exc)) from exc
        return {"model": ref.model, "version": ref.version, "file": ref.file}

    def export_report(self) -> dict[str, Any] | None:
        """The export report shipped inside the version (tokenizer/export.json), if any.

        Raises:
            RepositoryError: the report is there but is not an export report.
        """
        folder = layout.tokenizer_dir(self.version_dir)
        if not (folder / layout.EXPORT_REPORT).is_file():
            return None
        try:
            return layout.read_export_report(folder).raw
        except layout.LayoutError as exc:
            raise RepositoryError(str(exc)) from exc


def _version_files(version_dir: Path) -> list[Path]:
    """The files of a version folder to publish, relative to it.

    Raises:
        RepositoryError: a symbolic link that leads outside the version folder (it would
            publish whatever it points at: a key, a home directory).
    """
    files = []
    root = version_dir.resolve()
    for path in sorted(version_dir.rglob("*")):
        if not path.resolve().is_relative_to(root):
            raise RepositoryError(
                f"{path} is a link to {path.resolve()}, outside {version_dir}: copy the file "
                "in, or remove the link (nothing was published)"
            )
        rel = path.relative_to(version_dir)
        if any(p in SKIPPED_DIRS or p.startswith(".") for p in rel.parts):
            continue  # caches and hidden files are not part of a model
        if path.suffix == ".pyc" or rel.as_posix() == MANIFEST or not path.is_file():
            continue
        files.append(rel)
    return files


def scan_repository(repository: Path, models: list[str] | None = None) -> list[LocalModel]:
    """The models of a local repository (or the named ones), each at its highest version.

    Raises:
        RepositoryError: no models, a named model is missing, or a model has no version.
    """
    from tritonkit.model_repository import config as cfg

    if not repository.is_dir():
        raise RepositoryError(f"model repository {str(repository)!r} does not exist")
    found = {
        p.name: p
        for p in sorted(repository.iterdir())
        if p.is_dir() and (p / CONFIG).is_file() and not p.name.startswith(".")
    }
    if not found:
        raise RepositoryError(
            f"{repository} holds no models (no MODEL/config.pbtxt); build one with "
            "`tritonkit repo build`"
        )
    missing = [m for m in models or [] if m not in found]
    if missing:
        raise RepositoryError(
            f"{repository} has no model {', '.join(missing)}; it has {', '.join(found)}"
        )
    result = []
    for name in models or list(found):
        folder = found[name]
        versions = layout.version_numbers(folder)
        if not versions:
            raise RepositoryError(f"{folder} has no numeric version folder")
        files = _version_files(folder / str(versions[-1]))
        if not files:
            raise RepositoryError(f"{folder / str(versions[-1])} holds no files")
        result.append(LocalModel(name, folder, versions[-1], cfg.read(folder), files))
    return result
