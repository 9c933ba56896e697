"""``LLMClient`` / ``AsyncLLMClient`` and the client CLI against a real tritonserver (toy LLM)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from servers import toy_server

from tritonkit import cli
from tritonkit.client import (
    AsyncLLMClient,
    ConnectionFailed,
    InvalidRequest,
    LLMClient,
    ModelNotFound,
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


@pytest.fixture(params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def url_of(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture
def client(server: TritonServer, protocol: str) -> Iterator[LLMClient]:
    with LLMClient(url_of(server, protocol), protocol=protocol) as c:  # type: ignore[arg-type]
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
    assert isinstance(from_triton("StatusCode.UNAVAILABLE", "down", "h:1"), ConnectionFailed)
    assert isinstance(from_triton("StatusCode.DEADLINE_EXCEEDED", "late", "h:1"), Timeout)
    assert isinstance(from_triton(None, "Request for unknown model: 'x'", "h:1"), ModelNotFound)
    error = from_http(400, b'data: {"error":"bad prompt"}\n\n', "h:1")
    assert isinstance(error, InvalidRequest) and str(error) == "bad prompt"
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


# -- LLMClient -------------------------------------------------------------------------


def test_generate(client: LLMClient) -> None:
    result = client.generate(PROMPT, max_tokens=3)
    assert result.text == PROMPT + " the quick brown"
    assert result.finish_reason == "length"
    assert (result.num_input_tokens, result.num_output_tokens) == (5, 3)
    assert result.latency_s > 0 and result.tokens_per_s
    assert client.generate(PROMPT, exclude_input_in_output=True).finish_reason == "stop"


def test_stream_joins_to_the_completion(client: LLMClient) -> None:
    pieces = list(client.stream(PROMPT, max_tokens=4))
    assert len(pieces) == 4
    completion = client.generate(PROMPT, max_tokens=4, exclude_input_in_output=True).text
    assert "".join(pieces) == completion
    assert client.generate(PROMPT, max_tokens=4).text == PROMPT + completion


def test_stream_events_end_with_the_final_chunk(client: LLMClient) -> None:
    events = list(client.stream_events(PROMPT, stop=["fox"]))
    assert [e.is_final for e in events] == [False, False, True]
    assert [e.finish_reason for e in events] == [None, None, "stop"]
    assert events[-1].num_output_tokens == 3 and events[-1].num_input_tokens == 5


def test_generate_with_on_text_streams(client: LLMClient) -> None:
    pieces: list[str] = []
    result = client.generate(PROMPT, on_text=pieces.append, max_tokens=2)
    assert result.text == "".join(pieces) == " the quick"
    assert result.time_to_first_token_s is not None
    assert result.time_to_first_token_s <= result.latency_s


def test_empty_prompt_is_an_invalid_request(client: LLMClient) -> None:
    with pytest.raises(InvalidRequest) as info:
        client.generate("   ")
    assert str(info.value) == EMPTY_PROMPT_ERROR
    with pytest.raises(InvalidRequest, match="text_input is empty"):
        list(client.stream(""))


def test_unknown_model(server: TritonServer, protocol: Any) -> None:
    with LLMClient(url_of(server, protocol), protocol=protocol, model="nope") as client:
        with pytest.raises(ModelNotFound, match="nope"):
            client.generate("hello")
        with pytest.raises(ModelNotFound):
            list(client.stream("hello"))
        with pytest.raises(ModelNotFound):
            client.model_metadata()
        assert client.is_model_ready() is False


def test_closed_port_is_a_connection_failure(protocol: Any) -> None:
    with LLMClient(closed_url(), protocol=protocol, timeout=5) as client:
        with pytest.raises(ConnectionFailed, match="cannot reach Triton"):
            client.generate("hello")
        with pytest.raises(ConnectionFailed):
            list(client.stream("hello"))
        with pytest.raises(ConnectionFailed):
            client.is_live()


def test_breaking_out_of_a_stream_cancels_it(client: LLMClient, server: TritonServer) -> None:
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
    client: LLMClient, server: TritonServer
) -> None:
    before = count_cancelled(server)
    fast = LLMClient(client.url, protocol=client.protocol, timeout=0.3)
    with fast, pytest.raises(Timeout):
        list(fast.stream(LONG_PROMPT, max_tokens=100_000))
    wait_for_cancel(server, before)


def test_timeout_of_a_generate(client: LLMClient, server: TritonServer) -> None:
    before = count_cancelled(server)
    fast = LLMClient(client.url, protocol=client.protocol, timeout=0.3)
    with fast, pytest.raises(Timeout):
        fast.generate("w " * 400, max_tokens=100_000)  # 0.8 s of work
    if client.protocol == "grpc":
        wait_for_cancel(server, before)
    else:
        # Triton 2.51 does not cancel a non-streamed /generate whose client left:
        # the request runs to its end (generate_stream and gRPC do cancel).
        time.sleep(1.0)
        assert count_cancelled(server) == before


def test_model_config(client: LLMClient, server: TritonServer, protocol: str) -> None:
    config = client.model_config()
    assert config["name"] == "llm"
    assert config["model_transaction_policy"]["decoupled"] is True
    with pytest.raises(ModelNotFound):
        client.model_config("nope")

    async def run() -> dict:
        async with AsyncLLMClient(url_of(server, protocol), protocol=protocol) as c:  # type: ignore[arg-type]
            return await c.model_config()

    assert asyncio.run(run()) == config


def test_health_models_metadata(client: LLMClient) -> None:
    assert client.is_live() and client.is_ready() and client.is_model_ready()
    assert [(m.name, m.version, m.state) for m in client.models()] == [("llm", "1", "READY")]
    meta = client.model_metadata()
    assert meta["name"] == "llm"
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs["text_input"] == ("BYTES", [1]) and inputs["stop_words"] == ("BYTES", [-1])


def test_threads_share_one_client(server: TritonServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with LLMClient(server.grpc_url) as client, ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda i: client.generate(f"n{i} x").text, range(8)))
    assert texts == [f"n{i} x n{i} x" for i in range(8)]


# -- AsyncLLMClient --------------------------------------------------------------------


def test_async_client(server: TritonServer, protocol: Any) -> None:
    async def main() -> None:
        async with AsyncLLMClient(url_of(server, protocol), protocol=protocol) as client:
            result = await client.generate(PROMPT, max_tokens=3)
            assert result.text == PROMPT + " the quick brown"
            assert result.finish_reason == "length" and result.num_output_tokens == 3
            pieces = [p async for p in client.stream(PROMPT, max_tokens=4)]
            completion = await client.generate(PROMPT, max_tokens=4, exclude_input_in_output=True)
            assert "".join(pieces) == completion.text
            events = [e async for e in client.stream_events(PROMPT, stop=["fox"])]
            assert events[-1].is_final and events[-1].finish_reason == "stop"
            with pytest.raises(InvalidRequest) as info:
                await client.generate("")
            assert str(info.value) == EMPTY_PROMPT_ERROR
            assert await client.is_live() and await client.is_ready()
            assert (await client.models())[0].state == "READY"
            assert (await client.model_metadata())["outputs"][0]["name"] == "text_output"
            with pytest.raises(ModelNotFound):
                await client.model_metadata("nope")

    asyncio.run(main())


def test_async_errors_and_cancel(server: TritonServer, protocol: Any) -> None:
    async def main() -> None:
        async with AsyncLLMClient(closed_url(), protocol=protocol, timeout=5) as down:
            with pytest.raises(ConnectionFailed):
                await down.generate("hello")
            with pytest.raises(ConnectionFailed):
                await down.is_ready()
        url = url_of(server, protocol)
        async with AsyncLLMClient(url, protocol=protocol, model="nope") as client:
            with pytest.raises(ModelNotFound):
                await client.generate("hello")
        async with AsyncLLMClient(url, protocol=protocol) as client:
            before = count_cancelled(server)
            stream = client.stream(LONG_PROMPT, max_tokens=100_000)
            async with contextlib.aclosing(stream):
                async for _ in stream:
                    break
            await asyncio.to_thread(wait_for_cancel, server, before)
            assert (await client.generate("still here")).text == "still here still here"

    asyncio.run(main())


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
