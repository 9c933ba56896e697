"""``AsyncLLMClient``: the asyncio twin of ``LLMClient`` (same methods, awaited)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from ._base import (
    BaseLLMClient,
    chat_params,
    chunk_from_arrays,
    chunk_from_json,
    config_from_reply,
    model_infos,
    normalize_metadata,
    request_arrays,
    sse_data,
)
from .chat import ChatTemplate
from .errors import ServerStreamError, from_http, from_os_error, from_triton
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
        self._grpc: grpcaio.InferenceServerClient | None = None
        self._http: Any = None  # tritonclient.http.aio.InferenceServerClient
        self._session: Any = None  # aiohttp.ClientSession for the generate extension

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
        inputs = []
        for name, datatype, array in request_arrays(values):
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        request = {
            "model_name": self.model,
            "inputs": inputs,
            "parameters": {"triton_enable_empty_final_response": True},
        }

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield request  # then half-close: the server ends the stream after the final response

        done = False
        responses = None
        try:
            responses = self._grpc_client().stream_infer(
                requests(), stream_timeout=self.timeout, headers=self._grpc_headers
            )
            async for result, error in responses:
                if error is not None:
                    done = True  # an error ends the request: nothing left to cancel
                    raise error
                done = result.get_response().parameters["triton_final_response"].bool_param
                yield chunk_from_arrays(result.as_numpy, done)
            if not done:
                raise ServerStreamError(
                    f"the stream from {self.url} ended before its final response"
                )
        except InferenceServerException as exc:
            raise from_triton(exc.status(), exc.message(), self.url) from exc
        except grpc.RpcError as exc:
            raise from_triton(exc.code(), exc.details() or str(exc), self.url) from exc
        finally:
            if not done and responses is not None:
                responses.cancel()  # the server stops generating for a client that left

    async def _http_events(self, values: dict[str, Any]) -> AsyncGenerator[StreamChunk, None]:
        import aiohttp

        stream = bool(values["stream"])
        try:
            response = await self._http_session().post(
                self._generate_url(stream),
                json=values,
                headers=self.headers or None,
                ssl=self._ssl_context() or True,
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise from_os_error(exc, self.url) from exc
        complete = False
        try:
            if response.status >= 400:
                raise from_http(response.status, await response.read(), self.url)
            if not stream:
                obj = json.loads(await response.read())
                complete = True
                yield chunk_from_json(obj, self.url, is_final=True)
                return
            final = False
            buffer = b""
            # Split lines ourselves: aiohttp's readline caps line length, an SSE event has none.
            async for data in response.content.iter_any():
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    obj = sse_data(line)
                    if obj is not None and not final:
                        chunk = chunk_from_json(obj, self.url)
                        final = chunk.is_final
                        yield chunk
            complete = True
            if not final:  # the model ended with an empty final response
                yield StreamChunk(text="", is_final=True)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ValueError) as exc:
            raise ServerStreamError(f"the response from {self.url} broke off: {exc}") from exc
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise from_os_error(exc, self.url) from exc
        finally:
            if complete:
                response.release()
            else:
                response.close()  # dropping the connection cancels the request in Triton

    # -- server and models -------------------------------------------------------------

    async def is_live(self) -> bool:
        """Whether the server answers at all.

        Raises:
            ConnectionFailed: nothing answers at the url. Timeout.
        """
        return bool(await self._admin("is_server_live"))

    async def is_ready(self) -> bool:
        """Whether the server is ready (every model it was asked to load is loaded).

        Raises:
            ConnectionFailed, Timeout.
        """
        return bool(await self._admin("is_server_ready"))

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
        return model_infos(await self._admin("get_model_repository_index", grpc_json=True))

    async def model_metadata(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """Name, versions, platform, inputs and outputs of a model (default: this client's).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        meta = await self._admin("get_model_metadata", name or self.model, version, grpc_json=True)
        return normalize_metadata(dict(meta))

    async def model_config(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """A model's configuration as JSON (default: this client's model).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        reply = await self._admin("get_model_config", name or self.model, version, grpc_json=True)
        return config_from_reply(reply)

    async def _admin(self, method: str, *args: Any, grpc_json: bool = False) -> Any:
        import aiohttp

        kwargs: dict[str, Any]
        if self.protocol == "grpc":
            client: Any = self._grpc_client()
            kwargs = {"headers": self._grpc_headers, "client_timeout": self.timeout}
            if grpc_json:
                kwargs["as_json"] = True
        else:
            client = self._http_client()
            kwargs = {"headers": self.headers or None}
        try:
            return await getattr(client, method)(*args, **kwargs)
        except InferenceServerException as exc:
            raise from_triton(exc.status(), exc.message(), self.url) from exc
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise from_os_error(exc, self.url) from exc

    # -- transports (created inside the running loop) ----------------------------------

    def _grpc_client(self) -> grpcaio.InferenceServerClient:
        if self._grpc is None:
            self._grpc = grpcaio.InferenceServerClient(self.url, **self._grpc_options())
        return self._grpc

    def _http_client(self) -> Any:
        import tritonclient.http.aio as httpaio

        if self._http is None:
            self._http = httpaio.InferenceServerClient(
                self.url,
                conn_timeout=self.timeout if self.timeout is not None else 24 * 3600.0,
                ssl=self.ssl,
                ssl_context=self._ssl_context(),
            )
        return self._http

    def _http_session(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        """Close the connections; the client can be used again afterwards (it reconnects)."""
        grpc_client, http_client, session = self._grpc, self._http, self._session
        self._grpc = self._http = self._session = None
        if grpc_client is not None:
            await grpc_client.close()
        if http_client is not None:
            await http_client.close()
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
