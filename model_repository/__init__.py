"""The Triton side: model sources that run inside Triton, and the repository builders.

``llm/model.py`` (tritonkit's engine), ``vllm/model.py`` (vLLM's) and
``decoder/model.py`` run inside Triton with the pure modules of ``runtime/`` and the
request core (``tritonkit.core``), copied into each repository. ``spec`` declares what a
repository is built with (the shared settings and one typed spec per engine), ``build``
dispatches to the engine's builder in ``builders/``, ``config`` writes the configs
through the ModelConfig protobuf, ``validate`` checks a repository.

The builders and the validator load on first use, so importing this package stays light
for the client and the publisher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import build_repository
    from .spec import (
        BuiltRepository,
        EngineSpec,
        OnnxRuntime,
        RepositorySpec,
        TensorRTPlan,
        Vllm,
        engine_spec,
    )
    from .validate import ValidationReport, validate_repository

_LAZY = {
    "build_repository": "build",
    "BuiltRepository": "spec",
    "EngineSpec": "spec",
    "OnnxRuntime": "spec",
    "RepositorySpec": "spec",
    "TensorRTPlan": "spec",
    "Vllm": "spec",
    "engine_spec": "spec",
    "ValidationReport": "validate",
    "validate_repository": "validate",
}

__all__ = [
    "BuiltRepository",
    "EngineSpec",
    "OnnxRuntime",
    "RepositorySpec",
    "TensorRTPlan",
    "ValidationReport",
    "Vllm",
    "build_repository",
    "engine_spec",
    "validate_repository",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
