"""Which Python environment the server's python models import from.

tritonkit's own engine needs only this environment's packages. A repository with an
entry model on vLLM (its config's ``engine`` parameter) needs vLLM's environment, a
virtual environment of the same Python made by ``scripts/install_vllm.sh`` (``make
setup`` runs it): vLLM pins a torch and a transformers of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tritonkit.errors import ServerError

VLLM_ENV_VARIABLE = "TRITONKIT_VLLM_ENV"
VLLM_ENV_NAME = ".venv-vllm"


def repository_engines(repository: str | os.PathLike[str]) -> set[str]:
    """The engines a local repository's models name (``engine`` parameter; models
    without one are tritonkit's onnxruntime engine or plain models)."""
    from tritonkit.model_repository import config as cfg

    engines = set()
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = cfg.read(path.parent)
        except Exception:  # an unreadable config: the server reports it at load
            continue
        engines.add(cfg.engine_of(config))
    return engines


def vllm_environment() -> Path:
    """vLLM's virtual environment: ``$TRITONKIT_VLLM_ENV``, else ``.venv-vllm`` beside
    this environment (the project's layout after ``make setup``).

    Raises:
        ServerError: none has vLLM, with how to install it.
    """
    given = os.environ.get(VLLM_ENV_VARIABLE)
    candidates = [Path(given)] if given else [Path(sys.prefix).parent / VLLM_ENV_NAME]
    for env in candidates:
        if any((env / "lib").glob("python3*/site-packages/vllm/__init__.py")):
            return env
    where = ", ".join(str(c) for c in candidates)
    raise ServerError(
        f"this repository's entry model runs on vLLM, and no vLLM environment was found "
        f"({where}): run scripts/install_vllm.sh (make setup does), or point "
        f"{VLLM_ENV_VARIABLE} at a virtual environment of this Python with vllm installed"
    )


def python_environment(repository: str | os.PathLike[str]) -> Path | None:
    """The environment a local ``repository``'s python models need (None: this one).

    Raises:
        ServerError: it needs vLLM's and there is none.
    """
    return vllm_environment() if "vllm" in repository_engines(repository) else None
