"""``AsyncLLMClient``: the asyncio twin of ``LLMClient`` (same methods, awaited; the same
code over ``grpc.aio`` and ``httpx.AsyncClient``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
import httpx
from tritonclient.grpc import service_pb2_grpc

from . import _grpc_wire, _http_wire
from ._base import (
    BaseLLMClient,
    chat_params,
    config_from_reply,
    model_infos,
    normalize_metadata,
)
from .chat import ChatTemplate
from .errors import from_grpc, from_http, from_httpx
from .results import GenerationResult, ModelInfo, ResultBuilder, StreamChunk


class AsyncLLMClient(BaseLLMClient):
    """Calls an LLM served by Triton from asyncio, over gRPC or HTTP.

        async with AsyncLLMClient("127.0.0.1:8001") as client:
            print((await client.generate("Hello", max_tokens=32)).text)
            async with contextlib.aclosing(client.stream("Once upon a time")) as pieces:
                async for piece in pieces:
                    print(piece, end="", flush=True)

    Same arguments, parameters and errors as ``LLMClient``. Connections open on first use
    and belong to that event loop: use one client per loop. Leaving a stream early
    cancels the request on the server (at once with ``aclosing``, else when the
    abandoned iterator is collected).
    """

    def _init_transport(self) -> None:
        self._channel: grpc.aio.Channel | None = None
        self._stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self._http: httpx.AsyncClient | None = None

    # -- generation --------------------------------------------------------------------

    async def generate(
        self, prompt: str, *, on_text: Callable[[str], None] | None = None, **params: Any
    ) -> GenerationResult:
        """Generate a completion and wait for all of it (see ``LLMClient.generate``).

        Raises:
            ConnectionFailed, Timeout, ModelNotFound, InvalidRequest (the server's message),
            ServerStreamError; TypeError for an unknown parameter.
        """
        events = self._events(self._request(prompt, on_text is not None, params))
        builder = ResultBuilder()
        async with contextlib.aclosing(events):
            async for chunk in events:
                builder.add(chunk)
                if on_text is not None and chunk.text:
                    on_text(chunk.text)
        return builder.result()

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        on_text: Callable[[str], None] | None = None,
        **params: Any,
    ) -> GenerationResult:
        """Answer ``messages`` (dicts with ``role`` and ``content``): the model's own chat
        template renders them into a prompt (``chat_template``), then as ``generate``;
        ``text`` is the answer alone.

        Raises:
            ChatTemplateError: the template refused the messages; as ``generate``.
        """
        prompt = (await self.chat_template()).render(messages)
        return await self.generate(prompt, on_text=on_text, **chat_params(params))

    async def chat_template(self, name: str | None = None) -> ChatTemplate:
        """The model's chat template, read once from its config on the server (the plain
        ``role: content`` template when the model has none).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout; UsageError for a malformed template.
        """
        name = name or self.model
        if name not in self._chat_templates:
            config = await self.model_config(name)
            self._chat_templates[name] = ChatTemplate.from_model_config(config, name)
        return self._chat_templates[name]

    def stream_events(self, prompt: str, **params: Any) -> AsyncGenerator[StreamChunk, None]:
        """Stream ``StreamChunk``s; the last has ``is_final``, the finish reason and counts.

        Raises:
            As ``generate``, while iterating (a bad parameter raises at the call).
        """
        return self._folded(self._events(self._request(prompt, True, params)))

    def stream(self, prompt: str, **params: Any) -> AsyncGenerator[str, None]:
        """Stream the completion's text pieces (never the prompt).

        Raises:
            As ``generate``, while iterating (a bad parameter raises at the call).
        """
        return self._texts(self.stream_events(prompt, **params))

    @staticmethod
    async def _folded(
        events: AsyncGenerator[StreamChunk, None],
    ) -> AsyncGenerator[StreamChunk, None]:
        builder = ResultBuilder()
        async with contextlib.aclosing(events):
            async for chunk in events:
                yield builder.add(chunk)

    @staticmethod
    async def _texts(events: AsyncGenerator[StreamChunk, None]) -> AsyncGenerator[str, None]:
        async with contextlib.aclosing(events):
            async for chunk in events:
                if chunk.text:
                    yield chunk.text

    def _events(self, values: dict[str, Any]) -> AsyncGenerator[StreamChunk, None]:
        if self.protocol == "grpc":
            return self._grpc_events(values)
        return self._http_events(values)

    async def _grpc_events(self, values: dict[str, Any]) -> AsyncGenerator[StreamChunk, None]:
        reader = _grpc_wire.StreamReader(self.url)
        request = _grpc_wire.stream_request(self.model, values)
        call = None
        try:
            call = self._grpc_stub().ModelStreamInfer(
                iter([request]), timeout=self.timeout, metadata=_grpc_wire.metadata(self._headers())
            )
            async for response in call:
                yield reader.chunk(response)
            reader.end()
        except grpc.RpcError as exc:
            raise from_grpc(exc, self.url) from exc
        finally:
            if call is not None and not reader.done:
                call.cancel()  # the server stops generating for a client that left

    async def _http_events(self, values: dict[str, Any]) -> AsyncGenerator[StreamChunk, None]:
        reader = _http_wire.StreamReader(
            self.url, bool(values["stream"]), self.timeout, int(values.get("n") or 1)
        )
        client = self._http_client()
        request = client.build_request(
            "POST", _http_wire.generate_path(self.model, reader.stream),
            json=values, headers=self._headers(),
        )  # fmt: skip
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, self.url) from exc
        # Closing the response unread drops the connection: Triton cancels the request.
        async with contextlib.aclosing(response):
            try:
                if response.status_code >= 400:
                    raise from_http(response.status_code, await response.aread(), self.url)
                if not reader.stream:
                    yield reader.body(await response.aread())
                    return
                async for line in response.aiter_lines():
                    chunk = reader.line(line)
                    if chunk is not None:
                        yield chunk
                last = reader.end()
                if last is not None:
                    yield last
            except httpx.HTTPError as exc:
                raise from_httpx(exc, self.url, reading=True) from exc

    # -- server and models -------------------------------------------------------------

    async def is_live(self) -> bool:
        """Whether the server answers at all.

        Raises:
            ConnectionFailed: nothing answers at the url. Timeout.
        """
        return bool(await self._admin("is_live"))

    async def is_ready(self) -> bool:
        """Whether the server is ready (every model it was asked to load is loaded).

        Raises:
            ConnectionFailed, Timeout.
        """
        return bool(await self._admin("is_ready"))

    async def is_model_ready(self, name: str | None = None, version: str = "") -> bool:
        """Whether model ``name`` (default: this client's model) can serve requests.

        Raises:
            ConnectionFailed, Timeout.
        """
        return bool(await self._admin("is_model_ready", name or self.model, version))

    async def models(self) -> list[ModelInfo]:
        """The server's model repository: every model, its version and state.

        Raises:
            ConnectionFailed, Timeout.
        """
        return model_infos(await self._admin("models"))

    async def model_metadata(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """Name, versions, platform, inputs and outputs of a model (default: this client's).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        meta = await self._admin("model_metadata", name or self.model, version)
        return normalize_metadata(dict(meta))

    async def model_config(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """A model's configuration as JSON (default: this client's model).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        reply = await self._admin("model_config", name or self.model, version)
        return config_from_reply(reply)

    async def load_model(
        self,
        name: str | None = None,
        *,
        config: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        admin_key: str | None = None,
    ) -> None:
        """Load (or reload) a model with an optional config override (see
        ``LLMClient.load_model``).

        Raises:
            InvalidRequest: the server refused (not in explicit mode, a restricted API
                without the key, the model failed to load). ConnectionFailed, Timeout.
        """
        args, call_headers = self._load_call(name, config, headers, admin_key)
        await self._admin("load_model", *args, headers=call_headers)

    async def unload_model(
        self,
        name: str | None = None,
        *,
        unload_dependents: bool = False,
        headers: Mapping[str, str] | None = None,
        admin_key: str | None = None,
    ) -> None:
        """Unload a model (see ``LLMClient.unload_model``).

        Raises:
            InvalidRequest: the server refused (a restricted API without the key).
            ConnectionFailed, Timeout.
        """
        args = (name or self.model, unload_dependents)
        await self._admin("unload_model", *args, headers=self._headers(headers, admin_key))

    async def _admin(self, op: str, *args: Any, headers: Mapping[str, str] | None = None) -> Any:
        headers = self._headers() if headers is None else headers
        if self.protocol == "grpc":
            call = _grpc_wire.admin_call(op, *args)
            rpc = getattr(self._grpc_stub(), call.rpc)
            try:
                reply = await rpc(
                    call.request, timeout=self.timeout, metadata=_grpc_wire.metadata(headers)
                )
            except grpc.RpcError as exc:
                raise from_grpc(exc, self.url) from exc
            return call.decode(reply)
        http = _http_wire.admin_call(op, *args)
        try:
            response = await self._http_client().request(
                http.method, http.path, json=http.body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise from_httpx(exc, self.url) from exc
        return http.decode(response.status_code, response.content, self.url)

    # -- transports (created inside the running loop) ----------------------------------

    def _grpc_stub(self) -> service_pb2_grpc.GRPCInferenceServiceStub:
        if self._stub is None:
            if self.ssl:
                creds = _grpc_wire.credentials(
                    self.root_certificates, self.private_key, self.certificate_chain
                )
                channel = grpc.aio.secure_channel(self.url, creds, _grpc_wire.CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(self.url, _grpc_wire.CHANNEL_OPTIONS)
            self._channel = channel
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return self._stub

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(**self._httpx_options())
        return self._http

    async def close(self) -> None:
        """Close the connections; the client can be used again afterwards (it reconnects)."""
        channel, http = self._channel, self._http
        self._channel = self._stub = self._http = None
        if channel is not None:
            await channel.close()
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
