"""Errors as OpenAI error responses: ``{"error": {"message", "type", "param", "code"}}``.

    status  type                    code               when
    400     invalid_request_error   (the parameter)    bad parameters; Triton's own message
    401     invalid_request_error   invalid_api_key    a missing or wrong API key
    404     invalid_request_error   model_not_found    a model this gateway does not serve
    429     rate_limit_error        rate_limit_exceeded  --max-concurrent generations in flight
    500     server_error            internal_error     the model failed on the request
    502     server_error            bad_gateway        Triton's stream broke off
    503     server_error            triton_unavailable Triton is down or not ready
    503     server_error            triton_restricted  Triton wants a header the gateway lacks
    504     server_error            timeout            no answer from Triton in --timeout

``APIError`` is raised by the request handlers and turned into that JSON by the app;
``from_client_error`` maps the client's errors at the boundary, keeping Triton's message.
"""

from __future__ import annotations

import re
from typing import Any

from tritonkit.client.errors import (
    ClientError,
    ConnectionFailed,
    InvalidRequest,
    ModelNotFound,
    Timeout,
)

# Triton input names -> the OpenAI parameter a client set to fill them.
_PARAMS = {
    "max_tokens": "max_tokens", "min_tokens": "min_tokens", "temperature": "temperature",
    "top_k": "top_k", "top_p": "top_p", "seed": "seed", "stop_words": "stop",
    "repetition_penalty": "repetition_penalty", "text_input": "prompt", "prompt": "prompt",
}  # fmt: skip
_FIRST_WORD = re.compile(r"^\s*([a-z_]+)")


class APIError(Exception):
    """A request that ends in an OpenAI error response with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The OpenAI error JSON."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None) -> APIError:
    """A 400 for a parameter this gateway or the model cannot honour."""
    return APIError(400, message, param=param, code=None)


def unknown_model(model: str) -> APIError:
    """The 404 for a model id this gateway does not serve."""
    return APIError(
        404,
        f"The model '{model}' does not exist on this gateway; GET /v1/models lists the "
        "models it serves",
        param="model",
        code="model_not_found",
    )


def from_client_error(exc: ClientError) -> APIError:
    """Map a ``tritonkit.client`` error to the OpenAI error with the right status."""
    message = str(exc)
    if isinstance(exc, ModelNotFound):
        return APIError(404, message, param="model", code="model_not_found")
    if isinstance(exc, ConnectionFailed):
        if "protocol is restricted" in message:  # Triton's --grpc-restricted-protocol
            message = (
                f"{message}; start the gateway with --triton-header NAME=VALUE (or "
                "$TRITON_ADMIN_KEY) so it sends that header"
            )
            return APIError(503, message, type="server_error", code="triton_restricted")
        return APIError(503, message, type="server_error", code="triton_unavailable")
    if isinstance(exc, Timeout):
        return APIError(504, message, type="server_error", code="timeout")
    if isinstance(exc, InvalidRequest):
        if message.startswith("internal error"):
            return APIError(500, message, type="server_error", code="internal_error")
        match = _FIRST_WORD.match(message)
        param = _PARAMS.get(match.group(1)) if match else None
        return APIError(400, message, param=param)
    # ServerStreamError, or any other way the conversation with Triton broke.
    return APIError(502, message, type="server_error", code="bad_gateway")
