"""``pull_repository``: complete versions in Blob -> a local model repository;
``pull_release``: one immutable release (``releases/R/``) -> a local model repository.

Only versions with a manifest are pulled, and every file's SHA-256 is checked against
it. Downloads land in a cache next to the output, named by their hash
(``.OUTPUT.pull-cache/SHA256``) only once verified, so an interrupted pull resumes
where it stopped; files already in the output with the right hash are reused too.
The repository is assembled in a staging folder and moved into place at the end: a
failed pull (a checksum mismatch included) leaves the output as it was.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonkit.errors import BlobError, ChecksumError, NothingPublished, UsageError
from tritonkit.fsutil import check_output_dir, link_or_copy, staged_output

from ._parallel import run_all
from .manifest import (
    CONFIG,
    MANIFEST,
    RELEASES,
    SHA256_HEX,
    release_folder,
    safe_model_name,
    sha256_file,
)
from .remote import RemoteModel, add_decoders, require_models
from .store import BlobStore
from .versions import with_policy

CHUNK_CONCURRENCY = 4  # parallel range requests within one large file
Wanted = tuple[str, int, str]  # (path under the store's prefix and the output, size, sha256)


@dataclass
class PullResult:
    """What ``pull_repository`` wrote."""

    output: Path
    versions: dict[str, list[int]]  # model -> versions pulled
    served: dict[str, list[int]]  # model -> versions its local config.pbtxt serves
    files: int = 0
    bytes_downloaded: int = 0
    files_reused: int = 0  # from the resume cache or the previous output
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    manifest_sha256: dict[str, str] = field(default_factory=dict)  # "MODEL/N" -> digest
    release: int | None = None  # pulled a release (``pull_release``)
    release_sha256: str = ""  # of its release.json


def _selection(
    remote: dict[str, RemoteModel], models: list[str] | None, version: int | None, where: str
) -> dict[str, list[int]]:
    """model -> versions to pull: the named version, or all complete ones, plus decoders."""
    chosen: dict[str, set[int]] = {}
    unsafe = [name for name in remote if not safe_model_name(name)]
    if unsafe:
        raise BlobError(
            f"{where} holds a model folder named {unsafe[0]!r}, which cannot be a local folder; "
            "nothing was pulled"
        )
    for name in models or sorted(remote):
        rm = remote[name]
        if version is not None and version not in rm.complete:
            raise NothingPublished(
                f"version {version} of {name} is not complete in {where} "
                f"(complete: {', '.join(map(str, rm.complete))})"
            )
        chosen.setdefault(name, set()).update([version] if version is not None else rm.complete)
    add_decoders(remote, chosen, where, "publish the repository again")
    return {name: sorted(vs) for name, vs in sorted(chosen.items())}


def pull_repository(
    store: BlobStore,
    output: str | Path,
    *,
    models: list[str] | None = None,
    version: int | None = None,
    force: bool = False,
    concurrency: int = 8,
    progress: bool = False,
    expect_manifest_sha256: str | None = None,
) -> PullResult:
    """Download complete versions (all, or ``version`` of ``models``) into ``output``.

    Every manifest is checked before anything is written (file paths stay inside their
    version folder, digests are SHA-256 hex; see ``Manifest.problem``). Whoever can write
    the container can still replace files and manifest consistently, and a repository
    holds code (``model.py``): ``expect_manifest_sha256`` pins the one version asked for
    (``models`` with one model and ``version``) to the manifest a deployment trusts.

    Raises:
        UsageError: bad arguments, or a non-empty ``output`` without ``force``.
        NothingPublished: nothing complete under the prefix, or not the asked model/version.
        ChecksumError: a downloaded file does not match its manifest, or the manifest not
            the pinned digest (nothing is written).
        BlobAuthError, ContainerNotFound, BlobError: what the account answered.
    """
    started = time.monotonic()
    output = Path(output).expanduser().resolve()
    _check_pull_arguments(models, version, concurrency, expect_manifest_sha256)
    check_output_dir(output, force)
    store.check()
    remote = require_models(store, models, everything=True)
    chosen = _selection(remote, models, version, store.where)
    if expect_manifest_sha256 is not None and models and version is not None:
        _check_pinned(remote, models[0], version, expect_manifest_sha256)
    result = PullResult(output, chosen, {})
    wanted = _wanted(remote, chosen)
    with _staged_pull(output) as (stage, cache):
        _assemble(store, wanted, stage, cache, output, concurrency, progress, result)
        _write_manifests_and_configs(stage, remote, chosen, result)
    result.seconds = time.monotonic() - started
    return result


def _check_pull_arguments(
    models: list[str] | None, version: int | None, concurrency: int, expect: str | None
) -> None:
    """Check ``pull_repository``'s arguments against each other.

    Raises:
        UsageError: a version without a model, a concurrency below 1, or a pinned manifest
            digest that is not 64 lowercase hex digits or not for one model and version.
    """
    if version is not None and not models:
        raise UsageError("--version needs --model: version numbers are per model")
    if concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if expect is not None:
        if version is None or not models or len(models) != 1:
            raise UsageError(
                "--expect-manifest-sha256 pins one version: give --model and --version"
            )
        if not SHA256_HEX.match(expect):
            raise UsageError("--expect-manifest-sha256 takes 64 lowercase hex digits")


def _check_pinned(remote: dict[str, RemoteModel], model: str, version: int, expect: str) -> None:
    """Refuse a version whose manifest is not the pinned one.

    Raises:
        ChecksumError: its manifest's SHA-256 is not ``expect`` (nothing is pulled).
    """
    got = remote[model].versions[version].manifest_sha256
    if got != expect:
        raise ChecksumError(
            f"{model} version {version}: its manifest has SHA-256 {got}, not the pinned "
            f"{expect}; it changed after it was trusted (nothing was pulled)"
        )


def _wanted(remote: dict[str, RemoteModel], chosen: dict[str, list[int]]) -> list[Wanted]:
    """Every file of the chosen versions, as their manifests list them."""
    wanted: list[Wanted] = []
    for name, versions in chosen.items():
        for v in versions:
            manifest = remote[name].versions[v].manifest
            assert manifest is not None
            wanted += [(f"{name}/{v}/{f.path}", f.size, f.sha256) for f in manifest.files]
    return wanted


def _write_manifests_and_configs(
    stage: Path, remote: dict[str, RemoteModel], chosen: dict[str, list[int]], result: PullResult
) -> None:
    """Write each pulled version's manifest and each model's config.pbtxt into ``stage``,
    noting the manifests' digests and the versions each config serves in ``result``.

    Raises:
        OSError: a file could not be written.
    """
    for name, versions in chosen.items():
        rm = remote[name]
        for v in versions:
            manifest = rm.versions[v].manifest
            assert manifest is not None
            (stage / name / str(v) / MANIFEST).write_bytes(manifest.to_json())
            result.manifest_sha256[f"{name}/{v}"] = rm.versions[v].manifest_sha256
        result.served[name] = _write_config(stage, rm, versions, result.notes)


def pull_release(
    store: BlobStore,
    output: str | Path,
    number: int,
    *,
    force: bool = False,
    concurrency: int = 8,
    progress: bool = False,
    expect_sha256: str | None = None,
) -> PullResult:
    """Download the complete release ``number`` (``PREFIX/releases/R/``) into ``output``.

    The output is the release folder as it is in Blob (pinned configs, versions,
    release.json), each file checked against release.json, and the result checked by
    ``verify_release_dir`` before it replaces ``output``. ``expect_sha256`` pins
    release.json itself (printed by ``tritonkit release create``).

    Raises:
        UsageError: a bad number, digest or concurrency, or a non-empty ``output``
            without ``force``.
        NothingPublished: no complete release ``number`` (no release.json).
        ChecksumError: release.json is not the pinned one, is unsafe, or a file does not
            match it (nothing is written).
        BlobAuthError, ContainerNotFound, BlobError: what the account answered.
    """
    from .release import RELEASE_JSON, Release, check_number, check_sha256, verify_release_dir

    started = time.monotonic()
    output = Path(output).expanduser().resolve()
    check_number(number)
    check_sha256(expect_sha256, "--expect-release-sha256")
    if concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    check_output_dir(output, force)
    store.check()
    where = store.name(RELEASES, release_folder(number), RELEASE_JSON)
    got = store.read(RELEASES, release_folder(number), RELEASE_JSON)
    if got is None:
        raise NothingPublished(
            f"release {number} is not complete in {store.where} (no {where}); "
            "`tritonkit release list` shows the complete ones"
        )
    data, digest = got[0], hashlib.sha256(got[0]).hexdigest()
    if expect_sha256 is not None and digest != expect_sha256:
        raise ChecksumError(
            f"{where} has SHA-256 {digest}, not the pinned {expect_sha256}; nothing was pulled"
        )
    release = Release.from_json(data, where)
    if release.release != number:
        raise ChecksumError(f"{where} names release {release.release}; nothing was pulled")
    result = PullResult(output, release.models, release.models, release=number)
    result.release_sha256 = digest
    inside = BlobStore(store.client, store.name(RELEASES, release_folder(number)))
    wanted = [(f.path, f.size, f.sha256) for f in release.files]
    with _staged_pull(output) as (stage, cache):
        _assemble(inside, wanted, stage, cache, output, concurrency, progress, result)
        (stage / RELEASE_JSON).write_bytes(data)
        verify_release_dir(stage, digest)
    result.seconds = time.monotonic() - started
    return result


@contextmanager
def _staged_pull(output: Path) -> Iterator[tuple[Path, Path]]:
    """(staging folder, resume cache); the cache goes once the pull ends or a check fails."""
    cache = output.parent / f".{output.name}.pull-cache"
    try:
        with staged_output(output, BlobError) as stage:
            yield stage, cache
    except ChecksumError:
        shutil.rmtree(cache, ignore_errors=True)  # nothing from this pull stays behind
        raise
    shutil.rmtree(cache, ignore_errors=True)


def _assemble(
    store: BlobStore,
    wanted: list[Wanted],
    stage: Path,
    cache: Path,
    previous: Path,
    concurrency: int,
    progress: bool,
    result: PullResult,
) -> None:
    """Fetch (or reuse) every wanted file and link it into ``stage`` at its path."""
    sources = _fetch(store, wanted, cache, previous, concurrency, progress, result)
    root = stage.resolve()
    for rel, _, sha in wanted:
        dest = stage / rel
        if not dest.resolve().is_relative_to(root):  # manifests are checked; never trust
            raise BlobError(f"{rel} would be written outside {previous}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(sources[sha], dest)
    result.files = len(wanted)


def _write_config(stage: Path, rm: RemoteModel, versions: list[int], notes: list[str]) -> list[int]:
    """The model's config.pbtxt, serving only versions that were pulled."""
    served = rm.served
    text = rm.config_text or _newest_config(rm, versions)
    if not served or not set(served) <= set(versions):
        served = [max(versions)]
        text = with_policy(text, served, f"{rm.name}/{CONFIG}")
        notes.append(f"{rm.name}: serving version {served[0]} locally (the ones served in "
                     f"Blob, {rm.served}, were not pulled)")  # fmt: skip
    (stage / rm.name / CONFIG).write_text(text)
    return served


def _newest_config(rm: RemoteModel, versions: list[int]) -> str:
    manifest = rm.versions[max(versions)].manifest
    assert manifest is not None
    return manifest.config


def _fetch(
    store: BlobStore,
    wanted: list[Wanted],
    cache: Path,
    previous: Path,
    concurrency: int,
    progress: bool,
    result: PullResult,
) -> dict[str, Path]:
    """sha256 -> a verified local file with that content (cached, reused or downloaded)."""
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Path] = {}
    todo: dict[str, tuple[str, int]] = {}  # sha -> (blob name, size)
    for rel, size, sha in wanted:
        if sha in sources or sha in todo:
            continue
        cached = cache / sha
        old = previous / rel
        if cached.is_file() and cached.stat().st_size == size:
            sources[sha] = cached  # verified when it was cached
        elif old.is_file() and old.stat().st_size == size and sha256_file(old) == sha:
            sources[sha] = old
        else:
            todo[sha] = (store.name(rel), size)
    result.files_reused = sum(1 for _, _, sha in wanted if sha in sources)
    bar = tqdm(
        total=sum(size for _, size in todo.values()), desc="pull", unit="B", unit_scale=True,
        unit_divisor=1024, file=sys.stderr, disable=None if progress else True,
    )  # fmt: skip
    lock = threading.Lock()

    def fetch(item: tuple[str, tuple[str, int]]) -> None:
        sha, (blob_name, size) = item
        part = cache / f"{sha}.part"
        got = _download(store, blob_name, part, bar)
        if got != sha:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{blob_name}: SHA-256 {got[:12]}… does not match the manifest's {sha[:12]}… "
                "(the blob was changed or corrupted after publishing); nothing was written, "
                "re-publish that version"
            )
        part.rename(cache / sha)
        with lock:
            sources[sha] = cache / sha
            result.bytes_downloaded += size

    try:
        run_all(
            fetch,
            sorted(todo.items(), key=lambda kv: -kv[1][1]),
            concurrency,
            "tritonkit-pull",
        )
    finally:
        bar.close()
    return sources


def _download(store: BlobStore, blob_name: str, dest: Path, bar: Any) -> str:
    """Download one blob to ``dest``; returns the SHA-256 of what arrived."""
    seen = [0]

    def hook(current: int, total: int | None) -> None:
        bar.update(current - seen[0])
        seen[0] = current

    with store.translate(f"download {blob_name}"), open(dest, "wb") as f:
        blob = store.client.get_blob_client(blob_name)
        blob.download_blob(max_concurrency=CHUNK_CONCURRENCY, progress_hook=hook).readinto(f)
    return sha256_file(dest)
