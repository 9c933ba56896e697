"""``create_app``: the FastAPI application of the OpenAI-compatible gateway.

    GET  /v1/models, /v1/models/{id}     the ready entry models (see ``catalog``)
    POST /v1/completions                 prompt -> text, streamed (SSE) or not
    POST /v1/chat/completions            messages (+ tools) -> chat template -> text or tool calls
    GET  /health                         200 when the gateway is up and a Triton replica is ready
    GET  /metrics                        the gateway's Prometheus metrics (its own key, if set)

Each generation is one gRPC stream to the entry model on one Triton replica, the one
with the fewest in flight (``replicas``: retried on another while the replica fails
before its first response; after it, an error event ends the stream). A
request is checked in this order: body size (413), API key (401), JSON body, parameters
and prompt length (400), concurrency limits (429), model (404), chat template (400, off
the event loop: ``rendering``), then Triton (its own 400 message, 503 when down). Every
response carries ``X-Request-ID`` (``request_context``); a 5xx names it instead of the
details, which go to the ``tritonkit.gateway`` log.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tritonkit.client import AsyncLLMClient, ClientError, StreamChunk
from tritonkit.core.params import MAX_GUIDE_CHARS
from tritonkit.errors import ChatTemplateError, UsageError

from . import json_body
from .auth import KeyChecker, presented_key
from .catalog import ModelCatalog, ServedModel
from .config import GatewayConfig
from .connection import (
    ClientDisconnected,
    EventStream,
    KeyLimiter,
    Limiter,
    Slot,
    until_disconnected,
)
from .http_errors import APIError, bad_request, from_client_error, internal
from .metrics import GatewayMetrics, MetricsMiddleware
from .openai_format import DONE, Choice, Kind, ResponseWriter, finish, sse, usage
from .rendering import TemplateRenderer
from .replicas import ReplicaPool
from .request_context import RequestContextMiddleware, log
from .schemas import ChatCompletionRequest, CompletionRequest, parse_body
from .tools import ToolPlan, detect_format, forcing_grammar, prompt_messages

CLIENT_CLOSED = 499  # nginx's status for a client that left; nobody reads it


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway for ``config``; nothing connects to Triton until the first request.

    Raises:
        UsageError: a setting is invalid, or a ``tokenizers`` folder cannot be read.
    """
    config.check()
    metrics = GatewayMetrics()
    pool = ReplicaPool(
        config.replica_urls,
        discover=config.triton_discover,
        discover_interval_s=config.discover_interval_s,
        headers=config.triton_headers,
        timeout_s=config.timeout_s,
        metrics=metrics,
    )
    catalog = ModelCatalog(
        pool,
        model_map=config.model_map,
        repository=config.repository,
        tokenizers=config.tokenizers,
        refresh_s=config.refresh_s,
    )
    gateway = _Gateway(catalog, pool, KeyChecker(config.api_keys), metrics, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gateway.renderer.close()
        await pool.close()

    # No /docs or /openapi.json: the gateway is the one public port.
    app = FastAPI(
        title="tritonkit gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    # The last added runs first: metrics see every status, the request id and the body cap
    # every request; exceptions no handler takes become a 500 in RequestContextMiddleware.
    app.add_middleware(RequestContextMiddleware, max_body_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=gateway.metrics)
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientError, _client_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]

    app.add_api_route("/v1/models", gateway.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", gateway.get_model, methods=["GET"])
    app.add_api_route("/v1/completions", gateway.completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", gateway.chat_completions, methods=["POST"])
    app.add_api_route("/health", gateway.health, methods=["GET"])
    app.add_api_route("/metrics", gateway.render_metrics, methods=["GET"])
    return app


class _Gateway:
    """The request handlers, over one catalog, key checkers, limiters, renderer and metrics."""

    def __init__(
        self,
        catalog: ModelCatalog,
        pool: ReplicaPool,
        keys: KeyChecker,
        metrics: GatewayMetrics,
        config: GatewayConfig,
    ) -> None:
        self.catalog = catalog
        self.pool = pool
        self.keys = keys
        self.metrics = metrics
        self.config = config
        # /metrics lists replica addresses: its own keys, else the API keys; open only when
        # the gateway has no keys at all. create_cluster.sh's Prometheus scrapes the
        # gateway with the metrics key (a Secret), the KServe manifests give it the same.
        self.metrics_keys = KeyChecker(config.metrics_keys or config.api_keys)
        self.limiter = Limiter(config.max_concurrent, metrics.in_flight)
        self.key_limiter = KeyLimiter(config.max_concurrent_per_key)
        self.renderer = TemplateRenderer(config.template_timeout_s, config.template_max_chars)

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
        asked: list[str] = []

        async def ready(admin: AsyncLLMClient) -> bool:
            asked.append(admin.url)
            return await admin.is_ready()

        if not await self.pool.admin_call(ready):
            raise APIError(
                503,
                "Triton is up but not ready: its models are still loading or failed",
                type="server_error",
                code="triton_unavailable",
                detail=f"{asked[-1]} is not ready",
            )
        # No addresses: /health answers anyone (load balancers, probes) without a key.
        return {"status": "ok", "replicas": len(self.pool), "replicas_up": self.pool.up_count}

    async def render_metrics(self, request: Request) -> Response:
        if not self.metrics_keys.allows(presented_key(request.headers)):
            raise APIError(
                401,
                "Incorrect or missing metrics key: send it as 'Authorization: Bearer KEY' "
                "(or an 'api-key' header)",
                code="invalid_api_key",
            )
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- generation --------------------------------------------------------------------

    async def _generate(self, request: Request, kind: Kind) -> Response:
        received = time.perf_counter()
        key = self._authorize(request)
        data = json_body.decode(await request.body())
        body: ChatCompletionRequest | CompletionRequest
        prompt, messages = "", []
        if kind == "chat":
            body = parse_body(ChatCompletionRequest, data)
            body.check_length(self.config.max_prompt_chars)  # before rendering or tokenizing
            messages = [m.as_template_input() for m in body.messages]
        else:
            body = parse_body(CompletionRequest, data)
            body.check_length(self.config.max_prompt_chars)
            prompt = body.text_prompt()
        slot = self._acquire(key)
        handed_over = False  # a streamed response releases the slot when it ends
        try:
            model = await self.catalog.get(body.model)
            tools: ToolPlan | None = None
            if isinstance(body, ChatCompletionRequest):
                prompt, tools = await self._chat_prompt(request, model, body, messages)
                echo = ""
            else:
                echo = prompt if body.echo else ""
            writer = ResponseWriter(kind, body.model, include_usage=body.include_usage)
            params = body.generation_kwargs()
            if tools is not None and tools.grammar is not None:
                params["guided_grammar"] = tools.grammar  # the only constraint (checked)
            try:
                if body.stream:
                    events = self.pool.stream_events(model.triton_model, prompt, **params)
                    response = await self._stream(
                        request, events, writer, echo, received, slot, tools, body.n or 1
                    )
                    handed_over = True
                    return response
                result = await until_disconnected(
                    request.receive, self.pool.generate(model.triton_model, prompt, **params)
                )
            except ClientDisconnected:
                self.metrics.disconnects.inc()
                return Response(status_code=CLIENT_CLOSED)
            except ClientError as exc:  # named by the OpenAI parameter the client sent
                raise _as_sent(from_client_error(exc, _request_id(request)), body) from exc
            self.metrics.ttft.labels(kind).observe(time.perf_counter() - received)
            results = result.choices or (result,)  # n choices, by index
            generated = sum(r.num_output_tokens or 0 for r in results)
            counts = self._count(result.num_input_tokens, generated, result.cached_tokens)
            choices = []
            for one in results:
                if tools is None:
                    text, calls = echo + one.text, []
                else:
                    parser = tools.parser()
                    parser.feed(one.text)
                    parser.finish()
                    text, calls = parser.content, [c.as_openai() for c in parser.calls]
                choices.append(
                    Choice(text, one.finish_reason, calls, one.logprobs, text_offset=len(echo))
                )
            return JSONResponse(writer.complete(choices, counts))
        finally:
            if not handed_over:
                slot.release()

    async def _stream(
        self,
        request: Request,
        events: AsyncGenerator[StreamChunk, None],
        writer: ResponseWriter,
        echo: str,
        received: float,
        slot: Slot,
        tools: ToolPlan | None = None,
        n: int = 1,
    ) -> Response:
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
        body = self._events(events, first, writer, echo, received, _request_id(request), tools, n)
        return EventStream(body, on_close=slot.release)

    async def _events(
        self,
        events: AsyncGenerator[StreamChunk, None],
        chunk: StreamChunk,
        writer: ResponseWriter,
        echo: str,
        received: float,
        request_id: str,
        tools: ToolPlan | None = None,
        n: int = 1,
    ) -> AsyncGenerator[bytes, None]:
        done = False
        first_text = True
        streams = [_ChoiceStream(tools, len(echo)) for _ in range(n)]  # by choice index
        try:
            for i in range(n):
                if writer.kind == "chat":
                    yield writer.chunk(role=True, index=i)
                if echo:
                    yield writer.chunk(echo, index=i)
            while True:
                i = chunk.index if 0 <= chunk.index < n else 0
                one = streams[i]
                one.logprobs.extend(chunk.logprobs or ())
                one.counts(chunk)
                if chunk.text:
                    if first_text:
                        first_text = False
                        self.metrics.ttft.labels(writer.kind).observe(
                            time.perf_counter() - received
                        )
                    for piece in one.pieces(writer, chunk.text, i):
                        yield piece
                if chunk.finish_reason and not one.finished:
                    for piece in one.finish(writer, chunk.finish_reason, i):
                        yield piece
                if chunk.is_final:
                    break
                chunk = await events.__anext__()
            done = True
            for i, one in enumerate(streams):  # a choice the model ended without a reason
                if not one.finished:
                    for piece in one.finish(writer, "stop", i):
                        yield piece
            counts = self._count(
                streams[0].prompt_tokens,
                sum(s.generated for s in streams),
                streams[0].cached_tokens,
            )
            if writer.include_usage:
                yield writer.usage_chunk(counts)
            yield DONE
        except ClientError as exc:  # after the 200 went out: an error event, as OpenAI sends
            done = True
            error = from_client_error(exc, request_id)
            _log_detail(request_id, error)
            yield sse(error.body())
            yield DONE
        finally:
            if not done:
                self.metrics.disconnects.inc()
            await events.aclose()

    # -- helpers -----------------------------------------------------------------------

    def _authorize(self, request: Request) -> int | None:
        """The index of the request's API key (None when no keys are configured).

        Raises:
            APIError: 401 for a missing or wrong key.
        """
        presented = presented_key(request.headers)
        if not self.keys.allows(presented):
            raise APIError(
                401,
                "Incorrect or missing API key: send it as 'Authorization: Bearer KEY' "
                "(or an 'api-key' header)",
                code="invalid_api_key",
            )
        return self.keys.match(presented)

    def _acquire(self, key: int | None) -> Slot:
        per_key = self.key_limiter.acquire(key)
        try:
            slot = self.limiter.acquire()
        except APIError:
            per_key.release()
            raise
        return Slot(slot.release, per_key.release)

    async def _chat_prompt(
        self,
        request: Request,
        model: ServedModel,
        body: ChatCompletionRequest,
        messages: list[dict[str, Any]],
    ) -> tuple[str, ToolPlan | None]:
        """The rendered prompt, and how to read tool calls from the output (None: the
        request offers no tools, or ``tool_choice`` is ``none``).

        Raises:
            APIError: 500 for an unreadable template, 400 when it fails on the messages.
        """
        try:
            template = await self.catalog.chat_template(model)
        except UsageError as exc:  # its message names files on this machine: to the log
            what = f"the chat template of model {model.id!r} cannot be read"
            raise internal(500, what, _request_id(request), str(exc), "chat_template") from exc
        fmt, native = detect_format(template.source)
        if self.config.tool_parser != "auto":
            fmt = self.config.tool_parser  # type: ignore[assignment]  # checked in config
        tools = body.tool_list
        try:
            prompt = await self.renderer.render(
                template,
                prompt_messages(messages, tools, native),
                add_generation_prompt=True,
                tools=[t.spec() for t in tools] if native and tools else None,
            )
        except ChatTemplateError as exc:
            raise bad_request(str(exc), "messages") from exc
        if not tools:
            return prompt, None
        grammar = None
        if body.choice.forced:
            parallel = body.parallel_tool_calls is not False
            grammar = forcing_grammar(tools, body.choice, fmt, parallel)
            if len(grammar) > MAX_GUIDE_CHARS:  # the model would refuse it, naming its input
                raise bad_request(
                    f"the tools' schemas make a grammar of {len(grammar)} characters; the "
                    f"model takes at most {MAX_GUIDE_CHARS}: offer fewer or smaller tools, "
                    "or a named function",
                    "tools",
                )
        parallel = body.parallel_tool_calls is not False
        return prompt, ToolPlan(fmt, frozenset(t.name for t in tools), grammar, parallel)

    def _count(
        self, prompt_tokens: int | None, completion_tokens: int | None, cached: int | None = None
    ) -> dict[str, Any]:
        counts = usage(prompt_tokens, completion_tokens, cached)
        self.metrics.prompt_tokens.inc(counts["prompt_tokens"])
        self.metrics.completion_tokens.inc(counts["completion_tokens"])
        return counts


def _as_sent(error: APIError, body: ChatCompletionRequest | CompletionRequest) -> APIError:
    """``error`` naming ``response_format`` or ``tools`` when the gateway turned them into
    the model's ``guided_json`` or ``guided_grammar`` (the model names its own input)."""
    if not isinstance(body, ChatCompletionRequest):
        return error
    if error.param == "guided_json" and body.response_format is not None:
        error.param = "response_format"
    elif error.param == "guided_grammar" and body.choice.forced:
        error.param = "tools"
        error.message = f"the tools' schemas do not make a grammar: {error.message}"
    return error


class _ChoiceStream:
    """One choice of a streamed response: its tool-call parser, the logprobs not yet
    sent, where its text stands (completions' offsets) and its token counts."""

    def __init__(self, tools: ToolPlan | None, offset: int) -> None:
        self.parser = tools.parser() if tools is not None else None
        self.logprobs: list[dict[str, Any]] = []
        self.offset = offset
        self.finished = False
        self.prompt_tokens: int | None = None
        self.generated = 0
        self.cached_tokens: int | None = None

    def counts(self, chunk: StreamChunk) -> None:
        self.prompt_tokens = chunk.num_input_tokens or self.prompt_tokens
        self.generated = chunk.num_output_tokens or self.generated
        self.cached_tokens = chunk.cached_tokens or self.cached_tokens

    def take(self) -> list[dict[str, Any]] | None:
        taken, self.logprobs = self.logprobs, []
        return taken or None

    def pieces(self, writer: ResponseWriter, text: str, index: int) -> list[bytes]:
        if self.parser is None:
            piece = writer.chunk(text, logprobs=self.take(), text_offset=self.offset, index=index)
            self.offset += len(text)
            return [piece]
        return [
            writer.chunk(delta=d.as_openai(), logprobs=self.take(), index=index)
            for d in self.parser.feed(text)
        ]

    def finish(self, writer: ResponseWriter, reason: str, index: int) -> list[bytes]:
        self.finished = True
        out = []
        if self.parser is not None:
            out = [writer.chunk(delta=d.as_openai(), logprobs=self.take(), index=index)
                   for d in self.parser.finish()]  # fmt: skip
        if writer.kind == "chat":
            reason = finish(reason, bool(self.parser is not None and self.parser.calls))
        out.append(writer.chunk(finish_reason=reason, logprobs=self.take(),
                                text_offset=self.offset, index=index))  # fmt: skip
        return out


# -- exception handlers: every error leaves in OpenAI's format --------------------------


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _log_detail(request_id: str, error: APIError) -> None:
    if error.detail is not None:
        log.error("request %s: %s %s: %s", request_id, error.status, error.code, error.detail)


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    _log_detail(_request_id(request), exc)
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers or None)


async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
    return await _api_error(request, from_client_error(exc, _request_id(request)))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error = APIError(exc.status_code, str(exc.detail), code=None)
    return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)
