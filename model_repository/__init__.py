"""The Triton side: model sources that run inside Triton, and the repository builder.

``llm/model.py`` (entry model) and ``decoder/model.py`` run inside Triton with the
pure modules of ``runtime/`` (numpy, onnxruntime and tokenizers only); ``build``
assembles a repository from an export, ``config`` writes the configs through the
ModelConfig protobuf, ``validate`` checks a repository.
"""

from .build import BuiltRepository, build_repository
from .validate import ValidationReport, validate_repository

__all__ = ["BuiltRepository", "ValidationReport", "build_repository", "validate_repository"]
