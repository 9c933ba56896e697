"""An OpenAI-compatible HTTP API in front of Triton: ``tritonkit gateway``.

    from tritonkit.gateway import GatewayConfig, GatewayServer, create_app, serve

    serve(GatewayConfig(triton_url="127.0.0.1:8001", api_keys=("secret",)), port=9000)

then any OpenAI client works against it::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:9000/v1", api_key="secret")
    client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "Hi"}])

``create_app`` gives the FastAPI (ASGI) app to run under any ASGI server. The gateway
imports FastAPI, uvicorn, jinja2 and prometheus-client (the ``gateway`` extra) and the
client; never torch or transformers. Errors are OpenAI error JSON (``http_errors``).
"""

from __future__ import annotations

import importlib
from typing import Any

from tritonkit.client.chat import PLAIN_TEMPLATE, ChatTemplate
from tritonkit.errors import ChatTemplateError

from .config import DEFAULT_PORT, GatewayConfig

# The app and the server need the ``gateway`` extra (FastAPI, uvicorn): loaded when first
# used, so the CLI and ``GatewayConfig`` work on the base install.
_LAZY = {"create_app": "app", "GatewayServer": "server", "serve": "server"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = [
    "DEFAULT_PORT",
    "PLAIN_TEMPLATE",
    "ChatTemplate",
    "ChatTemplateError",
    "GatewayConfig",
    "GatewayServer",
    "create_app",
    "serve",
]
