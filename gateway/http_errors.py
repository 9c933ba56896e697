"""Errors as OpenAI error responses: ``{"error": {"message", "type", "param", "code"}}``.

    status  type                    code               when
    400     invalid_request_error   (the parameter)    bad parameters; the model's own message
    401     invalid_request_error   invalid_api_key    a missing or wrong API (or metrics) key
    404     invalid_request_error   model_not_found    a model this gateway does not serve
    413     invalid_request_error   request_too_large  a body over --max-body-bytes
    429     rate_limit_error        rate_limit_exceeded  --max-concurrent(-per-key) in flight
    500     server_error            internal_error     the model failed on the request
    502     server_error            bad_gateway        Triton's stream broke off
    503     server_error            triton_unavailable Triton is down or not ready
    503     server_error            triton_restricted  Triton refuses an API the gateway needs
    504     server_error            timeout            no answer from Triton in --timeout

``APIError`` is raised by the request handlers and turned into that JSON by the app;
``from_client_error`` maps the client's errors at the boundary. A message the model
wrote about the request (it names an input: ``temperature must be >= 0 ...``) goes to
the client as is; anything else the model or the stream reports (``internal error:
...``, ``prefill failed: ...``) may hold internals, so the client gets a generic message
with the request id and the text stays in ``detail``, for the gateway's log only.
"""

from __future__ import annotations

import re
from typing import Any

from tritonkit.client.errors import (
    APIRestricted,
    ClientError,
    ConnectionFailed,
    InvalidRequest,
    ModelNotFound,
    ServerBusy,
    Timeout,
)
from tritonkit.core.interface import ENTRY_INPUTS

# Triton input names -> the OpenAI parameter a client set to fill them.
# The model's messages about a request start with the input they are about
# (core/params.py): every declared input, with the OpenAI parameter
# it comes from where the names differ (None: an input with no OpenAI parameter).
_RENAMED: dict[str, str | None] = {
    "stop_words": "stop", "text_input": "prompt", "min_length": "min_tokens",
    "random_seed": "seed", "stream": None, "exclude_input_in_output": None,
    "sampling_parameters": None,
}  # fmt: skip
_PARAMS: dict[str, str | None] = {
    **{t.name: _RENAMED.get(t.name, t.name) for t in ENTRY_INPUTS},
    "prompt": "prompt",  # "prompt is N tokens; the model's context is M"
}
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
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers  # sent with the response (Retry-After)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.detail = detail  # what happened, for the gateway's log; never sent

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


def too_large(limit: int) -> APIError:
    """The 413 for a body over ``limit`` bytes."""
    return APIError(
        413,
        f"the request body is larger than this gateway's limit of {limit} bytes",
        code="request_too_large",
    )


def internal(
    status: int, what: str, request_id: str, detail: str, code: str | None = None
) -> APIError:
    """A 5xx whose details stay in the log: the client gets ``what`` and the request id."""
    return APIError(
        status,
        f"{what} (request id {request_id}; the gateway's log has the details)",
        type="server_error",
        code=code or ("internal_error" if status == 500 else "bad_gateway"),
        detail=detail,
    )


_ADDRESS = re.compile(  # HOST:PORT of a replica: an IPv4 or IPv6 address, a DNS name, localhost
    r"(?:[a-z][a-z0-9+.-]*://)?"
    r"(?:(?:\d{1,3}\.){3}\d{1,3}|\[[0-9a-f:]+\]|[a-z0-9-]+(?:\.[a-z0-9-]+)+|localhost)"
    r":\d{1,5}\b",
    re.I,
)


def _without_addresses(message: str) -> str:
    """``message``'s first line with every HOST:PORT (a replica's address) taken out."""
    first = message.strip().splitlines()[0] if message.strip() else "unreachable"
    return _ADDRESS.sub("(a replica)", first)[:200]


def is_restricted(exc: ClientError) -> bool:
    """Whether Triton refused the call because its API is restricted to a key
    (``--grpc-restricted-protocol``): the server is up, the gateway lacks the key."""
    return isinstance(exc, APIRestricted)


def from_client_error(exc: ClientError, request_id: str) -> APIError:
    """Map a ``tritonkit.client`` error to the OpenAI error with the right status.

    The model's words about the request's inputs are kept; its internal failures and
    broken streams become a generic 500 / 502 naming ``request_id`` (see the module).
    """
    message = str(exc)
    if isinstance(exc, ServerBusy):
        return APIError(
            503, message, type="server_error", code="server_busy", headers={"Retry-After": "1"}
        )
    if isinstance(exc, ModelNotFound):
        return APIError(404, message, param="model", code="model_not_found")
    if isinstance(exc, ConnectionFailed):  # Triton's address stays in the log (detail)
        if is_restricted(exc):  # Triton's --grpc-restricted-protocol
            hint = (
                "Triton refused the gateway's call (an API restricted to its admin key); the "
                "gateway needs only Triton's health, metadata, model-config and inference "
                "APIs: give it --model-map ID=MODEL or --repository so it does not list "
                "Triton's models, or lift that restriction"
            )
            return APIError(
                503, hint, type="server_error", code="triton_restricted", detail=message
            )
        return APIError(
            503,
            f"cannot reach Triton: {_without_addresses(message)} (request id {request_id}; "
            "the gateway's log has the details)",
            type="server_error",
            code="triton_unavailable",
            detail=message,
        )
    if isinstance(exc, Timeout):
        return APIError(
            504,
            f"no answer from Triton within the timeout (request id {request_id})",
            type="server_error",
            code="timeout",
            detail=message,
        )
    if isinstance(exc, InvalidRequest):
        match = _FIRST_WORD.match(message)
        word = match.group(1) if match else ""
        if word in _PARAMS:
            return APIError(400, message, param=_PARAMS[word])
        return internal(500, "the model failed on this request", request_id, message)
    # ServerStreamError, or any other way the conversation with Triton broke.
    return internal(502, "the stream from the model broke off", request_id, message)
