"""The gateway's input hardening, against a real Triton, with hostile and malformed requests.

Every test drives the real gateway (uvicorn on a loopback port) in front of a real
Triton: the session's tiny-llama (``served``), a toy Triton with a model whose errors
hold internals, and a toy Triton whose admin APIs are restricted to a key the gateway
does not have. After each hostile request a normal one must still be answered.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import TOY_REPOSITORY, toy_server, wait_until

from tritonkit import cli
from tritonkit.gateway import GatewayConfig, GatewayServer

pytestmark = pytest.mark.slow

KEY = "hard-key-7d1e"
OTHER_KEY = "hard-key-other-22ab"
METRICS_KEY = "metrics-key-90c3"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = [{"role": "user", "content": "Hello there"}]
LONG = 2000  # tokens: seconds of generation, so a stream holds its slot

# A chat template a message can steer: ``repeat`` writes the message that many times,
# ``spin`` runs an empty loop spin * spin times first (what a hostile message would try).
HOSTILE_TEMPLATE = (
    "{% for m in messages %}"
    "{% for i in range(m.spin | default(0)) %}{% for j in range(m.spin) %}{% endfor %}{% endfor %}"
    "{% for i in range(m.repeat | default(1)) %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

# A decoupled entry model that fails the way a broken engine does; its message holds
# internals (paths, device) the public port must not show.
FAULTY_SECRET = "prefill failed: CUDA error 2 (out of memory) in /opt/secret/decoder.onnx on gpu0"
FAULTY_MODEL = f"""
import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def piece(text):
    return pb_utils.InferenceResponse(output_tensors=[
        pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_)),
        pb_utils.Tensor("finish_reason", np.array([b""], dtype=np.object_)),
        pb_utils.Tensor("num_input_tokens", np.array([1], dtype=np.uint32)),
        pb_utils.Tensor("num_output_tokens", np.array([1], dtype=np.uint32)),
    ])


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            tensor = pb_utils.get_input_tensor_by_name(request, "text_input")
            prompt = tensor.as_numpy().reshape(-1)[0].decode()
            if "later" in prompt:  # one piece first: a stream has sent its 200 by then
                sender.send(piece(" first"))
            error = pb_utils.TritonError({FAULTY_SECRET!r})
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
        return None
"""


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    message = body["error"]["message"]
    assert "\n" not in message and "Traceback" not in message, message  # one line
    return dict(body["error"])


def post(url: str, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"Content-Type": "application/json", **AUTH, **(headers or {})}
    return httpx.post(url, content=content, headers=headers, timeout=kw.pop("timeout", 60), **kw)


def still_serves(url: str, key: str = KEY) -> None:
    """A normal chat and a normal completion through the gateway at ``url`` succeed."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    got = client.chat.completions.create(model="llm", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
    assert got.choices[0].finish_reason in ("stop", "length")
    done = client.completions.create(model="llm", prompt="The quick brown fox", max_tokens=3)
    assert done.usage is not None and done.usage.completion_tokens == 3


@pytest.fixture(scope="module")
def hostile_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-tokenizer")
    (folder / "chat_template.jinja").write_text(HOSTILE_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def gateway(served: Any, hostile_tokenizer: Path) -> Iterator[GatewayServer]:
    """Default limits; ``llm`` with tiny-llama's template, ``hostile`` with the one above."""
    config = GatewayConfig(
        triton_url=served.grpc_url,
        api_keys=(KEY, OTHER_KEY),
        model_map={"llm": "llm", "hostile": "llm"},
        tokenizers={"llm": served.sources["llm"], "hostile": hostile_tokenizer},
    )
    with GatewayServer(config) as gw:
        yield gw


# -- 1. bounded input ----------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_it_is_read(gateway: GatewayServer) -> None:
    url = f"{gateway.url}/v1/completions"
    prompt = "word " * (10 * 1024 * 1024)  # 50 MiB: it used to be forwarded to Triton
    reply = post(url, {"model": "llm", "prompt": prompt, "max_tokens": 1})
    assert reply.status_code == 413, reply.text[:300]
    error = error_of(reply)
    assert error["code"] == "request_too_large" and "1048576 bytes" in error["message"]
    assert reply.headers["x-request-id"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "llm", "prompt": "'
        for _ in range(64):
            yield b"x" * 32768
        yield b'"}'

    chunked = httpx.post(url, content=chunks(), headers=AUTH, timeout=60)
    assert chunked.status_code == 413 and error_of(chunked)["code"] == "request_too_large"
    still_serves(gateway.url)


def test_prompt_over_the_character_limit_is_400_before_rendering(gateway: GatewayServer) -> None:
    # 300 000 characters fit the 1 MiB body but not the 262 144 characters of a prompt.
    reply = post(f"{gateway.url}/v1/completions", {"model": "llm", "prompt": "a " * 150_000})
    assert reply.status_code == 400
    error = error_of(reply)
    assert (error["param"], error["code"]) == ("prompt", "prompt_too_long")
    assert "300000 characters" in error["message"] and "262144" in error["message"]
    # Chat: all messages together, rejected before the (hostile) template could run.
    messages = [{"role": "user", "content": "b" * 140_000, "repeat": 100_000}] * 2
    reply = post(f"{gateway.url}/v1/chat/completions", {"model": "hostile", "messages": messages})
    assert reply.status_code == 400 and error_of(reply)["param"] == "messages"
    assert error_of(reply)["code"] == "prompt_too_long"
    still_serves(gateway.url)


def _half_open(gw: GatewayServer, n: int) -> list[socket.socket]:
    """``n`` connections that each send half a request header and stop (no key needed)."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection((gw.host, gw.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        socks.append(sock)
    return socks


def _closed_with(sock: socket.socket, timeout_s: float) -> bytes:
    """What the server wrote before closing ``sock`` (b"" if it wrote nothing)."""
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_half_open_connections_do_not_deny_keyed_clients(served: Any) -> None:
    """Hundreds of half-open sockets, more than the request limit: a keyed request is still
    served at once, and each socket is cut at the header deadline with 408."""
    config = GatewayConfig(
        triton_url=served.grpc_url,
        api_keys=(KEY,),
        model_map={"llm": "llm"},
        tokenizers={"llm": served.sources["llm"]},
        header_timeout_s=3.0,
    )
    assert config.limit_concurrency < 300
    with GatewayServer(config) as gw:
        held = _half_open(gw, 300)
        try:
            time.sleep(0.5)  # the gateway has taken them all
            started = time.monotonic()
            still_serves(gw.url)
            assert time.monotonic() - started < 2.5  # served, not left to wait out the 3 s
            first = _closed_with(held[0], timeout_s=10)
            assert first.startswith(b"HTTP/1.1 408") and b"header took too long" in first
        finally:
            for sock in held:
                sock.close()
        still_serves(gw.url)


def test_a_trickled_header_is_cut_at_its_deadline(served: Any) -> None:
    """Slowloris: a byte every 0.2 s never completes a header and never resets the clock."""
    config = GatewayConfig(triton_url=served.grpc_url, header_timeout_s=1.5)
    with GatewayServer(config) as gw:
        sock = socket.create_connection((gw.host, gw.port))
        sock.settimeout(0.05)
        started, closed_at = time.monotonic(), None
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
        try:
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                    if sock.recv(4096) == b"":
                        closed_at = time.monotonic()
                        break
                except TimeoutError:
                    pass
                except OSError:  # reset after the 408
                    closed_at = time.monotonic()
                    break
                time.sleep(0.2)
        finally:
            sock.close()
        assert closed_at is not None and 1.4 < closed_at - started < 4.0
        assert httpx.get(f"{gw.url}/health").status_code == 200


def test_a_stalled_body_gets_408(served: Any) -> None:
    config = GatewayConfig(triton_url=served.grpc_url, body_timeout_s=1.0)
    with GatewayServer(config) as gw:
        sock = socket.create_connection((gw.host, gw.port))
        try:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b'\r\nContent-Length: 100\r\n\r\n{"model": '
            )
            started = time.monotonic()
            answer = _closed_with(sock, timeout_s=10)
            assert answer.startswith(b"HTTP/1.1 408") and b"body took too long" in answer
            assert 0.9 < time.monotonic() - started < 5
        finally:
            sock.close()
        assert httpx.get(f"{gw.url}/health").status_code == 200


def test_the_connection_cap_refuses_only_the_next_socket(served: Any) -> None:
    config = GatewayConfig(triton_url=served.grpc_url, max_connections=5)
    with GatewayServer(config) as gw:
        idle = [socket.create_connection((gw.host, gw.port)) for _ in range(5)]
        try:
            time.sleep(0.3)
            extra = socket.create_connection((gw.host, gw.port))
            answer = _closed_with(extra, timeout_s=5)
            extra.close()
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: httpx.get(f"{gw.url}/health").status_code == 200, what="a free slot")


def test_requests_in_flight_beyond_the_limit_get_503_with_retry_after(served: Any) -> None:
    """The request limit counts keyed requests being answered, never idle connections,
    requests without a valid key, or the probes: one keyed request whose body is still
    coming holds the one slot."""
    config = GatewayConfig(
        triton_url=served.grpc_url, limit_concurrency=1, max_concurrent=0, api_keys=(KEY,)
    )
    with GatewayServer(config) as gw:
        models = f"{gw.url}/v1/models"
        idle = [socket.create_connection((gw.host, gw.port)) for _ in range(20)]
        slow = socket.create_connection((gw.host, gw.port))
        unkeyed = socket.create_connection((gw.host, gw.port))
        try:
            assert httpx.get(models, headers=AUTH).status_code == 200  # idle ones hold nothing
            unkeyed.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            time.sleep(0.3)
            assert httpx.get(models, headers=AUTH).status_code == 200  # no key: no slot
            slow.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 100"
                b"\r\n\r\n{"
            )
            time.sleep(0.3)
            reply = httpx.get(models, headers=AUTH)
            assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
            assert httpx.get(f"{gw.url}/health").status_code == 200  # probes never wait
        finally:
            for sock in [*idle, slow, unkeyed]:
                sock.close()
        wait_until(lambda: httpx.get(models, headers=AUTH).status_code == 200, what="a slot")


def test_per_key_concurrency_limit_is_429_for_that_key_only(served: Any) -> None:
    config = GatewayConfig(
        triton_url=served.grpc_url,
        api_keys=(KEY, OTHER_KEY),
        max_concurrent_per_key=1,
        model_map={"llm": "llm"},
        tokenizers={"llm": served.sources["llm"]},
    )
    with GatewayServer(config) as gw:
        body = {"model": "llm", "prompt": "hold", "max_tokens": LONG, "stream": True}
        with httpx.stream("POST", f"{gw.url}/v1/completions", json=body, headers=AUTH) as held:
            lines = held.iter_lines()
            assert next(lines).startswith("data: ")  # KEY's one slot is taken
            mine = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
            with pytest.raises(openai.RateLimitError) as info:
                mine.completions.create(model="llm", prompt="one more", max_tokens=2)
            assert info.value.code == "rate_limit_exceeded"
            assert "this API key already has 1 concurrent requests" in str(info.value)
            other = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=OTHER_KEY, max_retries=0)
            got = other.completions.create(model="llm", prompt="another key", max_tokens=2)
            assert got.usage is not None and got.usage.completion_tokens == 2
        wait_until(lambda: not gw.app.state.gateway.key_limiter.active, what="the slot back")
        still_serves(gw.url)


# -- 2. malformed input: 400 with one line, never a 500 ------------------------------------


P = '{"model": "llm", "prompt": "a"'  # the start of a raw JSON body
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads used to raise RecursionError: a 500
MALFORMED: dict[str, tuple[str | dict[str, Any], str | None]] = {
    "lone surrogate in the prompt": ('{"model": "llm", "prompt": "hi \\ud800 there"}', "prompt"),
    "lone surrogate in the model": ('{"model": "ll\\udfffm", "prompt": "hi"}', "model"),
    "lone surrogate in a stop word": (P + ', "stop": ["\\ud83d"]}', "stop.0"),
    "lone surrogate in a key": (P + ', "x\\ud800": 1}', None),
    "deep nesting": (P + ', "x": ' + DEEP + "}", None),
    "nesting deeper than 32": (P + ', "x": ' + "[" * 40 + "]" * 40 + "}", "x" + ".0" * 31),
    "max_tokens that wrapped to 5": ({"max_tokens": 2**32 + 5}, "max_tokens"),
    "max_completion_tokens too": ({"messages": CHAT, "max_completion_tokens": 2**31},
                                  "max_completion_tokens"),
    "seed over uint64": ({"seed": 2**64}, "seed"),
    "negative seed": ({"seed": -1}, "seed"),
    "top_k over int32": ({"top_k": 2**31}, "top_k"),
    "min_tokens over int32": ({"min_tokens": 2**32}, "min_tokens"),
    "temperature over float32": ({"temperature": 1e39}, "temperature"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_400_with_one_line(gateway: GatewayServer, case: str) -> None:
    body, param = MALFORMED[case]
    route = "chat/completions" if "messages" in body else "completions"
    if isinstance(body, dict):
        body = {"model": "llm", **({} if "messages" in body else {"prompt": "a b c"}), **body}
    reply = post(f"{gateway.url}/v1/{route}", body)
    assert reply.status_code == 400, reply.text[:500]
    error = error_of(reply)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert len(error["message"]) < 400
    still_serves(gateway.url)


def test_template_range_over_the_sandbox_limit_is_400(gateway: GatewayServer) -> None:
    messages = [{"role": "user", "content": "hi", "repeat": 1_000_000}]
    reply = post(f"{gateway.url}/v1/chat/completions", {"model": "hostile", "messages": messages})
    assert reply.status_code == 400
    error = error_of(reply)
    assert error["param"] == "messages" and "Range too big" in error["message"]
    still_serves(gateway.url)


# -- 3. chat templates off the event loop, within time and size ----------------------------


def test_template_that_writes_too_much_is_400(gateway: GatewayServer) -> None:
    # 100 000 copies of a 100-character message: 10 M characters of prompt.
    messages = [{"role": "user", "content": "x" * 100, "repeat": 100_000}]
    reply = post(f"{gateway.url}/v1/chat/completions", {"model": "hostile", "messages": messages})
    assert reply.status_code == 400
    assert "wrote more than 1048576 characters" in error_of(reply)["message"]
    still_serves(gateway.url)


def test_slow_template_is_400_and_others_are_served_meanwhile(gateway: GatewayServer) -> None:
    # 30 000 ** 2 empty loop steps: half a minute of rendering without a deadline.
    slow_body = {
        "model": "hostile",
        "messages": [{"role": "user", "content": "hi", "spin": 30_000}],
    }
    finished: dict[str, float] = {}
    slow: dict[str, httpx.Response] = {}

    def send_slow() -> None:
        slow["reply"] = post(f"{gateway.url}/v1/chat/completions", slow_body, timeout=120)
        finished["slow"] = time.monotonic()

    thread = threading.Thread(target=send_slow)
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)  # the slow rendering is under way
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    got = client.chat.completions.create(model="llm", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
    finished["normal"] = time.monotonic()
    thread.join(timeout=120)
    assert got.choices[0].finish_reason in ("stop", "length")
    assert finished["normal"] < finished["slow"]  # served while the template ran
    reply = slow["reply"]
    assert reply.status_code == 400
    assert "did not finish rendering the messages within 2 s" in error_of(reply)["message"]
    assert finished["slow"] - started < 10  # the deadline, not the half minute
    still_serves(gateway.url)


# -- 4. internal errors stay in the log; the request id ------------------------------------


@pytest.fixture(scope="module")
def faulty_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    repository = tmp_path_factory.mktemp("faulty") / "repository"
    shutil.copytree(TOY_REPOSITORY, repository, ignore=shutil.ignore_patterns("__pycache__"))
    (repository / "faulty" / "1").mkdir(parents=True)
    config = (TOY_REPOSITORY / "llm" / "config.pbtxt").read_text()
    (repository / "faulty" / "config.pbtxt").write_text(config.replace('"llm"', '"faulty"'))
    (repository / "faulty" / "1" / "model.py").write_text(FAULTY_MODEL)
    with toy_server(repository) as triton:
        yield triton


def test_internal_errors_are_logged_and_clients_get_a_request_id(
    faulty_triton: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tritonkit.gateway")
    config = GatewayConfig(triton_url=faulty_triton.grpc_url, api_keys=(KEY,))
    with GatewayServer(config) as gw:
        url = f"{gw.url}/v1/completions"
        # Unstreamed, with the client's own request id.
        reply = post(url, {"model": "faulty", "prompt": "fail now"}, {"X-Request-ID": "req-42.a"})
        assert reply.status_code == 500
        error = error_of(reply)
        assert error["code"] == "internal_error" and error["type"] == "server_error"
        assert "req-42.a" in error["message"] and "prefill" not in error["message"]
        assert reply.headers["x-request-id"] == "req-42.a"
        # Streamed, failing after the 200: the error event is generic as well.
        body = {"model": "faulty", "prompt": "fail later", "stream": True}
        with httpx.stream("POST", url, json=body, headers=AUTH) as streamed:
            assert streamed.status_code == 200
            request_id = streamed.headers["x-request-id"]
            events = [line for line in streamed.iter_lines() if line]
        assert len(request_id) == 32  # none sent: a fresh one
        assert events[-1] == "data: [DONE]"
        event_error = json.loads(events[-2][6:])["error"]
        assert request_id in event_error["message"] and "/opt/secret" not in events[-2]
        # An insane id (too long, odd characters) is replaced, not echoed.
        odd = post(url, {"model": "faulty", "prompt": "x"}, {"X-Request-ID": "a b<script>" * 20})
        assert odd.status_code == 500 and "<script>" not in odd.headers["x-request-id"]
        # The details are in the gateway's log, under the ids the clients got.
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert f"request req-42.a: 500 internal_error: {FAULTY_SECRET}" in logged
        assert f"request {request_id}: 502 bad_gateway" not in logged  # it was the model's
        assert f"request {request_id}: 500 internal_error" in logged
        # The model's words about the request itself still reach the client.
        empty = post(url, {"model": "llm", "prompt": "   "})
        assert empty.status_code == 400
        assert error_of(empty)["message"].startswith("text_input is empty")
        assert empty.headers["x-request-id"]
        assert httpx.get(f"{gw.url}/v1/models").headers["x-request-id"]  # a 401 has one too
        ok = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
        assert ok.completions.create(model="llm", prompt="still up", max_tokens=2).choices


def test_unreadable_chat_template_is_a_generic_500(
    served: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tritonkit.gateway")
    folder = tmp_path / "repository" / "llm" / "1" / "tokenizer"
    folder.mkdir(parents=True)
    (folder / "tokenizer_config.json").write_text("{not json")
    config = GatewayConfig(
        triton_url=served.grpc_url, model_map={"llm": "llm"}, repository=tmp_path / "repository"
    )
    with GatewayServer(config) as gw:
        reply = post(f"{gw.url}/v1/chat/completions", {"model": "llm", "messages": CHAT})
    assert reply.status_code == 500
    error = error_of(reply)
    assert error["code"] == "chat_template" and str(tmp_path) not in error["message"]
    assert reply.headers["x-request-id"] in error["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"request {reply.headers['x-request-id']}: 500 chat_template: {folder}" in logged


# -- 5. /metrics behind its own key --------------------------------------------------------


def test_metrics_want_their_key(served: Any) -> None:
    config = GatewayConfig(triton_url=served.grpc_url, api_keys=(KEY,), metrics_keys=(METRICS_KEY,))
    with GatewayServer(config) as gw:
        url = f"{gw.url}/metrics"
        for headers in ({}, AUTH, {"Authorization": "Bearer nope"}):
            reply = httpx.get(url, headers=headers)
            assert reply.status_code == 401 and error_of(reply)["code"] == "invalid_api_key"
        for headers in ({"Authorization": f"Bearer {METRICS_KEY}"}, {"api-key": METRICS_KEY}):
            reply = httpx.get(url, headers=headers)
            assert reply.status_code == 200 and "tritonkit_gateway_requests_total" in reply.text
        assert METRICS_KEY not in repr(config)
        health = httpx.get(f"{gw.url}/health")
        assert health.status_code == 200 and served.grpc_url not in health.text
    # No metrics key of its own: /metrics (replica addresses) wants an API key, never open.
    config = GatewayConfig(triton_url=served.grpc_url, api_keys=(KEY,))
    with GatewayServer(config) as gw:
        assert httpx.get(f"{gw.url}/metrics").status_code == 401
        assert httpx.get(f"{gw.url}/metrics", headers=AUTH).status_code == 200


# -- 6. no admin API of Triton's -----------------------------------------------------------


def test_gateway_needs_no_admin_api_of_triton() -> None:
    # What deploy/triton-entrypoint.sh restricts, and more: every API the gateway must not need.
    apis = "model-repository,statistics,trace,logging,shared-memory"
    restricted = [
        f"--grpc-restricted-protocol={apis}:admin-key=adm1n",
        f"--http-restricted-api={apis}:admin-key=adm1n",
    ]
    with toy_server(extra_args=restricted) as triton:
        for config in (
            GatewayConfig(triton_url=triton.grpc_url, model_map={"toy": "llm"}),
            GatewayConfig(triton_url=triton.grpc_url, repository=TOY_REPOSITORY),
        ):
            with GatewayServer(config) as gw:
                client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
                model = next(iter(config.model_map), "llm")
                assert [m.id for m in client.models.list()] == [model]
                got = client.completions.create(model=model, prompt="one two three", max_tokens=2)
                assert got.choices[0].text == " one two"
                chat = client.chat.completions.create(model=model, messages=CHAT)  # type: ignore[arg-type]
                assert (chat.choices[0].message.content or "").split()[:2] == ["user:", "Hello"]
                assert httpx.get(f"{gw.url}/health").status_code == 200
        # With nothing to name the models, listing them is the restricted call: a clear 503.
        with GatewayServer(GatewayConfig(triton_url=triton.grpc_url)) as gw:
            reply = httpx.get(f"{gw.url}/v1/models")
            assert reply.status_code == 503 and error_of(reply)["code"] == "triton_restricted"
            assert "--model-map" in error_of(reply)["message"]


# -- 7. TLS --------------------------------------------------------------------------------


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (cert.pem, key.pem)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is installed")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def test_tls_on_the_public_port(served: Any, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    config = GatewayConfig(
        triton_url=served.grpc_url, api_keys=(KEY,), ssl_certfile=cert, ssl_keyfile=key
    )
    with GatewayServer(config) as gw:
        assert gw.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trust) as http:
            assert http.get(f"{gw.url}/health").json()["status"] == "ok"
            client = openai.OpenAI(
                base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0, http_client=http
            )
            got = client.chat.completions.create(model="llm", messages=CHAT, max_tokens=3)  # type: ignore[arg-type]
            assert got.usage is not None and got.usage.completion_tokens == 3
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused
            httpx.get(f"{gw.url}/health")
        with pytest.raises(httpx.TransportError):  # and plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{gw.port}/health")


# -- the command line ----------------------------------------------------------------------


def test_cli_takes_the_new_options(served: Any, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    metrics_file = tmp_path / "metrics.key"
    metrics_file.write_text(f"# for Prometheus\n{METRICS_KEY}\n")
    command = [
        sys.executable, "-m", "tritonkit", "gateway", "--triton-url", served.grpc_url,
        "--port", "0", "--model-map", "llm=llm", "--metrics-key-file", str(metrics_file),
        "--max-body-bytes", "2000", "--max-prompt-chars", "500", "--template-timeout", "1",
        "--template-max-chars", "5000", "--limit-concurrency", "64", "--max-concurrent", "8",
        "--max-concurrent-per-key", "2", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRITONKIT_GATEWAY")},
        "TRITONKIT_GATEWAY_API_KEY": KEY,
        "TRITON_ADMIN_KEY": "adm1n",  # ignored, with a warning
    }
    log = tmp_path / "gateway.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "OpenAI API at https://127.0.0.1:" in line, line
            base = line.split("OpenAI API at ", 1)[1].split()[0].removesuffix("/v1")
            with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as http:
                wait_until(lambda: _answers(http, base), what="the gateway to answer")
                assert http.get(f"{base}/metrics").status_code == 401
                metrics = http.get(f"{base}/metrics", headers={"api-key": METRICS_KEY})
                assert metrics.status_code == 200
                big = http.post(f"{base}/v1/completions", headers=AUTH, content=b"{" * 3000)
                assert big.status_code == 413
                long = http.post(
                    f"{base}/v1/completions",
                    headers=AUTH,
                    json={"model": "llm", "prompt": "a" * 600},
                )
                assert long.status_code == 400 and error_of(long)["code"] == "prompt_too_long"
                ok = http.post(
                    f"{base}/v1/completions",
                    headers=AUTH,
                    json={"model": "llm", "prompt": "Hello", "max_tokens": 2},
                )
                assert ok.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0
    output = log.read_text()
    assert "TRITON_ADMIN_KEY is set; the gateway ignores it" in output
    assert METRICS_KEY not in output and KEY not in output and "adm1n" not in output


def _answers(http: httpx.Client, base: str) -> bool:
    try:
        return http.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_cli_refuses_inconsistent_limits() -> None:
    from tritonkit.errors import UsageError

    with pytest.raises(UsageError, match="--limit-concurrency"):
        cli.run(["gateway", "--limit-concurrency", "10", "--max-concurrent", "10"])
    with pytest.raises(UsageError, match="--ssl-certfile and --ssl-keyfile go together"):
        cli.run(["gateway", "--ssl-certfile", __file__])
    with pytest.raises(UsageError, match="needs API keys"):
        cli.run(["gateway", "--max-concurrent-per-key", "2"])
