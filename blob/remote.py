"""What a container holds: models, their versions (complete or not) and what Triton serves.

A version is complete when its ``manifest.json`` exists (it is written last). Which
versions Triton serves is the ``version_policy`` of ``MODEL/config.pbtxt``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tritonkit.errors import BlobError, NothingPublished

from .manifest import CONFIG, MANIFEST, RELEASES, Manifest
from .store import BlobStore

CLAIM_SUFFIX = ".claim"
_UNREAD = Manifest("", 0, [], "", "", "")  # complete, but its manifest was not read


@dataclass
class RemoteVersion:
    """One version folder (or claim) of a model in Blob."""

    version: int
    manifest: Manifest | None = None  # None: incomplete (being published, or abandoned)
    manifest_sha256: str = ""  # of the manifest's bytes, which a deployment can pin
    claimed: bool = False  # a MODEL/N.claim exists
    blobs: list[str] = field(default_factory=list)  # paths inside MODEL/N/

    @property
    def complete(self) -> bool:
        return self.manifest is not None


@dataclass
class RemoteModel:
    """A model in Blob: its versions and its ``config.pbtxt``."""

    name: str
    versions: dict[int, RemoteVersion] = field(default_factory=dict)
    config_text: str | None = None
    config_etag: str | None = None

    @property
    def complete(self) -> list[int]:
        return sorted(v for v, rv in self.versions.items() if rv.complete)

    @property
    def highest(self) -> int:
        """The highest version number used (complete, incomplete or claimed); 0 if none."""
        return max(self.versions, default=0)

    def config(self) -> Any:
        """The parsed ``config.pbtxt``, or None when the model has none yet."""
        from tritonkit.model_repository import config as cfg

        if self.config_text is None:
            return None
        return cfg.parse(self.config_text, f"{self.name}/{CONFIG}")

    @property
    def served(self) -> list[int]:
        """The versions the config's version_policy serves, among the complete ones."""
        config = self.config()
        if config is None:
            return []
        policy = config.version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "specific":
            return sorted(policy.specific.versions)
        if which == "all":
            return self.complete
        n = policy.latest.num_versions if which == "latest" else 1
        return self.complete[-n:]


def _digits(text: str) -> bool:
    """ASCII digits only: ``"²".isdigit()`` is true and ``int("²")`` raises."""
    return text.isascii() and text.isdigit()


def _parse(rel: str) -> tuple[str, int | None, str] | None:
    """``MODEL/N/path`` -> (MODEL, N, path); ``MODEL/N.claim`` -> (MODEL, N, ".claim")."""
    model, _, rest = rel.partition("/")
    if not rest:
        return None
    head, _, path = rest.partition("/")
    if _digits(head) and path:
        return model, int(head), path
    if head.endswith(CLAIM_SUFFIX) and _digits(head[: -len(CLAIM_SUFFIX)]) and not path:
        return model, int(head[: -len(CLAIM_SUFFIX)]), CLAIM_SUFFIX
    if rest == CONFIG:
        return model, None, CONFIG
    return None


def read_models(
    store: BlobStore, models: list[str] | None = None, manifests: bool = True
) -> dict[str, RemoteModel]:
    """Every model under the prefix (or the named ones, which may be new), with versions.

    Lists the blobs once, then reads each ``config.pbtxt`` and (with ``manifests``) each
    complete version's manifest, in parallel.

    Raises:
        BlobError: the listing or a read failed (see ``BlobStore.translate``).
    """
    found: dict[str, RemoteModel] = {m: RemoteModel(m) for m in models or []}
    has_manifest: set[tuple[str, int]] = set()
    listed = [n for m in models for n in store.names(m)] if models else store.names("")
    for rel in listed:
        parsed = _parse(rel)
        if parsed is None or parsed[0] == RELEASES or (models and parsed[0] not in models):
            continue  # releases/ holds frozen copies, not a model
        model, version, path = parsed
        rm = found.setdefault(model, RemoteModel(model))
        if version is None:
            continue  # config.pbtxt, read below
        rv = rm.versions.setdefault(version, RemoteVersion(version))
        if path == CLAIM_SUFFIX:
            rv.claimed = True
        else:
            rv.blobs.append(path)
            if path == MANIFEST:
                has_manifest.add((model, version))

    def load_config(rm: RemoteModel) -> None:
        got = store.read(rm.name, CONFIG)
        if got is not None:
            rm.config_text, rm.config_etag = got[0].decode(), got[1]

    def load_manifest(key: tuple[str, int]) -> None:
        model, version = key
        got = store.read(model, version, MANIFEST)
        if got is not None:
            where = f"{store.name(model, version, MANIFEST)}"
            manifest = Manifest.from_json(got[0], where)
            if (manifest.model, manifest.version) != (model, version):
                raise BlobError(
                    f"{where} is refused: it describes {manifest.model} version "
                    f"{manifest.version}, not {model} version {version} (copied or changed "
                    "after publishing)"
                )
            rv = found[model].versions[version]
            rv.manifest, rv.manifest_sha256 = manifest, hashlib.sha256(got[0]).hexdigest()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(load_config, found.values()))
        if manifests:
            list(pool.map(load_manifest, sorted(has_manifest)))
        else:  # a placeholder: complete, contents not read
            for model, version in has_manifest:
                found[model].versions[version].manifest = _UNREAD
    return found


def require_models(
    store: BlobStore, models: list[str] | None = None, everything: bool = False
) -> dict[str, RemoteModel]:
    """``read_models``, refusing a prefix with no published model (or without a named one).

    With ``everything`` every model is read (decoders of the named ones included).

    Raises:
        NothingPublished: nothing complete under the prefix, or a named model is missing.
        BlobError: the container cannot be read.
    """
    found = {
        n: m for n, m in read_models(store, None if everything else models).items() if m.complete
    }
    missing = [m for m in models or [] if m not in found]
    if not found or missing:
        what = f"model {', '.join(missing)}" if missing else "model repository"
        raise NothingPublished(
            f"no published {what} under {store.where}; check --container and --prefix, "
            "or publish one with `tritonkit publish`"
        )
    return found


def add_decoders(
    remote: dict[str, RemoteModel], chosen: dict[str, set[int]], where: str, then: str
) -> None:
    """Add to ``chosen`` the decoder version each chosen entry version runs (its manifest's
    ``decoder``): the graph a version runs comes along with it.

    Raises:
        NothingPublished: that decoder version is not complete (``then`` says what to do).
    """
    for name in list(chosen):
        for v in sorted(chosen[name]):
            manifest = remote[name].versions[v].manifest
            if manifest and manifest.decoder:
                dec, dv = manifest.decoder["model"], int(manifest.decoder["version"])
                if dec not in remote or dv not in remote[dec].complete:
                    raise NothingPublished(
                        f"{name} version {v} runs {dec} version {dv}, which is not complete "
                        f"in {where}; {then}"
                    )
                chosen.setdefault(dec, set()).add(dv)
