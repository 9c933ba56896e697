"""``LLMClient``: the blocking client. ``AsyncLLMClient`` (``_async_client.py``) is its twin:
the same code over ``grpc`` / ``httpx.Client`` here and ``grpc.aio`` / ``httpx.AsyncClient``
there, with everything else in ``_base``, ``_grpc_wire`` and ``_http_wire``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import grpc
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


class LLMClient(BaseLLMClient):
    """Calls an LLM served by Triton, over gRPC (streams) or HTTP (generate extension).

        with LLMClient("127.0.0.1:8001") as client:
            print(client.generate("Hello", max_tokens=32).text)
            for piece in client.stream("Once upon a time", max_tokens=64):
                print(piece, end="", flush=True)

    Generation parameters: max_tokens, min_tokens, temperature, top_k, top_p, seed,
    stop (list of stop words), repetition_penalty, exclude_input_in_output,
    sampling_parameters (a dict sent as JSON). An unknown name raises ``TypeError``.

    One client may be shared by threads: its one gRPC channel (or HTTP connection pool)
    carries their requests side by side.
    """

    def _init_transport(self) -> None:
        self._channel: grpc.Channel | None = None
        self._stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()  # guards lazy creation of the transports

    # -- generation --------------------------------------------------------------------

    def generate(
        self, prompt: str, *, on_text: Callable[[str], None] | None = None, **params: Any
    ) -> GenerationResult:
        """Generate a completion and wait for all of it.

        Without ``on_text`` the model answers once, and ``text`` is the prompt plus the
        completion (just the completion with ``exclude_input_in_output=True``). With
        ``on_text`` the model streams: each piece is passed to ``on_text`` as it arrives,
        ``text`` is the completion alone, and ``time_to_first_token_s`` is the real one.

        Raises:
            ConnectionFailed, Timeout, ModelNotFound, InvalidRequest (the server's message),
            ServerStreamError; TypeError for an unknown parameter.
        """
        events = self._events(self._request(prompt, on_text is not None, params))
        builder = ResultBuilder()
        with contextlib.closing(events):
            for chunk in events:
                builder.add(chunk)
                if on_text is not None and chunk.text:
                    on_text(chunk.text)
        return builder.result()

    def chat(
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
        prompt = self.chat_template().render(messages)
        return self.generate(prompt, on_text=on_text, **chat_params(params))

    def chat_template(self, name: str | None = None) -> ChatTemplate:
        """The model's chat template, read once from its config on the server (the plain
        ``role: content`` template when the model has none).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout; UsageError for a malformed template.
        """
        name = name or self.model
        if name not in self._chat_templates:
            config = self.model_config(name)
            self._chat_templates[name] = ChatTemplate.from_model_config(config, name)
        return self._chat_templates[name]

    def stream_events(self, prompt: str, **params: Any) -> Generator[StreamChunk, None, None]:
        """Stream the completion as ``StreamChunk``s; the last has ``is_final``, the finish
        reason and the token counts. Closing the iterator early (``break``) cancels the
        request on the server.

        Raises:
            As ``generate``, while iterating (a bad parameter raises at the call).
        """
        events = self._events(self._request(prompt, True, params))
        return self._folded(events)

    def stream(self, prompt: str, **params: Any) -> Generator[str, None, None]:
        """Stream the completion's text pieces (never the prompt); ``break`` cancels it.

        Raises:
            As ``generate``, while iterating (a bad parameter raises at the call).
        """
        return self._texts(self.stream_events(prompt, **params))

    @staticmethod
    def _folded(events: Generator[StreamChunk, None, None]) -> Generator[StreamChunk, None, None]:
        builder = ResultBuilder()
        with contextlib.closing(events):
            for chunk in events:
                yield builder.add(chunk)

    @staticmethod
    def _texts(events: Generator[StreamChunk, None, None]) -> Generator[str, None, None]:
        with contextlib.closing(events):
            for chunk in events:
                if chunk.text:
                    yield chunk.text

    def _events(self, values: dict[str, Any]) -> Generator[StreamChunk, None, None]:
        if self.protocol == "grpc":
            return self._grpc_events(values)
        return self._http_events(values)

    def _grpc_events(self, values: dict[str, Any]) -> Generator[StreamChunk, None, None]:
        reader = _grpc_wire.StreamReader(self.url)
        request = _grpc_wire.stream_request(self.model, values)
        call = None
        try:
            call = self._grpc_stub().ModelStreamInfer(
                iter([request]), timeout=self.timeout, metadata=_grpc_wire.metadata(self._headers())
            )
            for response in call:
                yield reader.chunk(response)
            reader.end()
        except grpc.RpcError as exc:
            raise from_grpc(exc, self.url) from exc
        finally:
            if call is not None and not reader.done:
                call.cancel()  # the server stops generating for a client that left

    def _http_events(self, values: dict[str, Any]) -> Generator[StreamChunk, None, None]:
        reader = _http_wire.StreamReader(
            self.url, bool(values["stream"]), self.timeout, int(values.get("n") or 1)
        )
        client = self._http_client()
        request = client.build_request(
            "POST", _http_wire.generate_path(self.model, reader.stream),
            json=values, headers=self._headers(),
        )  # fmt: skip
        try:
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise from_httpx(exc, self.url) from exc
        # Closing the response unread drops the connection: Triton cancels the request.
        with contextlib.closing(response):
            try:
                if response.status_code >= 400:
                    raise from_http(response.status_code, response.read(), self.url)
                if not reader.stream:
                    yield reader.body(response.read())
                    return
                for line in response.iter_lines():
                    chunk = reader.line(line)
                    if chunk is not None:
                        yield chunk
                last = reader.end()
                if last is not None:
                    yield last
            except httpx.HTTPError as exc:
                raise from_httpx(exc, self.url, reading=True) from exc

    # -- server and models -------------------------------------------------------------

    def is_live(self) -> bool:
        """Whether the server answers at all.

        Raises:
            ConnectionFailed: nothing answers at the url. Timeout.
        """
        return bool(self._admin("is_live"))

    def is_ready(self) -> bool:
        """Whether the server is ready (every model it was asked to load is loaded).

        Raises:
            ConnectionFailed, Timeout.
        """
        return bool(self._admin("is_ready"))

    def is_model_ready(self, name: str | None = None, version: str = "") -> bool:
        """Whether model ``name`` (default: this client's model) can serve requests.

        Raises:
            ConnectionFailed, Timeout.
        """
        return bool(self._admin("is_model_ready", name or self.model, version))

    def models(self) -> list[ModelInfo]:
        """The server's model repository: every model, its version and state.

        Raises:
            ConnectionFailed, Timeout.
        """
        return model_infos(self._admin("models"))

    def model_metadata(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """Name, versions, platform, inputs and outputs of a model (default: this client's).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        meta = self._admin("model_metadata", name or self.model, version)
        return normalize_metadata(dict(meta))

    def model_config(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """A model's configuration as JSON (default: this client's model).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        reply = self._admin("model_config", name or self.model, version)
        return config_from_reply(reply)

    def load_model(
        self,
        name: str | None = None,
        *,
        config: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        admin_key: str | None = None,
    ) -> None:
        """Load (or reload) model ``name`` (default: this client's) on a server in explicit
        model-control mode; ``config`` overrides its config.pbtxt (a dict or JSON), e.g.
        ``{"version_policy": {"specific": {"versions": [2]}}}`` to serve version 2.
        ``headers`` go with this call; ``admin_key`` is sent as a hardened server expects
        it (gRPC metadata ``triton-grpc-protocol-admin-key``, HTTP header ``admin-key``).

        Raises:
            InvalidRequest: the server refused (not in explicit mode, a restricted API
                without the key, the model failed to load). ConnectionFailed, Timeout.
        """
        args, call_headers = self._load_call(name, config, headers, admin_key)
        self._admin("load_model", *args, headers=call_headers)

    def unload_model(
        self,
        name: str | None = None,
        *,
        unload_dependents: bool = False,
        headers: Mapping[str, str] | None = None,
        admin_key: str | None = None,
    ) -> None:
        """Unload model ``name`` (default: this client's); ``headers`` and ``admin_key`` as
        for ``load_model``.

        Raises:
            InvalidRequest: the server refused (a restricted API without the key).
            ConnectionFailed, Timeout.
        """
        args = (name or self.model, unload_dependents)
        self._admin("unload_model", *args, headers=self._headers(headers, admin_key))

    def _admin(self, op: str, *args: Any, headers: Mapping[str, str] | None = None) -> Any:
        headers = self._headers() if headers is None else headers
        if self.protocol == "grpc":
            call = _grpc_wire.admin_call(op, *args)
            rpc = getattr(self._grpc_stub(), call.rpc)
            try:
                reply = rpc(
                    call.request, timeout=self.timeout, metadata=_grpc_wire.metadata(headers)
                )
            except grpc.RpcError as exc:
                raise from_grpc(exc, self.url) from exc
            return call.decode(reply)
        http = _http_wire.admin_call(op, *args)
        try:
            response = self._http_client().request(
                http.method, http.path, json=http.body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise from_httpx(exc, self.url) from exc
        return http.decode(response.status_code, response.content, self.url)

    # -- transports --------------------------------------------------------------------

    def _grpc_stub(self) -> service_pb2_grpc.GRPCInferenceServiceStub:
        with self._lock:
            if self._stub is None:
                if self.ssl:
                    creds = _grpc_wire.credentials(
                        self.root_certificates, self.private_key, self.certificate_chain
                    )
                    channel = grpc.secure_channel(self.url, creds, _grpc_wire.CHANNEL_OPTIONS)
                else:
                    channel = grpc.insecure_channel(self.url, _grpc_wire.CHANNEL_OPTIONS)
                self._channel = channel
                self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            return self._stub

    def _http_client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(**self._httpx_options())
            return self._http

    def close(self) -> None:
        """Close the connections; the client can be used again afterwards (it reconnects)."""
        with self._lock:
            channel, http = self._channel, self._http
            self._channel = self._stub = self._http = None
        if channel is not None:
            channel.close()
        if http is not None:
            http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
