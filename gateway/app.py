"""``create_app``: the FastAPI application of the OpenAI-compatible gateway.

    GET  /v1/models, /v1/models/{id}     the ready entry models (see ``catalog``)
    POST /v1/completions                 prompt -> text, streamed (SSE) or not
    POST /v1/chat/completions            messages -> chat template -> text
    GET  /health                         200 when the gateway is up and Triton is ready
    GET  /metrics                        the gateway's Prometheus metrics

Each generation is one gRPC stream to the entry model through ``AsyncLLMClient``. A
request is checked in this order: API key (401), JSON body and parameters (400),
concurrency limit (429), model (404), then Triton (its own 400 message, 503 when down).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tritonkit.client import AsyncLLMClient, ClientError, StreamChunk
from tritonkit.errors import ChatTemplateError, UsageError

from .auth import KeyChecker, presented_key
from .catalog import ModelCatalog, ServedModel
from .config import GatewayConfig
from .connection import ClientDisconnected, EventStream, Limiter, Slot, until_disconnected
from .http_errors import APIError, bad_request, from_client_error
from .metrics import GatewayMetrics, MetricsMiddleware
from .openai_format import DONE, Kind, ResponseWriter, sse, usage
from .schemas import ChatCompletionRequest, CompletionRequest, parse_body

CLIENT_CLOSED = 499  # nginx's status for a client that left; nobody reads it


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway for ``config``; nothing connects to Triton until the first request.

    Raises:
        UsageError: a setting is invalid, or a ``tokenizers`` folder cannot be read.
    """
    config.check()
    catalog = ModelCatalog(
        config.triton_url,
        model_map=config.model_map,
        repository=config.repository,
        tokenizers=config.tokenizers,
        headers=config.triton_headers,
        timeout_s=config.timeout_s,
        refresh_s=config.refresh_s,
    )
    gateway = _Gateway(catalog, KeyChecker(config.api_keys), GatewayMetrics(), config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await catalog.close()

    # No /docs or /openapi.json: the gateway is the one public port.
    app = FastAPI(
        title="tritonkit gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(MetricsMiddleware, metrics=gateway.metrics)
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientError, _client_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)

    app.add_api_route("/v1/models", gateway.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", gateway.get_model, methods=["GET"])
    app.add_api_route("/v1/completions", gateway.completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", gateway.chat_completions, methods=["POST"])
    app.add_api_route("/health", gateway.health, methods=["GET"])
    app.add_api_route("/metrics", gateway.render_metrics, methods=["GET"])
    return app


class _Gateway:
    """The request handlers, over one catalog, key checker, limiter and metrics."""

    def __init__(
        self,
        catalog: ModelCatalog,
        keys: KeyChecker,
        metrics: GatewayMetrics,
        config: GatewayConfig,
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.metrics = metrics
        self.config = config
        self.limiter = Limiter(config.max_concurrent, metrics.in_flight)

    # -- routes ------------------------------------------------------------------------

    async def list_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"object": "list", "data": [m.card() for m in await self.catalog.served()]}

    async def get_model(self, request: Request, model_id: str) -> dict[str, Any]:
        self._authorize(request)
        return (await self.catalog.get(model_id)).card()

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def health(self) -> dict[str, Any]:
        url = self.config.triton_url
        if not await self.catalog.admin.is_ready():
            raise APIError(
                503,
                f"Triton at {url} is up but not ready: its models are still loading or failed",
                type="server_error",
                code="triton_unavailable",
            )
        return {"status": "ok", "triton": url}

    async def render_metrics(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- generation --------------------------------------------------------------------

    async def _generate(self, request: Request, kind: Kind) -> Response:
        received = time.perf_counter()
        self._authorize(request)
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from exc
        body: ChatCompletionRequest | CompletionRequest
        if kind == "chat":
            body = parse_body(ChatCompletionRequest, data)
        else:
            body = parse_body(CompletionRequest, data)
        slot = self.limiter.acquire()
        handed_over = False  # a streamed response releases the slot when it ends
        try:
            model = await self.catalog.get(body.model)
            if isinstance(body, ChatCompletionRequest):
                prompt, echo = await self._chat_prompt(model, body), ""
            else:
                prompt = body.text_prompt()
                echo = prompt if body.echo else ""
            client = self.catalog.client(model)
            writer = ResponseWriter(kind, body.model, include_usage=body.include_usage)
            params = body.generation_kwargs()
            if body.stream:
                response = await self._stream(
                    request, client, prompt, params, writer, echo, received, slot
                )
                handed_over = True
                return response
            try:
                result = await until_disconnected(
                    request.receive, client.generate(prompt, **params)
                )
            except ClientDisconnected:
                self.metrics.disconnects.inc()
                return Response(status_code=CLIENT_CLOSED)
            self.metrics.ttft.labels(kind).observe(time.perf_counter() - received)
            counts = self._count(result.num_input_tokens, result.num_output_tokens)
            return JSONResponse(writer.complete(echo + result.text, result.finish_reason, counts))
        finally:
            if not handed_over:
                slot.release()

    async def _stream(
        self,
        request: Request,
        client: AsyncLLMClient,
        prompt: str,
        params: dict[str, Any],
        writer: ResponseWriter,
        echo: str,
        received: float,
        slot: Slot,
    ) -> Response:
        events = client.stream_events(prompt, **params)
        # Wait for Triton's first answer before choosing the status: a rejected request
        # still gets its 400 (or 404, 503) rather than a 200 with an error inside.
        try:
            first = await until_disconnected(request.receive, events.__anext__())
        except ClientDisconnected:
            self.metrics.disconnects.inc()
            await events.aclose()
            slot.release()
            return Response(status_code=CLIENT_CLOSED)
        except BaseException:
            await events.aclose()
            slot.release()
            raise
        body = self._events(events, first, writer, echo, received)
        return EventStream(body, on_close=slot.release)

    async def _events(
        self,
        events: AsyncGenerator[StreamChunk, None],
        chunk: StreamChunk,
        writer: ResponseWriter,
        echo: str,
        received: float,
    ) -> AsyncGenerator[bytes, None]:
        done = False
        first_text = True
        try:
            if writer.kind == "chat":
                yield writer.chunk(role=True)
            if echo:
                yield writer.chunk(echo)
            while True:
                if chunk.text:
                    if first_text:
                        first_text = False
                        self.metrics.ttft.labels(writer.kind).observe(
                            time.perf_counter() - received
                        )
                    yield writer.chunk(chunk.text)
                if chunk.is_final:
                    break
                chunk = await events.__anext__()
            done = True
            yield writer.chunk(finish_reason=chunk.finish_reason or "stop")
            counts = self._count(chunk.num_input_tokens, chunk.num_output_tokens)
            if writer.include_usage:
                yield writer.usage_chunk(counts)
            yield DONE
        except ClientError as exc:  # after the 200 went out: an error event, as OpenAI sends
            done = True
            yield sse(from_client_error(exc).body())
            yield DONE
        finally:
            if not done:
                self.metrics.disconnects.inc()
            await events.aclose()

    # -- helpers -----------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if not self.keys.allows(presented_key(request.headers)):
            raise APIError(
                401,
                "Incorrect or missing API key: send it as 'Authorization: Bearer KEY' "
                "(or an 'api-key' header)",
                code="invalid_api_key",
            )

    async def _chat_prompt(self, model: ServedModel, body: ChatCompletionRequest) -> str:
        messages = [m.as_template_input() for m in body.messages]
        try:
            template = await self.catalog.chat_template(model)
        except UsageError as exc:
            raise APIError(500, str(exc), type="server_error", code="chat_template") from exc
        try:
            return template.render(messages, add_generation_prompt=True)
        except ChatTemplateError as exc:
            raise bad_request(str(exc), "messages") from exc

    def _count(self, prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
        counts = usage(prompt_tokens, completion_tokens)
        self.metrics.prompt_tokens.inc(counts["prompt_tokens"])
        self.metrics.completion_tokens.inc(counts["completion_tokens"])
        return counts


# -- exception handlers: every error leaves in OpenAI's format --------------------------


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
    return await _api_error(request, from_client_error(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error = APIError(exc.status_code, str(exc.detail), code=None)
    return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # No details to the client: they are in the gateway's log, with the traceback.
    error = APIError(500, "internal gateway error; see the gateway's log", type="server_error")
    return JSONResponse(error.body(), status_code=500)
