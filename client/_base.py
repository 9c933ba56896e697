"""What ``LLMClient`` and ``AsyncLLMClient`` share: settings, request building, decoding.

Both clients speak the vLLM / TensorRT-LLM style interface of the "llm" model: a
``text_input`` string plus optional sampling inputs in, ``text_output``, ``finish_reason``
and token counts out. Over gRPC every generation is a ``ModelStreamInfer`` stream (unary
``ModelInfer`` refuses decoupled models); over HTTP it is Triton's generate extension
(``/generate`` returns one JSON, ``/generate_stream`` sends server-sent events).
``_grpc_wire`` and ``_http_wire`` hold the rest of what the twins share, protocol by
protocol; the twins themselves only do the I/O (blocking, or awaited).
"""

from __future__ import annotations

import json
import ssl as ssl_lib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from tritonkit.core.interface import (  # the model's declared inputs
    ENTRY_INPUTS,
    SCALAR_INPUTS,
)
from tritonkit.errors import UsageError

from .chat import ChatTemplate
from .errors import InvalidRequest, ServerStreamError, from_triton
from .results import ModelInfo, StreamChunk

Protocol = Literal["grpc", "http"]

DEFAULT_URLS: dict[str, str] = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
DEFAULT_MODEL = "llm"
DEFAULT_TIMEOUT_S = 120.0  # one whole request, a stream included

# Where a hardened Triton (deploy/triton-entrypoint.sh) expects its admin key for the
# restricted model-repository API: gRPC metadata (Triton adds this prefix to the key's
# name) and the HTTP header.
GRPC_ADMIN_KEY_HEADER = "triton-grpc-protocol-admin-key"
HTTP_ADMIN_KEY_HEADER = "admin-key"


@dataclass(frozen=True)
class GenerationParams:
    """The keyword arguments of ``generate`` and ``stream``; None leaves the model's default."""

    max_tokens: int | None = None  # new tokens at most
    min_tokens: int | None = None  # new tokens before a stop word or EOS may end it
    temperature: float | None = None  # 0 or None: greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Sequence[str] | str | None = None  # stop words, sent as ``stop_words``
    repetition_penalty: float | None = None
    presence_penalty: float | None = None  # OpenAI's, in [-2, 2]
    frequency_penalty: float | None = None  # OpenAI's, in [-2, 2]
    min_p: float | None = None  # in [0, 1]
    logit_bias: Mapping[int | str, float] | None = None  # token id -> bias in [-100, 100]
    logprobs: int | None = None  # each token's logprob and this many alternatives (0-20)
    # At most one constraint on the output:
    guided_json: Mapping[str, Any] | str | None = None  # a JSON schema (object or its text)
    guided_regex: str | None = None
    guided_choice: Sequence[str] | None = None  # exactly one of these strings
    guided_grammar: str | None = None  # Lark (llguidance's dialect) or GBNF
    n: int | None = None  # choices from one prefill; the result's ``choices`` hold them
    exclude_input_in_output: bool = False  # non-streamed text without the prompt
    sampling_parameters: Mapping[str, Any] | None = None  # vLLM-style JSON, sent as is

    @classmethod
    def from_kwargs(cls, params: Mapping[str, Any]) -> GenerationParams:
        """Build from ``**params``.

        Raises:
            TypeError: an unknown parameter name (a typo in the caller's code).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"unknown generation parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)


def request_values(prompt: str, stream: bool, params: GenerationParams) -> dict[str, Any]:
    """The request's inputs as JSON-ready values, keyed by Triton input name.

    Raises:
        InvalidRequest: the prompt is not a string, or a parameter has the wrong type or
            does not fit the model's input type.
    """
    if not isinstance(prompt, str):
        raise InvalidRequest(f"the prompt must be a string, not {type(prompt).__name__}")
    values: dict[str, Any] = {
        "text_input": prompt,
        "stream": stream,
        "exclude_input_in_output": bool(params.exclude_input_in_output),
    }
    for name, (_, dtype, cast) in SCALAR_INPUTS.items():
        value = getattr(params, name)
        if value is None:
            continue
        try:
            values[name] = cast(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidRequest(f"{name} must be {cast.__name__}, not {value!r}") from exc
        if cast is int:  # numpy would wrap it silently: 2**31 as int32 is negative
            info: Any = np.iinfo(dtype)
            if not info.min <= values[name] <= info.max:
                raise InvalidRequest(
                    f"{name} must be in {info.min}..{info.max} ({np.dtype(dtype).name}), "
                    f"not {value!r}"
                )
    for t in _TEXT_INPUTS:  # stop_words, logit_bias, guided_*, sampling_parameters
        value = getattr(params, "stop" if t.name == "stop_words" else t.name)
        if value is None or (t.name == "stop_words" and not value):
            continue
        values[t.name] = _text_value(t.name, value, many=t.dims == (-1,))
    return values


# The BYTES inputs a client sets from its parameters (text_input aside).
_TEXT_INPUTS = tuple(
    t
    for t in ENTRY_INPUTS
    if t.datatype == "BYTES" and t.alias_of is None and t.name != "text_input"
)
_TEXT_DIMS = {t.name: t.dims for t in ENTRY_INPUTS if t.datatype == "BYTES"}


def _text_value(name: str, value: Any, many: bool) -> str | list[str]:
    """A BYTES input's value: a list of strings (dims [-1]) or one string, JSON for a
    mapping (``logit_bias``, a schema) or a list sent as one string.

    Raises:
        InvalidRequest: a value of the wrong type.
    """
    if many:
        items = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(v, str) for v in items):
            raise InvalidRequest(f"{name} must be a string or a list of strings, not {value!r}")
        return items
    if isinstance(value, str):
        return value
    try:
        return json.dumps(dict(value) if isinstance(value, Mapping) else value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{name} must be a string or JSON-serializable: {exc}") from exc


def request_arrays(values: Mapping[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """``(name, datatype, array)`` per input, shaped as the model declares them."""
    arrays: list[tuple[str, str, np.ndarray]] = []
    for name, value in values.items():
        if _TEXT_DIMS.get(name) == (1,):
            arrays.append((name, "BYTES", np.array([value.encode()], dtype=np.object_)))  # (1,)
        elif name in _TEXT_DIMS:
            words = [w.encode() for w in value]
            arrays.append((name, "BYTES", np.array(words, dtype=np.object_)))  # (n_words,)
        elif name in ("stream", "exclude_input_in_output"):
            arrays.append((name, "BOOL", np.array([value], dtype=np.bool_)))  # (1,)
        else:
            datatype, dtype, _ = SCALAR_INPUTS[name]
            arrays.append((name, datatype, np.array([value], dtype=dtype)))  # (1,)
    return arrays


def _scalar(array: np.ndarray | None) -> Any:
    if array is None or array.size == 0:
        return None
    value = array.reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value.item()


def chunk_from_arrays(get: Callable[[str], np.ndarray | None], is_final: bool) -> StreamChunk:
    """Decode one gRPC response (``get`` is ``InferResult.as_numpy``).

    Raises:
        ServerStreamError: ``token_logprobs`` that is not a JSON list.
    """
    counts = (_scalar(get("num_input_tokens")), _scalar(get("num_output_tokens")))
    cached = _scalar(get("cached_tokens"))
    index = _scalar(get("index"))
    return StreamChunk(
        text=_scalar(get("text_output")) or "",
        is_final=is_final,
        finish_reason=_scalar(get("finish_reason")) or None,
        num_input_tokens=None if counts[0] is None else int(counts[0]),
        num_output_tokens=None if counts[1] is None else int(counts[1]),
        cached_tokens=None if cached is None else int(cached),
        logprobs=_logprobs(_scalar(get("token_logprobs"))),
        index=0 if index is None else int(index),
    )


def _logprobs(text: Any) -> tuple[dict[str, Any], ...] | None:
    """The entries of a ``token_logprobs`` output (JSON text), or None when absent."""
    if text is None:
        return None
    try:
        entries = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise ServerStreamError(f"token_logprobs is not JSON: {exc.msg}") from exc
    if not isinstance(entries, list):
        raise ServerStreamError("token_logprobs is not a JSON list")
    return tuple(entries)


class EndCheck:
    """The end-of-stream rule both protocols share.

    The entry model sends ``finish_reason`` ("" until the last piece) on every response and
    ends a request the server cancelled with an empty final response. So a stream whose
    final response has no finish reason, from a model that sends the field, or with no
    piece at all, was cut short: by the server (shutdown, unload, timeout) or by something
    between. Over HTTP it just closes. Models without the field keep the plain rule: the
    final response ends the stream.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.declared = False  # a response carried the finish_reason field
        self.pieces = 0  # data responses seen

    def saw(self, has_finish_field: bool) -> None:
        """Count one data response."""
        self.pieces += 1
        self.declared = self.declared or has_finish_field

    def is_cut(self, finish_reason: str | None) -> bool:
        """Whether a stream ending now, with ``finish_reason`` last, was cut short."""
        return not finish_reason and (self.declared or self.pieces == 0)

    def error(self) -> ServerStreamError:
        """The error for a stream cut short."""
        return ServerStreamError(
            f"the stream from {self.url} ended without a finish reason: the server "
            "cancelled the request (shutdown, unload or timeout) or something between "
            "cut it; the text so far is incomplete"
        )


def chunk_from_json(obj: Mapping[str, Any], url: str, is_final: bool | None = None) -> StreamChunk:
    """Decode one HTTP generate response; ``is_final`` None: final when it has a finish reason.

    Raises:
        InvalidRequest / ModelNotFound: the object is Triton's ``{"error": ...}``.
    """
    if "error" in obj:
        raise from_triton(None, str(obj["error"]), url)
    finish = obj.get("finish_reason") or None
    n_in, n_out = obj.get("num_input_tokens"), obj.get("num_output_tokens")
    cached = obj.get("cached_tokens")
    return StreamChunk(
        text=str(obj.get("text_output") or ""),
        is_final=bool(finish) if is_final is None else is_final,
        finish_reason=finish,
        num_input_tokens=None if n_in is None else int(n_in),
        num_output_tokens=None if n_out is None else int(n_out),
        cached_tokens=None if cached is None else int(cached),
        logprobs=_logprobs(obj.get("token_logprobs")),
        index=int(obj.get("index") or 0),
    )


def sse_data(line: bytes | str) -> dict[str, Any] | None:
    """The JSON of one server-sent-event ``data:`` line; None for other lines.

    Raises:
        ServerStreamError: a ``data:`` line that is not JSON.
    """
    text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()
    if not text.startswith("data:"):
        return None
    try:
        obj = json.loads(text[5:])
    except ValueError as exc:
        raise ServerStreamError(f"unreadable server-sent event: {text[:200]}") from exc
    if not isinstance(obj, dict):
        raise ServerStreamError(f"unexpected server-sent event: {text[:200]}")
    return obj


def model_infos(index: Any) -> list[ModelInfo]:
    """The repository index of either protocol as ``ModelInfo`` entries."""
    entries = index.get("models", []) if isinstance(index, dict) else index
    return [
        ModelInfo(
            name=str(m.get("name", "")),
            version=str(m.get("version", "")),
            state=str(m.get("state", "")),
            reason=str(m.get("reason", "")),
        )
        for m in entries or []
    ]


def config_from_reply(reply: Any) -> dict[str, Any]:
    """The model config from either protocol's reply (gRPC wraps it in ``config``)."""
    data = dict(reply)
    return dict(data.get("config", data))


def normalize_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """gRPC's JSON writes int64 shapes as strings; make both protocols give ints."""
    for key in ("inputs", "outputs"):
        for tensor in meta.get(key, []):
            tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
    return meta


def config_json(config: Mapping[str, Any] | str | None) -> str | None:
    """A ``load_model`` config override as the JSON string Triton takes.

    Raises:
        InvalidRequest: a mapping that cannot be written as JSON.
    """
    if config is None or isinstance(config, str):
        return config
    try:
        return json.dumps(dict(config))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the config override is not JSON: {exc}") from exc


def chat_params(params: dict[str, Any]) -> dict[str, Any]:
    """A chat's generation parameters: the answer alone, never the rendered prompt."""
    return {"exclude_input_in_output": True, **params}


class BaseLLMClient:
    """Settings shared by the sync and async clients; no I/O here."""

    def __init__(
        self,
        url: str | None = None,  # HOST:PORT; default 127.0.0.1:8001 (grpc) or :8000 (http)
        *,
        protocol: Protocol = "grpc",
        model: str = DEFAULT_MODEL,
        timeout: float | None = DEFAULT_TIMEOUT_S,  # seconds per request; None waits forever
        headers: Mapping[str, str] | None = None,  # sent with every call (API keys)
        ssl: bool = False,  # TLS (https for HTTP); implied by an https:// or grpcs:// url
        root_certificates: str | None = None,  # CA bundle (PEM file)
        private_key: str | None = None,  # client key for mutual TLS (PEM file)
        certificate_chain: str | None = None,  # client certificate for mutual TLS (PEM file)
        insecure: bool = False,  # HTTP only: skip certificate verification
    ) -> None:
        """Check the settings; nothing connects until the first call.

        Raises:
            UsageError: an unknown protocol, or a url that is not HOST:PORT.
        """
        if protocol not in ("grpc", "http"):
            raise UsageError(f"protocol must be grpc or http, not {protocol!r}")
        url = url or DEFAULT_URLS[protocol]
        scheme, sep, rest = url.partition("://")
        if sep:
            if scheme not in ("http", "https", "grpc", "grpcs"):
                raise UsageError(f"unsupported url scheme {scheme!r} in {url}: use HOST:PORT")
            ssl = ssl or scheme in ("https", "grpcs")
            url = rest
        url = url.rstrip("/")
        if not url or "/" in url:
            raise UsageError(f"url must be HOST:PORT, not {url!r}")
        self.protocol: Protocol = protocol
        self.url = url
        self.model = model
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.ssl = ssl
        self.root_certificates = root_certificates
        self.private_key = private_key
        self.certificate_chain = certificate_chain
        self.insecure = insecure
        self._chat_templates: dict[str, ChatTemplate] = {}  # model -> its template, read once
        self._init_transport()

    def _init_transport(self) -> None:
        """Set up the subclass's (lazily connected) transports."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.url!r}, protocol={self.protocol!r}, model={self.model!r})"
        )

    def _headers(
        self, extra: Mapping[str, str] | None = None, admin_key: str | None = None
    ) -> dict[str, str]:
        """The client's headers, then ``extra``, then the admin key under this protocol's name."""
        headers = {**self.headers, **(extra or {})}
        if admin_key:
            name = GRPC_ADMIN_KEY_HEADER if self.protocol == "grpc" else HTTP_ADMIN_KEY_HEADER
            headers[name] = admin_key
        return headers

    def _load_call(
        self,
        name: str | None,
        config: Mapping[str, Any] | str | None,
        headers: Mapping[str, str] | None,
        admin_key: str | None,
    ) -> tuple[tuple[Any, ...], dict[str, str]]:
        """``load_model``'s operands and headers for ``_admin``."""
        return (name or self.model, config_json(config)), self._headers(headers, admin_key)

    def _ssl_context(self) -> ssl_lib.SSLContext | None:
        """The TLS context for HTTP, or None for plain HTTP."""
        if not self.ssl:
            return None
        context = ssl_lib.create_default_context(cafile=self.root_certificates)
        if self.certificate_chain:
            context.load_cert_chain(self.certificate_chain, self.private_key)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl_lib.CERT_NONE
        return context

    def _httpx_options(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client`` / ``httpx.AsyncClient``: straight to the
        server (no proxy from the environment), the client's timeout for each read, and no
        cap on concurrent connections (httpx's default of 100 would make the 101st stream
        of a shared client wait for a free one until it times out)."""
        import httpx

        return {
            "base_url": f"{'https' if self.ssl else 'http'}://{self.url}",
            "verify": self._ssl_context() or True,
            "timeout": self.timeout,
            "trust_env": False,
            "limits": httpx.Limits(max_connections=None, max_keepalive_connections=32),
        }

    def _request(self, prompt: str, stream: bool, params: Mapping[str, Any]) -> dict[str, Any]:
        return request_values(prompt, stream, GenerationParams.from_kwargs(params))
