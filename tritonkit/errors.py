"""Every error tritonkit raises on purpose, in one tree.

    TritonkitError                  base: a one-line message that says what to do next
    ├── UsageError                  bad arguments or bad input from the user
    │   ├── ChatTemplateError       a chat template refused the messages or failed to render
    │   └── ManifestError           a generated manifest (KServe, Kubernetes, Azure ML) that
    │                               would be refused, or an option that would produce one
    ├── ModelSourceError            a model that cannot be found or loaded
    │   └── UnsupportedModelError   not a causal LM, or an architecture with no export config
    ├── ExportError                 the ONNX export itself failed (disk, exporter)
    │   └── VerificationError       the export ran but does not match PyTorch
    ├── RepositoryError             a Triton model repository that cannot be built or is invalid
    ├── ServerError                 the local tritonserver cannot start or stopped
    ├── DeployError                 a deployment command (docker, ssh) failed
    ├── ClientError                 talking to a running Triton server failed
    │   ├── ConnectionFailed        the server is down or unreachable (refused, DNS, TLS)
    │   │   └── APIRestricted       the server restricts this API to callers with its admin key
    │   ├── Timeout                 no answer within the client's timeout
    │   ├── ModelNotFound           the server has no such model, or it is not loaded
    │   ├── InvalidRequest          the server or the model rejected the request (its message)
    │   ├── ServerBusy              the model's wait queue is full: retry shortly (503)
    │   └── ServerStreamError       a response stream broke off or could not be read
    │       └── EngineFailed        the model instance cannot generate any more: another replica
    ├── BlobError                   Azure Blob Storage (or Azurite) refused or failed
    │   ├── BlobAuthError           the credentials were rejected (wrong key, expired SAS, no role)
    │   ├── ContainerNotFound       the container does not exist
    │   ├── NothingPublished        no repository (or no such model/version) under the prefix
    │   ├── ChecksumError           a downloaded file does not match its manifest's SHA-256
    │   └── VersionConflict         another publisher took the version, or changed config.pbtxt
    ├── BenchError                  a profiling run that could not be done
    │   ├── ToolNotFound            perf_analyzer or genai-perf missing (says what to install)
    │   └── ToolFailed              the tool ran and failed (its own error lines, its log)

The classes live here, in one module: import them from ``tritonkit.errors``.
``tritonkit.client.errors`` and ``tritonkit.blob.store`` hold the code that maps
lower-level errors (gRPC, httpx, azure-core) onto them; package ``__init__`` modules
export the ones their users catch (``from tritonkit.blob import BlobError``).
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


class ChatTemplateError(UsageError, ValueError):
    """A model's chat template refused the messages (``raise_exception``) or failed."""


class ManifestError(UsageError):
    """A manifest that its schema or its service would refuse (one line: which object, where)."""


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


class DeployError(TritonkitError):
    """A deployment command (docker, ssh) failed."""


class ClientError(TritonkitError):
    """Talking to a running Triton server failed."""


class ConnectionFailed(ClientError):
    """The server is down or unreachable."""


class APIRestricted(ConnectionFailed):
    """The server refuses this API without its admin key (a ConnectionFailed: this server
    cannot be used for it as called)."""


class Timeout(ClientError):
    """The server did not answer within the client's timeout."""


class ModelNotFound(ClientError):
    """The server has no such model (or no loaded version of it)."""


class InvalidRequest(ClientError):
    """The server or the model rejected the request; the message is the server's own."""


class ServerStreamError(ClientError):
    """A response stream broke off before its final response, or was not readable."""


class ServerBusy(ClientError):
    """The model's wait queue is full (the entry model's ``server_busy``): retry shortly."""


class EngineFailed(ServerStreamError):
    """The model instance gave up generating (``engine_failed``): its server reports it
    ready, but every request fails; send them to another replica."""


class BenchError(TritonkitError):
    """A profiling run that could not be done."""


class ToolNotFound(BenchError):
    """perf_analyzer or genai-perf is not installed, or cannot start here."""


class ToolFailed(BenchError):
    """perf_analyzer or genai-perf ran and exited with an error."""


class BlobError(TritonkitError):
    """Azure Blob Storage refused a request, or could not be reached."""


class BlobAuthError(BlobError):
    """The storage account rejected the credentials."""


class ContainerNotFound(BlobError):
    """The container does not exist in the storage account."""


class NothingPublished(BlobError):
    """No model repository, model or complete version where one was asked for."""


class ChecksumError(BlobError):
    """A downloaded file does not match the SHA-256 its version's manifest lists."""


class VersionConflict(BlobError):
    """A concurrent publisher won the version number, or changed ``config.pbtxt`` first."""
