"""``LLMClient``: the blocking client. ``AsyncLLMClient`` (``_async_client.py``) is its twin."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

import tritonclient.grpc as grpcclient
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
from .errors import ServerStreamError, Timeout, from_http, from_os_error, from_triton
from .results import GenerationResult, ModelInfo, ResultBuilder, StreamChunk

_NO_TIMEOUT_S = 24 * 3600.0  # tritonclient.http needs a number


class LLMClient(BaseLLMClient):
    """Calls an LLM served by Triton, over gRPC (streams) or HTTP (generate extension).

        with LLMClient("127.0.0.1:8001") as client:
            print(client.generate("Hello", max_tokens=32).text)
            for piece in client.stream("Once upon a time", max_tokens=64):
                print(piece, end="", flush=True)

    Generation parameters: max_tokens, min_tokens, temperature, top_k, top_p, seed,
    stop (list of stop words), repetition_penalty, exclude_input_in_output,
    sampling_parameters (a dict sent as JSON). An unknown name raises ``TypeError``.

    One client may be shared by threads; a generation that finds the client's gRPC
    stream busy opens its own connection for that request.
    """

    def _init_transport(self) -> None:
        self._grpc: grpcclient.InferenceServerClient | None = None
        self._http: Any = None  # tritonclient.http.InferenceServerClient, imported on first use
        self._lock = threading.Lock()  # guards lazy creation of the transports
        self._stream_lock = threading.Lock()  # tritonclient allows one stream per client

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
        inputs = []
        for name, datatype, array in request_arrays(values):
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        with self._stream_client() as client:
            done = False
            try:
                client.start_stream(
                    callback=lambda result, error: responses.put((result, error)),
                    stream_timeout=self.timeout,
                    headers=self._grpc_headers,
                )
                try:
                    client.async_stream_infer(self.model, inputs, enable_empty_final_response=True)
                except InferenceServerException:
                    # The stream failed before the request went out (server down): the
                    # cause reached the callback, the exception only says "not valid".
                    done = True
                    with contextlib.suppress(queue.Empty):
                        cause = responses.get(timeout=1.0)[1]
                        if cause is not None:
                            raise cause from None
                    raise
                while not done:
                    try:
                        result, error = responses.get(timeout=self.timeout)
                    except queue.Empty:
                        raise Timeout(f"no response from {self.url} in {self.timeout}s") from None
                    if error is not None:
                        done = True  # an error ends the request: nothing left to cancel
                        raise error
                    params = result.get_response().parameters
                    done = params["triton_final_response"].bool_param
                    yield chunk_from_arrays(result.as_numpy, done)
            except InferenceServerException as exc:
                raise from_triton(exc.status(), exc.message(), self.url) from exc
            finally:
                # Cancelling tells the server to stop generating for a client that left.
                client.stop_stream(cancel_requests=not done)

    @contextlib.contextmanager
    def _stream_client(self) -> Iterator[grpcclient.InferenceServerClient]:
        if self._stream_lock.acquire(blocking=False):
            try:
                yield self._grpc_client()
            finally:
                self._stream_lock.release()
        else:  # another thread, or an unfinished iterator, holds the shared stream
            extra = self._new_grpc_client()
            try:
                yield extra
            finally:
                extra.close()

    def _http_events(self, values: dict[str, Any]) -> Generator[StreamChunk, None, None]:
        stream = bool(values["stream"])
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        request = urllib.request.Request(
            self._generate_url(stream),
            data=json.dumps(values).encode(),
            headers={"Content-Type": "application/json", **self.headers},
            method="POST",
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),  # like tritonclient: straight to the server
            urllib.request.HTTPSHandler(context=self._ssl_context()),
        )
        try:
            response = opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise from_http(exc.code, exc.read(), self.url) from exc
        except OSError as exc:  # URLError, refused, TLS, timeout
            raise from_os_error(exc, self.url) from exc
        # Closing the response drops the connection, which cancels the request in Triton.
        with response:
            try:
                if not stream:
                    yield chunk_from_json(json.loads(response.read()), self.url, is_final=True)
                    return
                final = False
                for line in response:
                    # The socket timeout bounds each read; this bounds the whole stream.
                    if deadline is not None and time.monotonic() > deadline:
                        raise Timeout(f"the stream from {self.url} ran past {self.timeout}s")
                    obj = sse_data(line)
                    if obj is not None and not final:
                        chunk = chunk_from_json(obj, self.url)
                        final = chunk.is_final
                        yield chunk
                if not final:  # the model ended with an empty final response
                    yield StreamChunk(text="", is_final=True)
            except (http.client.HTTPException, ValueError) as exc:
                raise ServerStreamError(f"the response from {self.url} broke off: {exc}") from exc
            except OSError as exc:
                raise from_os_error(exc, self.url) from exc

    # -- server and models -------------------------------------------------------------

    def is_live(self) -> bool:
        """Whether the server answers at all.

        Raises:
            ConnectionFailed: nothing answers at the url. Timeout.
        """
        return bool(self._admin("is_server_live"))

    def is_ready(self) -> bool:
        """Whether the server is ready (every model it was asked to load is loaded).

        Raises:
            ConnectionFailed, Timeout.
        """
        return bool(self._admin("is_server_ready"))

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
        return model_infos(self._admin("get_model_repository_index", grpc_json=True))

    def model_metadata(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """Name, versions, platform, inputs and outputs of a model (default: this client's).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        meta = self._admin("get_model_metadata", name or self.model, version, grpc_json=True)
        return normalize_metadata(dict(meta))

    def model_config(self, name: str | None = None, version: str = "") -> dict[str, Any]:
        """A model's configuration as JSON (default: this client's model).

        Raises:
            ModelNotFound, ConnectionFailed, Timeout.
        """
        reply = self._admin("get_model_config", name or self.model, version, grpc_json=True)
        return config_from_reply(reply)

    def _admin(self, method: str, *args: Any, grpc_json: bool = False) -> Any:
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
            return getattr(client, method)(*args, **kwargs)
        except InferenceServerException as exc:
            raise from_triton(exc.status(), exc.message(), self.url) from exc
        except OSError as exc:
            raise from_os_error(exc, self.url) from exc

    # -- transports --------------------------------------------------------------------

    def _new_grpc_client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.url, **self._grpc_options())

    def _grpc_client(self) -> grpcclient.InferenceServerClient:
        with self._lock:
            if self._grpc is None:
                self._grpc = self._new_grpc_client()
            return self._grpc

    def _http_client(self) -> Any:
        import tritonclient.http as httpclient  # pulls in gevent: only when HTTP is used

        with self._lock:
            if self._http is None:
                timeout = self.timeout if self.timeout is not None else _NO_TIMEOUT_S
                options = {
                    "ca_certs": self.root_certificates,
                    "certfile": self.certificate_chain,
                    "keyfile": self.private_key,
                }
                self._http = httpclient.InferenceServerClient(
                    self.url,
                    connection_timeout=timeout,
                    network_timeout=timeout,
                    ssl=self.ssl,
                    ssl_options={k: v for k, v in options.items() if v} or None,
                    insecure=self.insecure,
                )
            return self._http

    def close(self) -> None:
        """Close the connections; the client can be used again afterwards (it reconnects)."""
        with self._lock:
            grpc, http_ = self._grpc, self._http
            self._grpc = self._http = None
        if grpc is not None:
            grpc.close()
        if http_ is not None:
            http_.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
