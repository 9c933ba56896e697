"""Call an LLM served by Triton: ``LLMClient`` (blocking) and ``AsyncLLMClient`` (asyncio).

    from tritonkit.client import LLMClient

    with LLMClient("127.0.0.1:8001") as client:          # gRPC; protocol="http" for :8000
        result = client.generate("Hello", max_tokens=32)
        print(result.text, result.finish_reason, result.tokens_per_s)
        for piece in client.stream("Once upon a time", max_tokens=64):
            print(piece, end="", flush=True)

Errors are ``tritonkit.client.errors.ClientError`` subclasses (see that module).
The client needs grpcio with tritonclient's generated service, httpx and numpy: never torch.
"""

from ._async_client import AsyncLLMClient
from ._base import DEFAULT_MODEL, DEFAULT_TIMEOUT_S, DEFAULT_URLS, GenerationParams, Protocol
from ._client import LLMClient
from .errors import (
    APIRestricted,
    ClientError,
    ConnectionFailed,
    InvalidRequest,
    ModelNotFound,
    ServerStreamError,
    Timeout,
)
from .results import GenerationResult, ModelInfo, StreamChunk

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URLS",
    "APIRestricted",
    "AsyncLLMClient",
    "ClientError",
    "ConnectionFailed",
    "GenerationParams",
    "GenerationResult",
    "InvalidRequest",
    "LLMClient",
    "ModelInfo",
    "ModelNotFound",
    "Protocol",
    "ServerStreamError",
    "StreamChunk",
    "Timeout",
]
