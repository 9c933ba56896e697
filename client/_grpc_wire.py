"""What both twins send and read over gRPC, without I/O: channel settings, requests, replies.

``LLMClient`` drives these over a ``grpc`` channel and ``AsyncLLMClient`` over a
``grpc.aio`` one; both use Triton's generated ``GRPCInferenceService`` stub. A
generation is one ``ModelStreamInfer`` call that sends its one request and half-closes,
so the server ends the stream after the final response, and a stream that ends before
it is a broken stream on both twins (never a wait for the timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import serialize_byte_tensor

from ._base import EndCheck, chunk_from_arrays, request_arrays
from .errors import ServerStreamError, from_triton
from .results import StreamChunk

_MAX_MESSAGE = 2**31 - 1  # as tritonclient: prompts and outputs of any size
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
]


def credentials(
    root_certificates: str | None, private_key: str | None, certificate_chain: str | None
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files (None each: the system's CA bundle, no client cert).

    Raises:
        OSError: a file cannot be read.
    """

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        read(root_certificates), read(private_key), read(certificate_chain)
    )


def metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...] | None:
    """gRPC metadata from headers (its keys must be lower case)."""
    return tuple((k.lower(), v) for k, v in headers.items()) or None


def stream_request(model: str, values: Mapping[str, Any]) -> service_pb2.ModelInferRequest:
    """The one request of a generation's stream, asking for an empty final response
    (so the end of a request is always a response of its own)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, array in request_arrays(values):
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if datatype == "BYTES":
            request.raw_input_contents.append(serialize_byte_tensor(array).item())
        else:
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    return request


class StreamReader:
    """Turns a generation's ``ModelStreamInferResponse``s into ``StreamChunk``s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = False  # the request ended (final response or error): nothing to cancel
        self._check = EndCheck(url)

    def chunk(self, response: service_pb2.ModelStreamInferResponse) -> StreamChunk:
        """Decode one response.

        Raises:
            InvalidRequest / ModelNotFound: the response is the model's or server's error.
            ServerStreamError: the final response came without a finish reason where one
                was due (``EndCheck``).
        """
        if response.error_message:
            self.done = True  # an error ends the request
            raise from_triton(None, response.error_message, self.url)
        infer = response.infer_response
        result = InferResult(infer)
        params = infer.parameters
        self.done = "triton_final_response" in params and params["triton_final_response"].bool_param
        chunk = chunk_from_arrays(result.as_numpy, self.done)
        if infer.outputs:  # not the empty final response
            self._check.saw(any(o.name == "finish_reason" for o in infer.outputs))
        if self.done and self._check.is_cut(chunk.finish_reason):
            raise self._check.error()
        return chunk

    def end(self) -> None:
        """The server closed the stream.

        Raises:
            ServerStreamError: it did so before the final response.
        """
        if not self.done:
            raise ServerStreamError(f"the stream from {self.url} ended before its final response")


@dataclass(frozen=True)
class Call:
    """One unary call of the inference service and how to read its reply."""

    rpc: str  # the stub's method name
    request: Any
    decode: Callable[[Any], Any]


def _as_dict(reply: Any) -> dict[str, Any]:
    return json_format.MessageToDict(reply, preserving_proto_field_name=True)


def _none(_reply: Any) -> None:
    return None


def admin_call(op: str, *args: Any) -> Call:
    """The gRPC call of an admin operation (the names of the client's methods)."""
    s = service_pb2
    if op == "is_live":
        return Call("ServerLive", s.ServerLiveRequest(), lambda r: r.live)
    if op == "is_ready":
        return Call("ServerReady", s.ServerReadyRequest(), lambda r: r.ready)
    if op == "is_model_ready":
        ready = s.ModelReadyRequest(name=args[0], version=args[1])
        return Call("ModelReady", ready, lambda r: r.ready)
    if op == "models":
        return Call("RepositoryIndex", s.RepositoryIndexRequest(), _as_dict)
    if op == "model_metadata":
        name, version = args
        return Call("ModelMetadata", s.ModelMetadataRequest(name=name, version=version), _as_dict)
    if op == "model_config":
        name, version = args
        return Call("ModelConfig", s.ModelConfigRequest(name=name, version=version), _as_dict)
    if op == "load_model":
        name, config = args
        load = s.RepositoryModelLoadRequest(model_name=name)
        if config is not None:
            load.parameters["config"].string_param = config
        return Call("RepositoryModelLoad", load, _none)
    if op == "unload_model":
        name, unload_dependents = args
        unload = s.RepositoryModelUnloadRequest(model_name=name)
        unload.parameters["unload_dependents"].bool_param = unload_dependents
        return Call("RepositoryModelUnload", unload, _none)
    raise ValueError(f"unknown admin operation {op!r}")
