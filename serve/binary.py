"""Where the ``tritonserver`` of the nvidia-pytriton wheel lives, and what it needs to run.

The wheel ships the server binary, the python backend and one python-backend stub per
Python version, but not laid out the way ``--backend-directory`` expects. This module
builds that layout once per wheel and interpreter in a cache folder, and computes the
environment the server and its python-backend stubs need.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import ServerError

INSTALL_HINT = "install the serve extra: pip install 'tritonkit[serve]'"


@dataclass(frozen=True)
class TritonDistribution:
    """The files of the wheel's Triton server."""

    root: Path  # site-packages/pytriton/tritonserver
    libs: Path  # site-packages/nvidia_pytriton.libs: the server's bundled shared libraries

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub(self, version: str | None = None) -> Path:
        """The python-backend stub for ``version`` ("3.11"; default: the running Python)."""
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def find_distribution() -> TritonDistribution:
    """Locate the ``tritonserver`` shipped in the nvidia-pytriton wheel.

    Raises:
        ServerError: the wheel is not installed, or lacks the binary or this Python's stub.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"nvidia-pytriton is not installed: {INSTALL_HINT}")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = TritonDistribution(
        root=package / "tritonserver", libs=package.parent / "nvidia_pytriton.libs"
    )
    if not dist.binary.is_file():
        raise ServerError(f"no tritonserver binary at {dist.binary}: reinstall nvidia-pytriton")
    if not dist.stub().is_file():
        raise ServerError(
            f"nvidia-pytriton has no python-backend stub for Python "
            f"{sys.version_info.major}.{sys.version_info.minor}: use Python 3.8 to 3.13"
        )
    return dist


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/tritonkit`` (``~/.cache/tritonkit``), or a private temp folder.

    The fallback ``TMP/tritonkit-UID`` is used only if this user owns it and nobody else
    may write or read it (mode 0700): the backend folder holds code the server runs, and
    a shared temp folder lets any local user create that path first. Otherwise a fresh
    private folder is made (``mkdtemp``: 0700, ours).
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tritonkit"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"tritonkit-{os.getuid()}"
    try:
        fallback.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(fallback)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            return fallback
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=f"tritonkit-{os.getuid()}-"))


def backend_directory(dist: TritonDistribution, cache: Path | None = None) -> Path:
    """A ``--backend-directory`` holding ``python/`` (the wheel's backend plus this Python's stub).

    Built once per wheel location and Python version; the stub must sit next to
    ``libtriton_python.so``, which is where the python backend looks for it.

    Raises:
        ServerError: the cache folder cannot be written.
    """
    stub = dist.stub()
    key = hashlib.sha256(f"{dist.root.resolve()}|{stub}|{stub.stat().st_mtime_ns}".encode())
    folder = (cache or cache_root()) / "backends" / key.hexdigest()[:16]
    if (folder / "python" / stub.name).is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Build beside it and rename, so two servers starting at once never see half a folder.
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
        python = staging / "python"
        shutil.copytree(dist.python_backend, python, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, python / stub.name)
        try:
            staging.rename(folder)
        except OSError:  # another process won the race: its folder is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ServerError(f"cannot build the backend folder {folder}: {exc}") from exc
    return folder


def server_environment(
    dist: TritonDistribution,
    base: dict[str, str] | None = None,
    python_env: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The environment for ``tritonserver`` and the python models it runs.

    ``LD_LIBRARY_PATH`` starts with this interpreter's LIBDIR: the stub links
    ``libpython3.X.so`` and would otherwise find the system's copy, whose symbols differ
    from this interpreter's extension modules (``ssl`` fails with ``_PyModule_Add``).
    The wheel's bundled libraries come next (the stub needs its ``libcudart``). The
    ``bin`` of ``python_env`` (a virtual environment of the same Python, such as vLLM's;
    default: this one) goes first on ``PATH`` so python models import its packages.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    ld_path = [p for p in (libdir, str(dist.libs), env.get("LD_LIBRARY_PATH")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(ld_path)
    bin_dir = str(Path(python_env or sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(
        [bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep) if p)]
    )
    return env
