"""n > 1: one prefill, its KV forked into n rows, each choice sampled with its own seed
(seed + i). In process over both engines, then through a real Triton with tritonkit's
client (gRPC and HTTP streams) and the gateway with the openai SDK."""

from __future__ import annotations

from typing import Any

import numpy as np
import openai
import pytest
from test_prefix_cache import Runner, drain

from tritonkit.client import InvalidRequest, LLMClient
from tritonkit.core.params import parse_request
from tritonkit.export import main_export
from tritonkit.gateway import GatewayConfig, GatewayServer
from tritonkit.model_repository.runtime.generation import GenerationRequest, Output

PROMPT = "The harbour office opens at dawn and"


@pytest.fixture(scope="module", params=["fused", "concat"])
def runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    out = tmp_path_factory.mktemp(f"choices-{request.param}") / "export"
    return Runner(main_export("tiny-llama", out, graph=request.param).output)


def _sampled(runner: Runner, seed: int, index: int = 0) -> tuple[Any, list[Output]]:
    """A sampled request (temperature 1, ``seed``) as choice ``index``."""
    fields = {
        "text_input": np.array([PROMPT.encode()], np.object_),
        "max_tokens": np.array([10], np.int32),
        "min_tokens": np.array([10], np.int32),
        "temperature": np.array([1.0], np.float32),
        "seed": np.array([seed], np.uint64),
    }
    outputs: list[Output] = []
    seq = GenerationRequest(parse_request(fields), runner.tokenizer.encode(PROMPT).ids,
                            runner.tokenizer, runner.eos, runner.context,
                            emit=outputs.append, index=index)  # fmt: skip
    return seq, outputs


def test_choices_come_from_one_prefill_and_equal_their_seeds_alone(runner: Runner) -> None:
    alone = []
    for i in range(3):
        scheduler = runner.scheduler()
        seq, _ = _sampled(runner, 7 + i)
        scheduler.submit(seq)
        drain(scheduler)
        alone.append(seq.generated)
    assert len({tuple(a) for a in alone}) > 1  # the seeds differ, so do the samples
    scheduler = runner.scheduler()
    prefilled: list[int] = []
    engine_prefill = scheduler.engine.prefill

    def counting(handle: Any, ids: list[int]) -> np.ndarray:
        prefilled.append(len(ids))
        return engine_prefill(handle, ids)

    scheduler.engine.prefill = counting  # type: ignore[method-assign]
    first, _ = _sampled(runner, 7)
    first.forks = [_sampled(runner, 7 + i, i)[0] for i in (1, 2)]
    scheduler.submit(first)
    drain(scheduler)
    assert [first.generated, *(f.generated for f in first.forks)] == alone
    assert sum(prefilled) == len(first.prompt_ids)  # the prompt was read once


def test_choices_wait_for_all_their_rows(runner: Runner) -> None:
    scheduler = runner.scheduler(rows=4)
    busy, busy_out = runner.request("busy " * 5, tokens=30)
    scheduler.submit(busy)
    scheduler.run_once()
    first, first_out = _sampled(runner, 1)
    first.forks = [_sampled(runner, 1 + i, i)[0] for i in (1, 2, 3)]
    scheduler.submit(first)
    scheduler.run_once()
    assert first.cached_tokens == 0 and list(scheduler._waiting) == [first]  # 3 rows free
    drain(scheduler)
    assert busy_out[-1].finish_reason and first_out[-1].final
    assert all(len(f.generated) == 10 for f in first.forks)


def test_a_cancelled_request_ends_every_choice(runner: Runner) -> None:
    scheduler = runner.scheduler(rows=4)
    gone = {"now": False}
    outs: list[list[Any]] = []
    choices = []
    for _ in range(3):
        seq, out = runner.request(PROMPT * 8, tokens=10, is_cancelled=lambda: gone["now"])
        choices.append(seq)
        outs.append(out)
    choices[0].forks = choices[1:]
    scheduler.submit(choices[0])
    gone["now"] = True
    drain(scheduler)
    assert all(out and out[-1].cancelled for out in outs)
    assert scheduler.engine.free_rows() == 4


# ---- through Triton ------------------------------------------------------------------


def test_n_over_grpc_and_http_streams(served: Any) -> None:
    params = {"max_tokens": 8, "temperature": 1.0, "seed": 11, "exclude_input_in_output": True}
    with LLMClient(served.grpc_url, model="llm") as grpc:
        alone = [grpc.generate(PROMPT, **{**params, "seed": 11 + i}).text for i in range(3)]
        whole = grpc.generate(PROMPT, n=3, **params)
        streamed = grpc.generate(PROMPT, n=3, on_text=lambda _p: None, **params)
        with pytest.raises(InvalidRequest, match="n=20 needs 20 KV rows"):
            grpc.generate(PROMPT, n=20, max_tokens=2)
    assert [c.text for c in whole.choices] == alone == [c.text for c in streamed.choices]
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" and c.num_output_tokens == 8 for c in whole.choices)
    with LLMClient(served.http_url, protocol="http", model="llm") as http:
        got = http.generate(PROMPT, n=3, on_text=lambda _p: None, **params)
    assert [c.text for c in got.choices] == alone
    with (
        LLMClient(served.http_url, protocol="http", model="llm_sync") as unary,
        pytest.raises(InvalidRequest, match="one response per choice"),
    ):
        unary.generate(PROMPT, n=2, max_tokens=2)


def test_n_through_the_gateway(served: Any) -> None:
    with GatewayServer(GatewayConfig(triton_url=served.grpc_url)) as gw:
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
        kwargs: dict[str, Any] = {"model": "llm", "max_tokens": 6, "temperature": 1.0, "seed": 5}
        reply = oai.completions.create(prompt=PROMPT, n=3, **kwargs)
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert reply.usage is not None and reply.usage.completion_tokens == 18
        texts: dict[int, str] = {}
        finished: dict[int, str] = {}
        for chunk in oai.chat.completions.create(
            messages=[{"role": "user", "content": PROMPT}], n=2, stream=True, **kwargs
        ):
            for c in chunk.choices:
                texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
                if c.finish_reason:
                    finished[c.index] = c.finish_reason
        assert sorted(texts) == [0, 1] and finished == {0: "length", 1: "length"}
        chat = oai.chat.completions.create(
            messages=[{"role": "user", "content": PROMPT}], n=2, **kwargs
        )
        assert [c.message.content for c in chat.choices] == [texts[0], texts[1]]
        with pytest.raises(openai.BadRequestError, match="KV rows"):
            oai.completions.create(prompt=PROMPT, n=40, **kwargs)
