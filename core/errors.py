"""Every error tritonkit raises on purpose, in one tree.

    TritonkitError                  base: a one-line message that says what to do next
    ├── UsageError                  bad arguments or bad input from the user
    ├── ModelSourceError            a model that cannot be found or loaded
    │   └── UnsupportedModelError   not a causal LM, or an architecture with no export config
    ├── ExportError                 the ONNX export itself failed (disk, exporter)
    │   └── VerificationError       the export ran but does not match PyTorch
    ├── RepositoryError             a Triton model repository that cannot be built or is invalid
    ├── ServerError                 the local tritonserver cannot start or stopped
    └── ClientError                 (tritonkit.client.errors) talking to a running server

The CLI prints a ``TritonkitError`` as one line and exits non-zero; anything else is
a bug and keeps its traceback. Lower-level exceptions are chained with ``raise ... from``.
"""

from __future__ import annotations


class TritonkitError(Exception):
    """Base of every error tritonkit raises on purpose."""

    exit_code = 1


class UsageError(TritonkitError):
    """Bad arguments or bad input from the user."""

    exit_code = 2


class ModelSourceError(TritonkitError):
    """A model (hub id or folder) that cannot be found or loaded."""


class UnsupportedModelError(ModelSourceError):
    """A model that is not a causal LM, or whose architecture has no export config."""


class ExportError(TritonkitError):
    """The export failed: the exporter, the disk, or the output folder."""


class VerificationError(ExportError):
    """The exported graph does not match the PyTorch model."""


class RepositoryError(TritonkitError):
    """A Triton model repository that cannot be built, or does not validate."""


class ServerError(TritonkitError):
    """The local Triton server could not start, or stopped unexpectedly."""
