"""Which release a manifest serves: where it lies in Blob, its pin, and the models in it.

A release is the folder ``PREFIX/releases/R/`` of a container: one model repository
(``MODEL/config.pbtxt``, ``MODEL/V/...``) plus ``release.json``, whose SHA-256 pins the
whole release. Releases are written once and never changed, so a pod that reads one
never sees it move; a rollout is a new release number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import ManifestError

# The entry model of the demo (tritonkit demo / repo build --name llm) and its two twins;
# a vLLM repository has no decoder model (vLLM runs the weights itself).
DEMO_ENTRY_MODELS = ("llm",)
DEMO_MODELS = ("llm", "llm_decoder", "llm_sync")
DEMO_MODELS_BY_ENGINE = {"onnxruntime": DEMO_MODELS, "vllm": ("llm", "llm_sync")}

ACCOUNT_URL_RE = re.compile(r"^https://([a-z0-9]{3,24})\.blob\.core\.windows\.net/?$")
CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$", re.IGNORECASE)


@dataclass(frozen=True)
class ReleaseRef:
    """Release ``release`` under ``PREFIX/releases/`` of ``container`` in the storage account
    at ``account_url`` (``https://ACCOUNT.blob.core.windows.net``); ``sha256`` is the hash
    of its ``release.json`` (``tritonkit`` release commands print it), or None."""

    release: int
    container: str
    account_url: str
    prefix: str = ""
    sha256: str | None = None

    def check(self) -> ReleaseRef:
        """Return self when every part is well formed.

        Raises:
            ManifestError: a part that is malformed (says which and what is expected).
        """
        if isinstance(self.release, bool) or not isinstance(self.release, int):
            raise ManifestError(f"release {self.release!r} is not a whole number")
        from tritonkit.blob.manifest import MAX_RELEASE

        if not 1 <= self.release <= MAX_RELEASE:
            raise ManifestError(f"release {self.release} is out of range (1..{MAX_RELEASE})")
        if not ACCOUNT_URL_RE.match(self.account_url):
            raise ManifestError(
                f"account URL {self.account_url!r} is not https://ACCOUNT.blob.core.windows.net "
                "(ACCOUNT: 3-24 lowercase letters and digits)"
            )
        if not CONTAINER_RE.match(self.container):
            raise ManifestError(
                f"container {self.container!r} is not a Blob container name (3-63 lowercase "
                "letters, digits and single hyphens, starting and ending with a letter or digit)"
            )
        prefix = self.prefix.strip("/")
        if prefix and (not PREFIX_RE.match(prefix) or ".." in prefix.split("/")):
            raise ManifestError(
                f"prefix {self.prefix!r} must be folder names of letters, digits, '.', '_', '-' "
                "separated by '/', without '..'"
            )
        if self.sha256 is not None and not SHA256_RE.match(self.sha256):
            raise ManifestError(f"release SHA-256 {self.sha256!r} is not 64 lowercase hex digits")
        return self

    @property
    def path(self) -> str:
        """``PREFIX/releases/RRRRRR`` inside the container (the release folder, six digits)."""
        from tritonkit.blob.manifest import RELEASES, release_folder

        folder = f"{RELEASES}/{release_folder(self.release)}"
        prefix = self.prefix.strip("/")
        return f"{prefix}/{folder}" if prefix else folder

    @property
    def url(self) -> str:
        """``https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX/releases/R`` (KServe's
        storageUri form for Azure Blob; Azure ML takes the same URL as a model path)."""
        return f"{self.account_url.rstrip('/')}/{self.container}/{self.path}"


def check_image(image: str, what: str = "image") -> str:
    """Return ``image`` when it looks like a container image reference.

    Raises:
        ManifestError: empty, whitespace, or characters no image reference has.
    """
    if not IMAGE_RE.match(image) or len(image) > 512:
        raise ManifestError(
            f"{what} {image!r} is not an image reference (REGISTRY/NAME:TAG or NAME@sha256:...)"
        )
    return image


def check_models(models: tuple[str, ...], entry_models: tuple[str, ...]) -> None:
    """Raises:
    ManifestError: no model, a malformed name, or an entry model not among the models.
    """
    if not models or not entry_models:
        raise ManifestError("no model to serve: give at least one entry model")
    for name in (*models, *entry_models):
        if not MODEL_RE.match(name):
            raise ManifestError(
                f"model name {name!r} is not a Triton model folder name (letters, digits, '_.-')"
            )
    missing = [m for m in entry_models if m not in models]
    if missing:
        raise ManifestError(f"entry model(s) {', '.join(missing)} are not among the models")


def models_in_repository(repository: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The models of a local model repository and, among them, the entry models
    (decoupled: the ones clients and the gateway call).

    Raises:
        ManifestError: not a folder, or no ``MODEL/config.pbtxt`` in it.
    """
    if not repository.is_dir():
        raise ManifestError(f"repository {str(repository)!r} is not a folder")
    models: list[str] = []
    entry: list[str] = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        name = config.parent.name
        models.append(name)
        if re.search(r"decoupled\s*:\s*true", config.read_text(errors="replace")):
            entry.append(name)
    if not models:
        raise ManifestError(f"{repository} holds no model (no MODEL/config.pbtxt)")
    check_models(tuple(models), tuple(entry))
    return tuple(models), tuple(entry)


def check_engine(image: str, engine: str) -> None:
    """The engine is one the images serve, and ``image``'s tag, where it names an engine
    (compose and create_cluster.sh tag ``tritonkit-triton:TAG-ENGINE``), names this one.
    An image whose tag names none is checked where it runs: its entrypoint compares the
    repository's engine with its own and refuses the other, saying so.

    Raises:
        ManifestError: an unknown engine, or an image tagged for the other one.
    """
    from tritonkit.versions import IMAGE_ENGINES

    if engine not in IMAGE_ENGINES:
        raise ManifestError(f"engine {engine!r}: choose {' or '.join(IMAGE_ENGINES)}")
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    named = [e for e in IMAGE_ENGINES if tag.endswith(f"-{e}")]
    if named and named[0] != engine:
        raise ManifestError(
            f"image {image!r} is the {named[0]} image and the release was built for --engine "
            f"{engine}: build and push the image with ENGINE={engine} "
            f"(tritonkit-triton:TAG-{engine})"
        )


def repository_engine(repository: Path, entry_models: tuple[str, ...]) -> str:
    """The engine a local repository's entry models were built for.

    Raises:
        ManifestError: entry models of different engines (one image serves one engine).
    """
    from tritonkit.model_repository import config as cfg

    engines = {cfg.engine_of(cfg.read(repository / m)) for m in entry_models}
    if len(engines) > 1:
        raise ManifestError(
            f"{repository}'s entry models run on {' and '.join(sorted(engines))}; one image "
            "serves one engine: split them into two releases"
        )
    return engines.pop() if engines else "onnxruntime"
