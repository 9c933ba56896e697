"""The Triton side: model sources that run inside Triton, and the repository builder.

``llm/model.py`` (entry model) and ``decoder/model.py`` run inside Triton with the
pure modules of ``runtime/`` (numpy, onnxruntime and tokenizers only); ``runtime/layout.py``
declares what a repository looks like and ``runtime/interface.py`` the entry model's
request interface. ``build`` assembles a repository from an export, ``config`` writes the
configs through the ModelConfig protobuf, ``validate`` checks a repository.

The builder and validator load on first use, so importing ``runtime`` modules (the
layout, the interface) stays light for the client and the publisher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import BuiltRepository, build_repository
    from .validate import ValidationReport, validate_repository

_LAZY = {
    "BuiltRepository": "build",
    "build_repository": "build",
    "ValidationReport": "validate",
    "validate_repository": "validate",
}

__all__ = ["BuiltRepository", "ValidationReport", "build_repository", "validate_repository"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
