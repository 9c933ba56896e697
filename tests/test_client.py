"""``LLMClient`` / ``AsyncLLMClient`` and the client CLI against a real tritonserver (toy LLM).

The twins pass the same behaviour tests: every test taking ``client`` runs four times,
(sync, async) x (grpc, http), the async twin driven through ``twins.AsyncTwin``.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from servers import misbehaving_repository, toy_server
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor
from twins import TWIN_IDS, TWINS, open_twin

from tritonkit import cli
from tritonkit.client import (
    APIRestricted,
    ConnectionFailed,
    InvalidRequest,
    LLMClient,
    ModelNotFound,
    ServerStreamError,
    Timeout,
)
from tritonkit.client._base import GenerationParams, request_arrays, request_values, sse_data
from tritonkit.client.errors import from_http, from_triton
from tritonkit.errors import TritonkitError, UsageError
from tritonkit.serve import TritonServer, free_ports

pytestmark = pytest.mark.slow

PROMPT = "the quick brown fox jumps"
EMPTY_PROMPT_ERROR = "text_input is empty: send a prompt with at least one word"
LONG_PROMPT = "w " * 5000  # 5000 pieces at 2 ms each: 10 s unless cancelled
CANCELLED = "toy llm: cancelled"


@pytest.fixture(scope="module")
def server() -> Iterator[TritonServer]:
    with toy_server() as s:
        yield s


@pytest.fixture(params=TWINS, ids=TWIN_IDS)
def twin(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, protocol): ("sync" | "async", "grpc" | "http")."""
    return request.param


def url_of(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@contextlib.contextmanager
def twin_of(twin: tuple[str, str], server: TritonServer | None = None, **kwargs: Any) -> Any:
    """The ``twin`` client of ``server`` (``url=`` in ``kwargs`` instead: that url)."""
    kind, protocol = twin
    url = kwargs.pop("url", None) or url_of(server, protocol)  # type: ignore[arg-type]
    with open_twin(kind, url, protocol, **kwargs) as client:
        yield client


@pytest.fixture
def client(server: TritonServer, twin: tuple[str, str]) -> Iterator[Any]:
    """An ``LLMClient``, or an ``AsyncLLMClient`` behind the same blocking interface."""
    with twin_of(twin, server) as c:
        yield c


def closed_url() -> str:
    return f"127.0.0.1:{free_ports(1)[0]}"


def wait_for_cancel(server: TritonServer, before: int, timeout: float = 5.0) -> None:
    """Wait until the toy model logged one more cancelled request than ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_cancelled(server) > before:
            return
        time.sleep(0.02)
    raise AssertionError("the server never saw the request cancelled")


def count_cancelled(server: TritonServer) -> int:
    return sum(CANCELLED in line for line in server.log.lines())


# -- pure request building and error mapping (no server) -------------------------------


def test_request_arrays_match_the_model_interface() -> None:
    params = GenerationParams(max_tokens=4, temperature=0.5, seed=7, stop="x")
    arrays = {n: (d, a) for n, d, a in request_arrays(request_values("hi", True, params))}
    assert arrays["text_input"][0] == "BYTES" and arrays["text_input"][1].shape == (1,)
    assert arrays["max_tokens"][1].dtype == np.int32
    assert arrays["temperature"][1].dtype == np.float32
    assert arrays["seed"][0] == "UINT64"
    assert arrays["stop_words"][1].tolist() == [b"x"]
    assert arrays["stream"][1].tolist() == [True]
    assert "top_k" not in arrays  # None leaves the model's default
    with pytest.raises(InvalidRequest, match="max_tokens must be int"):
        request_values("hi", False, GenerationParams(max_tokens="many"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown generation parameter"):
        GenerationParams.from_kwargs({"max_new_tokens": 3})


def test_error_mapping() -> None:
    refused = "failed to connect to all addresses; last error: Connection refused"
    assert isinstance(from_triton("StatusCode.UNAVAILABLE", refused, "h:1"), ConnectionFailed)
    # Triton's own refusals come as UNAVAILABLE too: the server answered, the request is wrong.
    polling = "explicit model load / unload is not allowed if polling is enabled"
    assert isinstance(from_triton("StatusCode.UNAVAILABLE", polling, "h:1"), InvalidRequest)
    assert isinstance(from_triton("StatusCode.DEADLINE_EXCEEDED", "late", "h:1"), Timeout)
    assert isinstance(from_triton(None, "Request for unknown model: 'x'", "h:1"), ModelNotFound)
    error = from_http(400, b'data: {"error":"bad prompt"}\n\n', "h:1")
    assert isinstance(error, InvalidRequest) and str(error) == "bad prompt"
    assert isinstance(from_http(503, b"<html>Bad gateway</html>", "h:1"), ConnectionFailed)
    restricted = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
    assert isinstance(from_triton("StatusCode.UNAVAILABLE", restricted, "h:1"), APIRestricted)
    body = b'{"error": "This API is restricted, expecting header \'admin-key\'"}'
    assert isinstance(from_http(403, body, "h:1"), APIRestricted)
    assert isinstance(from_http(503, b'{"error": "not allowed"}', "h:1"), InvalidRequest)
    stopping = b'{"error": "Server is stopping"}'
    assert isinstance(from_http(503, stopping, "h:1"), ConnectionFailed)
    assert isinstance(
        from_triton("StatusCode.UNAVAILABLE", "Server is stopping", "h:1"), ConnectionFailed
    )
    assert isinstance(error, TritonkitError)
    assert sse_data(b'data: {"text_output": "a"}\n') == {"text_output": "a"}
    assert sse_data(b"\n") is None


def test_url_forms() -> None:
    assert LLMClient().url == "127.0.0.1:8001"
    assert LLMClient(protocol="http").url == "127.0.0.1:8000"
    secure = LLMClient("https://example.com:443", protocol="http")
    assert secure.ssl and secure.url == "example.com:443"
    with pytest.raises(UsageError):
        LLMClient("127.0.0.1:8001", protocol="websocket")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        LLMClient("127.0.0.1:8001/v2")


# -- the twins: the same behaviour, sync and async, over gRPC and HTTP ------------------


def test_generate(client: Any) -> None:
    result = client.generate(PROMPT, max_tokens=3)
    assert result.text == PROMPT + " the quick brown"
    assert result.finish_reason == "length"
    assert (result.num_input_tokens, result.num_output_tokens) == (5, 3)
    assert result.latency_s > 0 and result.tokens_per_s
    assert client.generate(PROMPT, exclude_input_in_output=True).finish_reason == "stop"


def test_stream_joins_to_the_completion(client: Any) -> None:
    pieces = list(client.stream(PROMPT, max_tokens=4))
    assert len(pieces) == 4
    completion = client.generate(PROMPT, max_tokens=4, exclude_input_in_output=True).text
    assert "".join(pieces) == completion
    assert client.generate(PROMPT, max_tokens=4).text == PROMPT + completion


def test_stream_events_end_with_the_final_chunk(client: Any) -> None:
    events = list(client.stream_events(PROMPT, stop=["fox"]))
    assert [e.is_final for e in events] == [False, False, True]
    assert [e.finish_reason for e in events] == [None, None, "stop"]
    assert events[-1].num_output_tokens == 3 and events[-1].num_input_tokens == 5
    # Nothing to generate: one final chunk, without text.
    empty_end = list(client.stream_events("a b", max_tokens=0))
    assert [(e.text, e.is_final) for e in empty_end] == [("", True)]


def test_generate_with_on_text_streams(client: Any) -> None:
    pieces: list[str] = []
    result = client.generate(PROMPT, on_text=pieces.append, max_tokens=2)
    assert result.text == "".join(pieces) == " the quick"
    assert result.time_to_first_token_s is not None
    assert result.time_to_first_token_s <= result.latency_s


def test_empty_prompt_is_an_invalid_request(client: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        client.generate("   ")
    assert str(info.value) == EMPTY_PROMPT_ERROR
    with pytest.raises(InvalidRequest, match="text_input is empty"):
        list(client.stream(""))


def test_bad_parameters_are_invalid_requests(client: Any) -> None:
    # Refused by the client before anything is sent...
    with pytest.raises(InvalidRequest, match="max_tokens must be int"):
        client.generate(PROMPT, max_tokens="many")
    with pytest.raises(TypeError, match="unknown generation parameter"):
        client.stream(PROMPT, max_new_tokens=3)
    # Out of the input's range: refused alike on every twin, never wrapped by numpy.
    for name, value in (("max_tokens", 2**31), ("seed", -1), ("seed", 2**64)):
        with pytest.raises(InvalidRequest, match=rf"{name} must be in .*not {value}"):
            client.generate(PROMPT, **{name: value})
    assert client.generate(PROMPT, max_tokens=2, seed=2**64 - 1).text  # the edges pass
    # ... and by the model: its one-line message, verbatim, on every twin.
    with pytest.raises(InvalidRequest) as info:
        client.generate(PROMPT, sampling_parameters={"max_tokens": "many"})
    assert str(info.value) == "ValueError: invalid literal for int() with base 10: 'many'"
    with pytest.raises(InvalidRequest, match="invalid literal"):
        list(client.stream(PROMPT, sampling_parameters={"max_tokens": "many"}))


def test_unknown_model(server: TritonServer, twin: tuple[str, str]) -> None:
    with twin_of(twin, server, model="nope") as client:
        with pytest.raises(ModelNotFound, match="nope"):
            client.generate("hello")
        with pytest.raises(ModelNotFound):
            list(client.stream("hello"))
        with pytest.raises(ModelNotFound):
            client.model_metadata()
        with pytest.raises(ModelNotFound):
            client.model_config()
        assert client.is_model_ready() is False


def test_closed_port_is_a_connection_failure(twin: tuple[str, str]) -> None:
    with twin_of(twin, url=closed_url(), timeout=5) as client:
        for call in (
            lambda: client.generate("hello"),
            lambda: list(client.stream("hello")),
            client.is_live,
            client.models,
            lambda: client.load_model("llm"),
        ):
            with pytest.raises(ConnectionFailed, match="cannot reach Triton") as info:
                call()
            assert "\n" not in str(info.value)


def test_breaking_out_of_a_stream_cancels_it(client: Any, server: TritonServer) -> None:
    before = count_cancelled(server)
    pieces = client.stream(LONG_PROMPT, max_tokens=100_000)
    for i, _ in enumerate(pieces):
        if i == 2:
            break
    pieces.close()
    wait_for_cancel(server, before)
    start = time.monotonic()  # the one model instance is free again at once
    assert client.generate("still serving", exclude_input_in_output=True).text == " still serving"
    assert time.monotonic() - start < 2


def test_timeout_bounds_the_whole_stream_and_cancels(
    server: TritonServer, twin: tuple[str, str]
) -> None:
    before = count_cancelled(server)
    with twin_of(twin, server, timeout=0.3) as fast, pytest.raises(Timeout):
        list(fast.stream(LONG_PROMPT, max_tokens=100_000))
    wait_for_cancel(server, before)


def test_timeout_of_a_generate(server: TritonServer, twin: tuple[str, str]) -> None:
    before = count_cancelled(server)
    with twin_of(twin, server, timeout=0.3) as fast, pytest.raises(Timeout):
        fast.generate("w " * 400, max_tokens=100_000)  # 0.8 s of work
    if twin[1] == "grpc":
        wait_for_cancel(server, before)
    else:
        # Triton 2.51 does not cancel a non-streamed /generate whose client left:
        # the request runs to its end (generate_stream and gRPC do cancel).
        time.sleep(1.0)
        assert count_cancelled(server) == before


def test_model_config(client: Any) -> None:
    config = client.model_config()
    assert config["name"] == "llm"
    assert config["model_transaction_policy"]["decoupled"] is True
    assert client.model_config("llm", "1") == config
    with pytest.raises(ModelNotFound):
        client.model_config("nope")


def test_health_models_metadata(client: Any) -> None:
    assert client.is_live() and client.is_ready() and client.is_model_ready()
    assert [(m.name, m.version, m.state) for m in client.models()] == [("llm", "1", "READY")]
    meta = client.model_metadata()
    assert meta["name"] == "llm"
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs["text_input"] == ("BYTES", [1]) and inputs["stop_words"] == ("BYTES", [-1])
    assert meta["outputs"][0]["name"] == "text_output"


def test_load_needs_explicit_model_control(client: Any) -> None:
    # The module's server loads every model at start (no explicit mode): Triton refuses.
    with pytest.raises(InvalidRequest, match="explicit model load / unload is not allowed") as info:
        client.load_model("llm", config={"name": "llm"})
    assert "\n" not in str(info.value)
    assert client.is_model_ready()


def test_threads_share_one_client(server: TritonServer) -> None:
    with LLMClient(server.grpc_url) as client, ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda i: client.generate(f"n{i} x").text, range(8)))
    assert texts == [f"n{i} x n{i} x" for i in range(8)]


# -- streams that break the contract ---------------------------------------------------


@pytest.fixture(scope="module")
def misbehaving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real Triton serving the toy llm plus models that break their streams."""
    repository = misbehaving_repository(tmp_path_factory.mktemp("misbehaving") / "repository")
    with toy_server(repository) as s:
        yield s


def test_an_error_mid_stream_ends_it_with_the_models_message(
    misbehaving: TritonServer, twin: tuple[str, str]
) -> None:
    with twin_of(twin, misbehaving, model="fails_midway", timeout=10) as client:
        pieces: list[str] = []
        start = time.monotonic()
        with pytest.raises(InvalidRequest) as info:
            for piece in client.stream("a b"):
                pieces.append(piece)
        assert pieces == [" one"]  # what came before the error was delivered
        assert str(info.value) == "toy llm: out of memory after 1 piece"
        with pytest.raises(InvalidRequest, match="out of memory"):
            client.generate("a b", on_text=lambda _: None)
        assert time.monotonic() - start < 5  # an error ends the request: no wait


def test_a_model_that_never_finishes_times_out(
    misbehaving: TritonServer, twin: tuple[str, str]
) -> None:
    with twin_of(twin, misbehaving, model="stall", timeout=1.0) as client:
        start = time.monotonic()
        pieces: list[str] = []
        with pytest.raises(Timeout):
            for piece in client.stream("a b"):
                pieces.append(piece)
        assert pieces == [" one"]
        assert 0.9 < time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("model", "expected"), [("cancelled_midway", [" one"]), ("cancelled_at_once", [])]
)
def test_a_stream_the_server_cancelled_is_an_error_not_an_answer(
    misbehaving: TritonServer, twin: tuple[str, str], model: str, expected: list[str]
) -> None:
    # The model ends with an empty final response, as the entry model does for a request
    # the server cancelled: over HTTP the stream just closes. Neither twin may return the
    # pieces so far as a finished answer.
    with twin_of(twin, misbehaving, model=model, timeout=10) as client:
        pieces: list[str] = []
        with pytest.raises(ServerStreamError, match="ended without a finish reason") as info:
            for piece in client.stream("a b"):
                pieces.append(piece)
        assert pieces == expected
        assert "\n" not in str(info.value)
        with pytest.raises(ServerStreamError):  # streamed (a plain HTTP generate: Triton
            client.generate("a b", on_text=lambda _: None)  # refuses two responses itself)
    with twin_of(twin, misbehaving, timeout=10) as client:  # a well-behaved model still ends
        assert client.generate("a b").finish_reason == "stop"


class _EndsEarly(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A gRPC server (standing in for a proxy or a server going away) that answers a
    stream with one piece, then closes it with status OK: no final response."""

    def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        request = next(request_iterator)
        response = service_pb2.ModelStreamInferResponse()
        infer = response.infer_response
        infer.model_name = request.model_name
        infer.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        piece = np.array([b" one"], dtype=np.object_)
        infer.raw_output_contents.append(serialize_byte_tensor(piece).item())
        infer.parameters["triton_final_response"].bool_param = False
        yield response


class _BreaksOff(socketserver.BaseRequestHandler):
    """An HTTP server whose generate_stream sends one event, then drops the connection
    in the middle of its chunked body."""

    def handle(self) -> None:
        self.request.recv(65536)
        event = b'data: {"text_output": " one"}\n\n'
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(event), event)
        )


@contextlib.contextmanager
def ends_early(protocol: str) -> Iterator[str]:
    """The url of a server whose streams end before their final response."""
    if protocol == "grpc":
        server = grpc.server(ThreadPoolExecutor(2))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_EndsEarly(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.stop(0)
        return
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _BreaksOff) as http:
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{http.server_address[1]}"
        finally:
            http.shutdown()


def test_a_stream_that_ends_before_its_final_response_is_broken(twin: tuple[str, str]) -> None:
    with ends_early(twin[1]) as url, twin_of(twin, url=url, timeout=10) as client:
        start = time.monotonic()
        pieces: list[str] = []
        with pytest.raises(ServerStreamError, match=r"ended before its final|broke off") as info:
            for piece in client.stream("a b"):
                pieces.append(piece)
        assert pieces == [" one"]
        assert "\n" not in str(info.value)
        assert time.monotonic() - start < 5  # at once, never a wait for the timeout


# -- CLI -------------------------------------------------------------------------------


def test_cli_generate(server: TritonServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["generate", "a b c", "--url", server.grpc_url, "--max-tokens", "2"]) == 0
    out, err = capsys.readouterr()
    assert out == "a b c a b\n" and "tokens/s" in err and "finish: length" in err

    argv = ["generate", "a b c", "--url", server.http_url, "--protocol", "http", "--stream"]
    assert cli.run([*argv, "--stop", "c"]) == 0
    assert capsys.readouterr().out == " a b\n"

    assert cli.run(["generate", "a b", "--url", server.grpc_url, "--stream", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == " a b" and result["finish_reason"] == "stop"
    assert result["tokens_per_s"] > 0

    with pytest.raises(InvalidRequest, match="text_input is empty"):
        cli.run(["generate", " ", "--url", server.grpc_url])


def test_cli_health_and_models(server: TritonServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["health", "--url", server.grpc_url, "--model", "llm"]) == 0
    assert "live=yes ready=yes" in capsys.readouterr().out
    assert cli.run(["health", "--url", server.http_url, "--protocol", "http", "--model", "x"]) == 1
    assert "model x: ready=no" in capsys.readouterr().out
    with pytest.raises(ConnectionFailed):
        cli.run(["health", "--url", closed_url()])
    assert cli.run(["models", "--url", server.http_url, "--protocol", "http"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "STATE", "REASON"]
    assert lines[1].split() == ["llm", "1", "READY"]


def test_coded_errors_are_classified_by_their_code_never_by_request_text():
    from tritonkit.client.errors import from_http, from_triton
    from tritonkit.errors import EngineFailed, InvalidRequest, ModelNotFound, ServerBusy

    assert isinstance(from_triton(None, "server_busy: 256 requests are waiting", "h:1"), ServerBusy)
    engine = "[StatusCode.INTERNAL] engine_failed: the model cannot generate"
    assert isinstance(from_triton("StatusCode.INTERNAL", engine, "h:1"), EngineFailed)
    assert isinstance(from_http(500, '{"error": "engine_failed: gave up"}', "h:1"), EngineFailed)
    assert isinstance(from_http(500, '{"error": "server_busy: full"}', "h:1"), ServerBusy)
    # A request's own words quoted in an error never pick its class.
    echoed = "stop_words entry 'unknown model' is longer than 64 characters"
    assert isinstance(from_triton(None, echoed, "h:1"), InvalidRequest)
    assert isinstance(from_triton(None, "bad input: server_busy: no", "h:1"), InvalidRequest)
    assert isinstance(from_triton(None, "Request for unknown model: 'x'", "h:1"), ModelNotFound)
