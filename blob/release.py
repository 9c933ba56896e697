"""Immutable releases: a frozen, complete model repository of what Triton serves now.

``MODEL/config.pbtxt`` in Blob changes on every promote, so two replicas that download
``PREFIX/`` at different times (KServe's storage initializer, an Azure ML model
registration) can serve different versions. A release freezes one state::

    PREFIX/releases/R/MODEL/config.pbtxt      pinned: version_policy { specific { versions } }
    PREFIX/releases/R/MODEL/N/<files>         server-side copies of PREFIX/MODEL/N/<files>
    PREFIX/releases/R/MODEL/N/manifest.json   the version's manifest, byte for byte
    PREFIX/releases/R/release.json            written LAST: a release without it is incomplete
    PREFIX/releases/.claims/R                 the creator's claim on the number R

``release.json`` lists every file of the release with its size and SHA-256, so its own
SHA-256 pins all of them: a deployment that checks it (``verify_release_dir``, run by
``deploy/triton-entrypoint.sh`` when ``TRITONKIT_RELEASE_SHA256`` is set) serves exactly
what was released. Numbers are never reused, not even an incomplete release's.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tritonkit.errors import BlobError, ChecksumError, NothingPublished, UsageError, VersionConflict

from ._parallel import run_all
from .manifest import (
    CONFIG,
    MANIFEST,
    MAX_RELEASE,
    RELEASES,
    SHA256_HEX,
    SKIPPED_DIRS,
    Digests,
    FileRecord,
    check_relative_path,
    files_problem,
    parse_record,
    release_folder,
    release_number,
    safe_model_name,
    sha256_file,
)
from .remote import RemoteModel, add_decoders, require_models
from .store import BlobStore
from .upload import Item, Uploader
from .versions import with_policy

RELEASE_JSON = "release.json"
CLAIMS = ".claims"  # PREFIX/releases/.claims/R: outside every release folder
RELEASE_FORMAT = 1
CLAIM_RETRIES = 16


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot hold releases, or None: parts are names, not '.', '..' or empty."""
    if any(ord(c) < 32 for c in prefix) or "\\" in prefix:
        return "holds a control character or a backslash"
    parts = prefix.strip("/").split("/") if prefix.strip("/") else []
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' part"
    if RELEASES in parts:
        return f"has a {RELEASES!r} part (the folder releases are kept in)"
    return None


def check_sha256(digest: str | None, flag: str) -> None:
    """Refuse a pinned digest that is not 64 lowercase hex digits.

    Raises:
        UsageError: it is not.
    """
    if digest is not None and not SHA256_HEX.match(digest):
        raise UsageError(f"{flag} takes 64 lowercase hex digits, got {digest!r}")


def check_number(number: int | None) -> None:
    """Raises: UsageError: ``number`` is not a positive integer."""
    if number is not None and (
        isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_RELEASE
    ):
        raise UsageError(f"a release number is a whole number in 1..{MAX_RELEASE}, got {number!r}")


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: its path inside ``releases/R/``, size and SHA-256 (hex)."""

    path: str  # MODEL/config.pbtxt or MODEL/N/<path>
    size: int
    sha256: str


@dataclass
class Release(FileRecord):
    """``releases/R/release.json``."""

    release: int
    created_at: str
    tritonkit_version: str
    models: dict[str, list[int]]  # model -> versions its pinned config serves
    files: list[ReleaseFile]
    source: str = ""  # account/container/prefix the versions were copied from
    format: int = RELEASE_FORMAT

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Release:
        """Parse and check a ``release.json``.

        Raises:
            ChecksumError: not a release this tritonkit can read, or an unsafe one.
        """
        try:
            release = parse_record(cls, ReleaseFile, data, RELEASE_FORMAT)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ChecksumError(f"{where} is not a tritonkit release.json ({exc})") from exc
        problem = release.problem()
        if problem:
            raise ChecksumError(f"{where} is refused: {problem}")
        return release

    def problem(self) -> str | None:
        """What makes this release unsafe to act on, or None.

        Every path names a listed model's config or a file in one of its listed versions,
        and stays inside that folder, so that a pull writes nothing outside its output.
        """
        if isinstance(self.release, bool) or not isinstance(self.release, int) or self.release < 1:
            return f"release {self.release!r} is not a positive integer"
        if not isinstance(self.models, dict) or not self.models:
            return "it lists no models"
        for model, versions in self.models.items():
            if not safe_model_name(model) or model == RELEASES:
                return f"model name {model!r} is not a folder name"
            if (
                not isinstance(versions, list)
                or not versions
                or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in versions
                )
            ):
                return f"the versions of {model} are not positive integers"
        problem = files_problem(self.files, lambda path: _path_problem(path, self.models))
        if problem:
            return problem
        missing = [m for m in self.models if f"{m}/{CONFIG}" not in {f.path for f in self.files}]
        if missing:
            return f"it lists no {CONFIG} for {missing[0]}"
        return None


def _path_problem(path: object, models: dict[str, list[int]]) -> str | None:
    if not isinstance(path, str):
        return "is not a string"
    model, _, rest = path.partition("/")
    if model not in models:
        return "is not inside a listed model"
    if rest == CONFIG:
        return None
    version, _, inner = rest.partition("/")
    if not (version.isascii() and version.isdigit()) or int(version) not in models[model]:
        return "is not inside a listed version"
    return None if inner == MANIFEST else check_relative_path(inner)


# ---- verify a downloaded release ---------------------------------------------------------


def verify_release_dir(path: str | Path, sha256: str | None = None) -> Release:
    """Check a downloaded release folder (KServe's /mnt/models, say) against its release.json.

    With ``sha256``, release.json must have exactly that SHA-256. Every listed file must
    be there with its size and SHA-256, and nothing else may be: no other model, version
    or file (Python's ``__pycache__`` folders aside, which Triton's python backend writes).

    Raises:
        UsageError: ``sha256`` is not 64 lowercase hex digits.
        ChecksumError: the folder is not the release: what differs first, in one line.
    """
    check_sha256(sha256, "--sha256")
    root = Path(path).expanduser()
    doc = root / RELEASE_JSON
    if not doc.is_file():
        raise ChecksumError(
            f"{root} holds no {RELEASE_JSON}: not a tritonkit release (or an incomplete one)"
        )
    data = doc.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if sha256 is not None and got != sha256:
        raise ChecksumError(
            f"{doc} has SHA-256 {got}, not the pinned {sha256}: this is not the release "
            "the deployment trusts"
        )
    release = Release.from_json(data, str(doc))
    listed = {f.path: f for f in release.files}
    for f in release.files:
        file = root / f.path
        if file.is_symlink() or not file.is_file():
            raise ChecksumError(
                f"{file} is missing (or not a plain file); release {release.release} lists it"
            )
        size = file.stat().st_size
        if size != f.size:
            raise ChecksumError(f"{file} has {size} bytes, release.json says {f.size}")
        if sha256_file(file) != f.sha256:
            raise ChecksumError(
                f"{file} does not match release.json's SHA-256 {f.sha256[:12]}… (changed or "
                "corrupted after the release was made)"
            )
    for item in sorted(root.rglob("*")):
        rel = item.relative_to(root)
        if any(p in SKIPPED_DIRS for p in rel.parts) or item.suffix == ".pyc":
            continue
        key = rel.as_posix()
        if item.is_dir() and not item.is_symlink():
            if len(rel.parts) == 1 and key not in release.models:
                hint = (
                    " (a folder of another release? download releases/"
                    f"{release_folder(release.release)}/ by itself)"
                    if key.isascii() and key.isdigit()
                    else ""
                )
                raise ChecksumError(
                    f"{item} is a folder release {release.release} does not list{hint}"
                )
            continue
        if key != RELEASE_JSON and key not in listed:
            raise ChecksumError(f"{item} is not part of release {release.release}")
    return release


# ---- list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRow:
    """One line of ``tritonkit release list``."""

    number: int
    complete: bool
    created_at: str = ""
    models: dict[str, list[int]] = field(default_factory=dict)
    sha256: str = ""
    files: int = 0
    size: int = 0
    problem: str = ""  # why a release.json that exists cannot be used


def _numbers(store: BlobStore) -> tuple[set[int], set[int]]:
    """(every release number in use, claimed or with blobs; those with a release.json)."""
    used, complete = set(), set()
    for name in store.names(RELEASES):
        head, _, rest = name[len(RELEASES) + 1 :].partition("/")
        number = release_number(head)
        if number is not None and rest:
            used.add(number)
            if rest == RELEASE_JSON:
                complete.add(number)
        elif head == CLAIMS and release_number(rest) is not None:
            used.add(int(rest))
    return used, complete


def list_releases(store: BlobStore) -> list[ReleaseRow]:
    """Every release under the prefix, complete (with release.json) or not, by number.

    Raises:
        BlobAuthError, ContainerNotFound, BlobError: what the account answered.
    """
    store.check()
    used, complete = _numbers(store)

    def row(number: int) -> ReleaseRow:
        if number not in complete:
            return ReleaseRow(number, False)
        got = store.read(RELEASES, release_folder(number), RELEASE_JSON)
        if got is None:
            return ReleaseRow(number, False)
        digest = hashlib.sha256(got[0]).hexdigest()
        try:
            r = Release.from_json(
                got[0], store.name(RELEASES, release_folder(number), RELEASE_JSON)
            )
        except ChecksumError as exc:
            return ReleaseRow(number, False, sha256=digest, problem=str(exc))
        if r.release != number:
            return ReleaseRow(number, False, sha256=digest, problem=f"it names release {r.release}")
        return ReleaseRow(number, True, r.created_at, r.models, digest, len(r.files), r.size)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(row, sorted(used)))


# ---- create ----------------------------------------------------------------------------


@dataclass
class ReleaseResult:
    """What ``create_release`` wrote."""

    number: int
    sha256: str  # of release.json's bytes: pin it (TRITONKIT_RELEASE_SHA256)
    where: str  # account/container/prefix/releases/R
    storage_uri: str  # the URL of releases/R (KServe's storageUri)
    models: dict[str, list[int]]
    files: int = 0
    size: int = 0
    bytes_copied: int = 0  # server-side, inside the account
    bytes_written: int = 0  # sent from here: pinned configs, manifests, release.json, claim
    seconds: float = 0.0


@dataclass
class _Plan:
    """What a release will hold, decided before anything is written."""

    models: dict[str, list[int]]
    copies: list[tuple[Item, str]] = field(default_factory=list)  # (dest item, source blob)
    written: dict[str, bytes] = field(default_factory=dict)  # path in release -> bytes
    files: list[ReleaseFile] = field(default_factory=list)


def _served(
    remote: dict[str, RemoteModel], models: list[str] | None, where: str
) -> dict[str, set[int]]:
    """model -> the versions served now (complete), plus the decoder versions they run."""
    chosen: dict[str, set[int]] = {}
    for name in models or sorted(remote):
        rm = remote[name]
        served = rm.served
        if not served:
            if models:
                raise NothingPublished(f"{name} serves no version in {where}; promote one first")
            continue
        incomplete = [v for v in served if v not in rm.complete]
        if incomplete:
            raise NothingPublished(
                f"{name}/{CONFIG} serves version {incomplete[0]}, which has no {MANIFEST} in "
                f"{where} (incomplete or missing); promote a complete version (nothing written)"
            )
        chosen.setdefault(name, set()).update(served)
    add_decoders(remote, chosen, where, "publish it again (nothing written)")
    if not chosen:
        raise NothingPublished(f"no model serves a version in {where}; nothing to release")
    return chosen


def _plan(store: BlobStore, remote: dict[str, RemoteModel], chosen: dict[str, set[int]]) -> _Plan:
    """The copies, pinned configs and manifests of a release; checks every version first.

    Raises:
        BlobError: a model name cannot be a folder, a manifest names a missing blob, or a
            manifest changed while it was read.
    """
    plan = _Plan({m: sorted(vs) for m, vs in sorted(chosen.items())})
    for name, versions in plan.models.items():
        if not safe_model_name(name) or name == RELEASES:
            raise BlobError(f"{store.where} holds a model named {name!r}, which cannot be a "
                            "folder of a release (nothing written)")  # fmt: skip
        rm = remote[name]
        for v in versions:
            rv = rm.versions[v]
            manifest = rv.manifest
            assert manifest is not None
            present = set(rv.blobs)
            missing = [f.path for f in manifest.files if f.path not in present]
            if missing:
                raise BlobError(
                    f"{store.name(name, v, MANIFEST)} lists {missing[0]}, which is missing in "
                    "the container; re-publish that version (nothing written)"
                )
            for f in manifest.files:
                item = Item(
                    (RELEASES, 0, name, v, f.path), f.size, digests=Digests(f.sha256, f.md5)
                )
                plan.copies.append((item, store.name(name, v, f.path)))
                plan.files.append(ReleaseFile(f"{name}/{v}/{f.path}", f.size, f.sha256))
            got = store.read(name, v, MANIFEST)
            if got is None or hashlib.sha256(got[0]).hexdigest() != rv.manifest_sha256:
                raise BlobError(f"{store.name(name, v, MANIFEST)} changed while the release "
                                "was planned; try again (nothing written)")  # fmt: skip
            plan.written[f"{name}/{v}/{MANIFEST}"] = got[0]
        base = rm.config_text or rm.versions[max(versions)].manifest.config  # type: ignore[union-attr]
        plan.written[f"{name}/{CONFIG}"] = with_policy(
            base, versions, store.name(name, CONFIG)
        ).encode()
    for path, data in plan.written.items():
        plan.files.append(ReleaseFile(path, len(data), hashlib.sha256(data).hexdigest()))
    plan.files.sort(key=lambda f: f.path)
    return plan


def _claim(store: BlobStore, number: int | None) -> tuple[int, int]:
    """Take a release number (``number``, or the next free one): (number, bytes written).

    Raises:
        VersionConflict: ``number`` is in use (complete or not), or was just taken.
    """
    used, _ = _numbers(store)
    body = json.dumps({"claimed_at": _now()}).encode()
    if number is not None:
        if number in used:
            raise VersionConflict(
                f"release {number} already exists in {store.where}: releases are immutable; "
                f"create release {max(used) + 1} instead (omit --version)"
            )
        store.write(body, RELEASES, CLAIMS, release_folder(number), create_only=True)
        return number, len(body)
    candidate = max(used, default=0) + 1
    for _ in range(CLAIM_RETRIES):
        try:
            store.write(body, RELEASES, CLAIMS, release_folder(candidate), create_only=True)
            return candidate, len(body)
        except VersionConflict:
            candidate += 1  # another creator took it: never share a number
    raise VersionConflict(f"release numbers kept being taken in {store.where}; try again")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_release(
    store: BlobStore,
    *,
    models: list[str] | None = None,
    number: int | None = None,
    concurrency: int = 8,
    verify_content: bool = False,
) -> ReleaseResult:
    """Freeze what is served now under the prefix as ``releases/R/`` (see the module doc).

    ``verify_content`` reads every copied file back and checks its SHA-256 against its
    version manifest before release.json is written (the model's bytes then pass through
    this machine once; without it, each copy's size and MD5 property are checked, and the
    SHA-256 of every file where the release is read: pinned pods, ``pull --release``).

    Every model serving a version (or the named ``models``) comes in at the versions its
    ``config.pbtxt`` serves, with the decoder versions entry models run; files are copied
    server-side (Copy Blob within the account: no model bytes pass through this machine)
    and each copy's size and MD5 checked against the version manifests (every file's
    SHA-256 is checked again where the release is read: ``pull_release`` and
    ``verify_release_dir``); release.json is written last. Everything is checked before
    the number is claimed.

    Raises:
        UsageError: a bad prefix, model name, number or concurrency.
        NothingPublished: nothing served, or a served version without a manifest.
        VersionConflict: ``number`` is in use (releases are immutable).
        BlobError: a manifest names a missing blob, a copy failed or did not land as
            listed (the release stays incomplete, and nothing pulls it).
        BlobAuthError, ContainerNotFound: what the account answered.
    """
    from tritonkit import __version__

    started = time.monotonic()
    _check_create_arguments(store, models, number, concurrency)
    store.check()
    remote = require_models(store, models, everything=True)
    plan = _plan(store, remote, _served(remote, models, store.where))
    number, written = _claim(store, number)
    folder = release_folder(number)
    copied = _copy_versions(store, plan, number, concurrency)
    if verify_content:
        _verify_copied_content(store, plan, folder, concurrency)
    for path, data in plan.written.items():
        store.write(data, RELEASES, folder, path, create_only=True)
        written += len(data)
    release = Release(number, _now(), __version__, plan.models, plan.files, store.where)
    data = release.to_json()
    store.write(data, RELEASES, folder, RELEASE_JSON, create_only=True)  # last: complete
    url = store.client.url.split("?")[0].rstrip("/")
    return ReleaseResult(
        number,
        hashlib.sha256(data).hexdigest(),
        f"{store.where}/{RELEASES}/{folder}",
        f"{url}/{store.name(RELEASES, folder)}",
        plan.models,
        files=len(plan.files),
        size=release.size,
        bytes_copied=copied,
        bytes_written=written + len(data),
        seconds=time.monotonic() - started,
    )


def _verify_copied_content(store: BlobStore, plan: _Plan, folder: str, concurrency: int) -> None:
    """Read back each server-side copy of release ``folder`` and check its SHA-256.

    Raises:
        ChecksumError: a copy's bytes differ from its manifest's SHA-256 (the release stays
            incomplete: it has no release.json).
    """
    copied = {f.path: f for f in plan.files if f.path not in plan.written}

    def check(path: str) -> None:
        digest = hashlib.sha256()
        with store.translate(f"reading back {path}"):
            for chunk in store.blob(RELEASES, folder, path).download_blob().chunks():
                digest.update(chunk)
        if digest.hexdigest() != copied[path].sha256:
            raise ChecksumError(
                f"the copy of {path} in {RELEASES}/{folder} does not match its manifest's "
                f"SHA-256 (got {digest.hexdigest()[:12]}…): the release stays incomplete; "
                "check the source version, then create the release again"
            )

    run_all(check, sorted(copied), concurrency, "tritonkit-release-verify")


def _check_create_arguments(
    store: BlobStore, models: list[str] | None, number: int | None, concurrency: int
) -> None:
    """Raises: UsageError: a bad prefix, model name, number or concurrency."""
    problem = prefix_problem(store.prefix)
    if problem:
        raise UsageError(f"--prefix {store.prefix!r} {problem}")
    check_number(number)
    bad = [m for m in models or [] if not safe_model_name(m) or m == RELEASES]
    if bad:
        raise UsageError(f"--model {bad[0]!r} is not a model name (a folder name, not "
                         f"{RELEASES!r})")  # fmt: skip
    if concurrency < 1:
        raise UsageError("--concurrency must be >= 1")


def _copy_versions(store: BlobStore, plan: _Plan, number: int, concurrency: int) -> int:
    """Copy every version file into release ``number`` server-side, then check each landed
    as its manifest lists it; returns the bytes copied.

    Raises:
        BlobError: the account refused a copy, or a copy did not land as listed (the
            release stays incomplete: it has no release.json).
    """
    uploader = Uploader(store, concurrency)
    items = []
    try:

        def copy(pair: tuple[Item, str]) -> None:
            item, source = pair
            if not uploader.copy(item, source):
                raise BlobError(
                    f"the account refused a server-side copy of {source} to "
                    f"{store.name(*item.dest)}; the credential needs read and write on the "
                    f"container (release {number} stays incomplete)"
                )

        for item, _ in plan.copies:
            item.dest = (RELEASES, release_folder(number), *item.dest[2:])
            items.append(item)
        run_all(copy, plan.copies, concurrency, "tritonkit-release")
        uploader.verify(items)
    finally:
        uploader.close()
    return uploader.stats.bytes_copied
