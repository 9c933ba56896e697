"""A local Triton Inference Server: the real ``tritonserver`` of the nvidia-pytriton wheel.

``TritonServer`` starts it with the python backend on a model repository (a folder, or
an ``as://`` / ``s3://`` / ``gs://`` URL passed through to Triton), waits until it is
ready, and stops it. Failures raise ``tritonkit.errors.ServerError`` quoting the
server's own error line.
"""

from .binary import TritonDistribution, backend_directory, find_distribution, server_environment
from .log import ServerLog, failure_reason
from .ports import free_ports, port_in_use
from .server import REMOTE_SCHEMES, ModelControlMode, TritonServer, is_remote_repository

__all__ = [
    "REMOTE_SCHEMES",
    "ModelControlMode",
    "ServerLog",
    "TritonDistribution",
    "TritonServer",
    "backend_directory",
    "failure_reason",
    "find_distribution",
    "free_ports",
    "is_remote_repository",
    "port_in_use",
    "server_environment",
]
