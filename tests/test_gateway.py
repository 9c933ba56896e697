"""The gateway in front of a real Triton serving tiny-llama, driven by the real ``openai`` SDK.

Every request goes openai SDK (or raw httpx) -> gateway (uvicorn on a free port) ->
Triton gRPC stream -> the entry model; expected values come from tritonkit's own client
straight to Triton, and from the model's tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import toy_server, wait_until

from tritonkit import cli
from tritonkit.blob.live import ADMIN_KEY_HEADER
from tritonkit.client import LLMClient
from tritonkit.errors import UsageError
from tritonkit.gateway import ChatTemplate, GatewayConfig, GatewayServer
from tritonkit.serve import free_ports

pytestmark = pytest.mark.slow

KEY = "test-key-3f9c"  # the gateway's API key in these tests
# The gRPC header Triton's --grpc-restricted-protocol=...:admin-key=VALUE wants.
PROMPTS = ("The quick brown fox", "Triton serves models over gRPC")
CHAT = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello there"}]
LONG = 2000  # tokens: seconds of generation on this machine, so a client can leave mid-way


@pytest.fixture(scope="module")
def gateway(served: Any) -> Iterator[GatewayServer]:
    config = GatewayConfig(
        triton_url=served.grpc_url, api_keys=(KEY,), repository=served.repository
    )
    with GatewayServer(config) as gw:
        yield gw


@pytest.fixture(scope="module")
def direct(served: Any) -> Iterator[LLMClient]:
    """tritonkit's client straight to Triton: the reference the gateway must match."""
    with LLMClient(served.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def oai(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(served: Any) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(served.sources["llm"] / "tokenizer.json"))


def chat_prompt(served: Any, messages: list[dict[str, str]]) -> str:
    """The prompt transformers renders for ``messages`` with tiny-llama's own template."""
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(served.sources["llm"])
    return str(reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def triton_metric(served: Any, name: str, model: str = "llm") -> float:
    with urllib.request.urlopen(f"http://{served.metrics_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def gateway_metric(url: str, name: str, **labels: str) -> float:
    # /metrics wants a key when the gateway has keys: the tests' key (ignored without keys)
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


# -- models ------------------------------------------------------------------------------


def test_models_are_the_ready_entry_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == ["gpt2", "llama", "llm"]  # not llm_decoder nor llm_sync
    assert oai.models.retrieve("llm").id == "llm"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("llm_decoder")


# -- completions: parity with the entry model --------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_equals_the_entry_model(
    oai: openai.OpenAI, direct: LLMClient, tokenizer: Any, prompt: str
) -> None:
    expected = direct.generate(prompt, max_tokens=16, temperature=0, exclude_input_in_output=True)
    got = oai.completions.create(model="llm", prompt=prompt, max_tokens=16, temperature=0)
    assert got.object == "text_completion"
    assert got.choices[0].text == expected.text and expected.text
    assert got.choices[0].finish_reason == expected.finish_reason
    assert got.usage is not None
    assert got.usage.prompt_tokens == len(tokenizer.encode(prompt).ids) == expected.num_input_tokens
    assert got.usage.completion_tokens == expected.num_output_tokens
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens

    stream = oai.completions.create(
        model="llm",
        prompt=prompt,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == expected.finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == got.usage

    echoed = oai.completions.create(
        model="llm", prompt=prompt, max_tokens=16, temperature=0, echo=True
    )
    assert echoed.choices[0].text == prompt + expected.text


def test_length_and_stop_pass_through(oai: openai.OpenAI, direct: LLMClient) -> None:
    text = direct.generate(PROMPTS[0], max_tokens=24, exclude_input_in_output=True).text
    ascii_run = next(i for i in range(len(text) // 2, len(text) - 2) if text[i : i + 2].isascii())
    stop = text[ascii_run : ascii_run + 2]
    expected = direct.generate(PROMPTS[0], max_tokens=24, stop=[stop], exclude_input_in_output=True)
    got = oai.completions.create(model="llm", prompt=PROMPTS[0], max_tokens=24, stop=[stop])
    assert got.choices[0].text == expected.text == text[: text.find(stop)]
    assert got.choices[0].finish_reason == "stop"
    short = oai.completions.create(model="llm", prompt=PROMPTS[0], max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 3


def test_sampling_with_seed_and_top_p_matches_the_entry_model(
    oai: openai.OpenAI, direct: LLMClient
) -> None:
    sampling = {"temperature": 1.0, "top_p": 0.9, "seed": 7}
    expected = direct.generate(PROMPTS[1], max_tokens=12, exclude_input_in_output=True, **sampling)
    greedy = direct.generate(PROMPTS[1], max_tokens=12, exclude_input_in_output=True)
    assert expected.text != greedy.text  # the sampling parameters reach the model...
    got = oai.completions.create(model="llm", prompt=PROMPTS[1], max_tokens=12, **sampling)
    assert got.choices[0].text == expected.text  # ...through the gateway as well
    other = oai.completions.create(
        model="llm", prompt=PROMPTS[1], max_tokens=12, **{**sampling, "seed": 8}
    )
    assert other.choices[0].text != expected.text


# -- chat: the model's own template, sync and async ---------------------------------------


def test_chat_uses_the_models_template(served: Any, oai: openai.OpenAI, direct: LLMClient) -> None:
    prompt = chat_prompt(served, CHAT)
    expected = direct.generate(prompt, max_tokens=12, exclude_input_in_output=True)
    got = oai.chat.completions.create(model="llm", messages=CHAT, max_tokens=12)  # type: ignore[arg-type]
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == expected.text
    assert got.usage is not None and got.usage.prompt_tokens == expected.num_input_tokens

    async def async_calls() -> tuple[str | None, str, Any]:
        client = openai.AsyncOpenAI(base_url=oai.base_url, api_key=KEY, max_retries=0)
        async with client:
            whole = await client.chat.completions.create(
                model="llm",
                messages=CHAT,
                max_completion_tokens=12,  # type: ignore[arg-type]
            )
            stream = await client.chat.completions.create(
                model="llm",
                messages=CHAT,  # type: ignore[arg-type]
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return whole.choices[0].message.content, text, chunks

    whole, streamed, chunks = asyncio.run(async_calls())
    assert whole == streamed == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == expected.finish_reason
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.num_output_tokens


def test_raw_http_server_sent_events(gateway: GatewayServer) -> None:
    body = {"model": "llm", "messages": CHAT, "max_tokens": 6, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["id"] for e in events}) == 1
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


# -- errors in OpenAI's format ------------------------------------------------------------


def test_api_key_is_required(gateway: GatewayServer, oai: openai.OpenAI) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"api-key": KEY[:-1]}):
        reply = httpx.get(f"{gateway.url}/v1/models", headers=headers)
        assert reply.status_code == 401
        assert error_of(reply)["code"] == "invalid_api_key"
        assert reply.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{gateway.url}/v1/models", headers={"api-key": KEY}).status_code == 200
    wrong = openai.OpenAI(base_url=oai.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="llm", prompt="hi", max_tokens=2)
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"  # no key for health


def test_bad_parameters_are_400_with_tritons_message(
    gateway: GatewayServer, oai: openai.OpenAI
) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            oai.completions.create(
                model="llm",
                prompt="hi",
                temperature=-1,
                stream=stream,  # type: ignore[call-overload]
            )
        assert "temperature must be >= 0 (0 means greedy), got -1.0" in str(info.value)
        assert info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError, match="n=17 needs 17 KV rows") as too_many:
        oai.completions.create(model="llm", prompt="hi", n=17)  # the model has 16 rows
    assert too_many.value.param == "n"
    reply = httpx.post(
        f"{gateway.url}/v1/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert reply.status_code == 400 and "not valid JSON" in error_of(reply)["message"]


def test_unknown_model_is_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="gpt-nope", messages=CHAT)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


def test_triton_down_is_503() -> None:
    closed = f"127.0.0.1:{free_ports(1)[0]}"
    with GatewayServer(GatewayConfig(triton_url=closed)) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.completions.create(model="llm", prompt="hi")
        assert info.value.status_code == 503
        assert "no Triton replica is up (1 of 1 down)" in str(info.value)
        assert closed not in str(info.value)  # internal addresses stay in the log
        health = httpx.get(f"{gw.url}/health")
        assert health.status_code == 503 and error_of(health)["code"] == "triton_unavailable"
        assert closed not in health.text


def test_restricted_triton_without_a_model_list() -> None:
    # A Triton whose repository API wants an admin key, as deploy/triton-entrypoint.sh starts it;
    # test_gateway_hardening.py shows --model-map and --repository need no key at all.
    restricted = ["--grpc-restricted-protocol=model-repository:admin-key=adm1n"]
    with toy_server(extra_args=restricted) as triton:
        with GatewayServer(GatewayConfig(triton_url=triton.grpc_url)) as gw:
            reply = httpx.get(f"{gw.url}/v1/models")
            assert reply.status_code == 503 and error_of(reply)["code"] == "triton_restricted"
            assert "--model-map" in error_of(reply)["message"]
        headers = {ADMIN_KEY_HEADER: "adm1n"}
        with GatewayServer(GatewayConfig(triton_url=triton.grpc_url, triton_headers=headers)) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
            assert [m.id for m in client.models.list()] == ["llm"]
            got = client.completions.create(model="llm", prompt="one two three", max_tokens=2)
            assert got.choices[0].finish_reason in ("stop", "length")


def test_concurrency_limit_is_429_and_model_map_with_tokenizer_folder(
    served: Any, direct: LLMClient
) -> None:
    config = GatewayConfig(
        triton_url=served.grpc_url,
        max_concurrent=1,
        model_map={"tiny-chat": "llm"},
        tokenizers={"tiny-chat": served.sources["llm"]},
    )
    with GatewayServer(config) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny-chat"]
        body = {"model": "tiny-chat", "prompt": "hold", "max_tokens": LONG, "stream": True}
        with httpx.stream("POST", f"{gw.url}/v1/completions", json=body) as held:
            lines = held.iter_lines()  # kept: a dropped iterator closes the connection
            assert next(lines).startswith("data: ")  # the one slot is taken while this streams
            with pytest.raises(openai.RateLimitError) as info:
                client.chat.completions.create(model="tiny-chat", messages=CHAT)  # type: ignore[arg-type]
            assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
        wait_until(lambda: gateway_metric(gw.url, "tritonkit_gateway_in_flight_requests") == 0)
        expected = direct.generate(
            chat_prompt(served, CHAT), max_tokens=8, exclude_input_in_output=True
        )
        got = client.chat.completions.create(model="tiny-chat", messages=CHAT, max_tokens=8)  # type: ignore[arg-type]
        assert got.choices[0].message.content == expected.text
        assert got.model == "tiny-chat"


def test_template_from_the_served_config_without_a_repository(
    served: Any, direct: LLMClient
) -> None:
    # No repository, no tokenizer folder: the template comes from the entry model's config.
    with GatewayServer(GatewayConfig(triton_url=served.grpc_url)) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        got = client.chat.completions.create(model="llm", messages=CHAT, max_tokens=8)  # type: ignore[arg-type]
    expected = direct.generate(
        chat_prompt(served, CHAT), max_tokens=8, exclude_input_in_output=True
    )
    assert got.choices[0].message.content == expected.text
    assert direct.chat_template().source == ChatTemplate.from_dir(served.sources["llm"]).source


def test_plain_template_for_a_model_without_one() -> None:
    # The toy model's config has no chat template; it echoes the prompt's words back.
    with toy_server() as triton, GatewayServer(GatewayConfig(triton_url=triton.grpc_url)) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        got = client.chat.completions.create(model="llm", messages=CHAT, max_tokens=32)  # type: ignore[arg-type]
    prompt = ChatTemplate.plain().render(CHAT)
    assert prompt == "system: Be terse.\nuser: Hello there\nassistant:"
    assert (got.choices[0].message.content or "").split() == prompt.split()


# -- clients that leave, and many at once ---------------------------------------------------


def test_dropped_stream_cancels_generation(
    served: Any, gateway: GatewayServer, oai: openai.OpenAI
) -> None:
    before = triton_metric(served, "tritonkit_cancelled_requests_total")
    left_before = gateway_metric(gateway.url, "tritonkit_gateway_client_disconnects_total")
    body = {"model": "llm", "prompt": "Once upon a time", "max_tokens": LONG, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        httpx.Client() as http,
        http.stream("POST", f"{gateway.url}/v1/completions", json=body, headers=headers) as reply,
    ):
        lines = reply.iter_lines()
        assert next(lines).startswith("data: ")
        assert next(l for l in lines if l).startswith("data: ")  # noqa: E741
    # The connection is closed: Triton must see the request cancelled, long before LONG tokens.
    wait_until(
        lambda: triton_metric(served, "tritonkit_cancelled_requests_total") > before,
        what="Triton to count the request cancelled",
    )
    assert gateway_metric(gateway.url, "tritonkit_gateway_client_disconnects_total") > left_before
    after = oai.completions.create(model="llm", prompt="still there?", max_tokens=4)
    assert after.choices[0].finish_reason == "length"  # the server keeps serving


def test_dropped_unstreamed_request_cancels_generation(served: Any, gateway: GatewayServer) -> None:
    before = triton_metric(served, "tritonkit_cancelled_requests_total")
    body = {"model": "llm", "prompt": "Once upon a time", "max_tokens": LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=0.5,
        )
    wait_until(
        lambda: triton_metric(served, "tritonkit_cancelled_requests_total") > before,
        what="Triton to count the request cancelled",
    )


def test_sixteen_concurrent_streaming_chats(gateway: GatewayServer) -> None:
    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str | None, Any]:
        messages = [{"role": "user", "content": f"Request number {i}"}]
        stream = await client.chat.completions.create(
            model="llm",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            usage = chunk.usage or usage
        return "".join(pieces), finish, usage

    async def all_of_them() -> list[tuple[str, str | None, Any]]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
        async with client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    results = asyncio.run(all_of_them())
    assert len(results) == 16
    for text, finish, usage in results:
        assert finish in ("stop", "length")
        assert usage is not None and 0 < usage.completion_tokens <= 24
        assert text or finish == "stop"
        if finish == "length":
            assert usage.completion_tokens == 24
    assert gateway_metric(gateway.url, "tritonkit_gateway_in_flight_requests") == 0


def test_gateway_metrics_count_requests(gateway: GatewayServer) -> None:
    url = gateway.url
    ok = gateway_metric(
        url, "tritonkit_gateway_requests_total", path="/v1/completions", status="200"
    )
    assert ok > 0
    assert gateway_metric(url, "tritonkit_gateway_requests_total", status="401") > 0
    assert gateway_metric(url, "tritonkit_gateway_time_to_first_token_seconds_count") > 0
    assert gateway_metric(url, "tritonkit_gateway_completion_tokens_total") > 0


# -- the command line ---------------------------------------------------------------------


def test_cli_serves_and_never_logs_the_key(served: Any, tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    command = [
        sys.executable, "-m", "tritonkit", "gateway", "--triton-url", served.grpc_url,
        "--port", "0", "--api-key", KEY, "--repository", str(served.repository),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITONKIT_GATEWAY_API_KEY"}
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "OpenAI API at http://127.0.0.1:" in line, line
            base_url = line.split("OpenAI API at ", 1)[1].split()[0]
            client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
            wait_until(lambda: _answers(base_url), what="the gateway to answer")
            got = client.chat.completions.create(model="llm", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
            assert got.usage is not None and got.usage.completion_tokens == 4
            bad = openai.OpenAI(base_url=base_url, api_key=KEY + "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        rest = proc.stdout.read() if proc.stdout else ""
    assert code == 0  # SIGTERM is a clean stop
    output = log.read_text() + rest  # uvicorn logs requests to stdout, the rest to stderr
    assert "POST /v1/chat/completions" in output  # the access log ran...
    assert KEY not in output  # ...and never wrote the key


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(base_url.removesuffix("/v1") + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_cli_rejects_bad_pairs_in_one_line() -> None:
    with pytest.raises(UsageError, match="--model-map takes NAME=VALUE"):
        cli.run(["gateway", "--model-map", "just-a-name"])
