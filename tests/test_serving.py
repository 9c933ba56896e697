"""The entry model on a real Triton server, checked against transformers and raw clients."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from triton_raw import (
    cancel_mid_stream,
    grpc_stream,
    http_generate,
    http_generate_stream,
    metrics,
)

PROMPT = "The quick brown fox jumps over"


def transformers_greedy(folder, prompt: str, new_tokens: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_greedy_parity_with_transformers(served, model):
    n = 40
    expected = transformers_greedy(served.sources[model], PROMPT, n)
    fields = {"text_input": PROMPT, "max_tokens": n, "min_tokens": n}

    streamed = grpc_stream(served.grpc_url, model, {**fields, "stream": True})
    assert "error" not in streamed, streamed
    assert streamed["text"] == expected
    assert len(streamed["pieces"]) > 1  # streamed (pieces that queue up are merged)
    assert streamed["finish_reason"] == "length" and streamed["num_output_tokens"] == n
    assert not any(PROMPT in p for p in streamed["pieces"])  # pieces never repeat the prompt

    unary = grpc_stream(served.grpc_url, model, {**fields, "exclude_input_in_output": True})
    assert unary["pieces"] == [expected]  # exactly one response when not streaming

    body = http_generate(served.http_url, model, {**fields, "exclude_input_in_output": True})
    assert body["text_output"] == expected, body
    assert body["finish_reason"] == "length"

    events = http_generate_stream(served.http_url, model, fields)
    assert "".join(e["text_output"] for e in events) == expected
    assert events[-1]["finish_reason"] == "length"


def test_prompt_is_included_unless_excluded(served):
    full = http_generate(served.http_url, "llm", {"text_input": PROMPT, "max_tokens": 12})
    only = http_generate(
        served.http_url,
        "llm",
        {"text_input": PROMPT, "max_tokens": 12, "exclude_input_in_output": True},
    )
    assert full["text_output"] == PROMPT + only["text_output"]
    assert full["num_input_tokens"] == only["num_input_tokens"] > 0


def test_seeded_sampling_is_reproducible(served):
    def sample(seed: int) -> str:
        fields = {"text_input": PROMPT, "max_tokens": 24, "min_tokens": 24, "temperature": 1.0,
                  "top_p": 0.95, "seed": seed, "exclude_input_in_output": True}  # fmt: skip
        return str(http_generate(served.http_url, "llm", fields)["text_output"])

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again
    assert first != other
    greedy = http_generate(
        served.http_url, "llm",
        {"text_input": PROMPT, "max_tokens": 24, "min_tokens": 24, "exclude_input_in_output": True},
    )["text_output"]  # fmt: skip
    assert first != greedy  # temperature 1 really samples


def test_sampling_parameters_json(served):
    params = json.dumps({"max_tokens": 5, "temperature": 0})
    body = http_generate(
        served.http_url, "llm", {"text_input": PROMPT, "sampling_parameters": params}
    )
    assert body["num_output_tokens"] <= 5 and "error" not in body


def test_stop_words_end_the_text(served):
    fields = {"text_input": PROMPT, "max_tokens": 40, "min_tokens": 40,
              "exclude_input_in_output": True}  # fmt: skip
    full = http_generate(served.http_url, "llama", fields)["text_output"]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop and stop in full
    cut = http_generate(served.http_url, "llama", {**fields, "min_tokens": 0, "stop_words": [stop]})
    assert cut["text_output"] == full[: full.index(stop)]
    assert cut["finish_reason"] == "stop"
    streamed = grpc_stream(
        served.grpc_url, "llama", {**fields, "min_tokens": 0, "stop_words": [stop], "stream": True}
    )
    assert streamed["text"] == cut["text_output"] and streamed["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text_input": ""}, "text_input is empty"),
        ({"text_input": "word " * 400}, "context"),
        ({"text_input": "hi", "max_tokens": 0}, "max_tokens"),
        ({"text_input": "hi", "max_tokens": -3}, "max_tokens"),
        ({"text_input": "hi", "temperature": -0.5}, "temperature"),
        ({"text_input": "hi", "top_p": 0.0}, "top_p"),
        ({"text_input": "hi", "top_p": 1.5}, "top_p"),
        ({"text_input": "hi", "sampling_parameters": "{not json"}, "sampling_parameters"),
        ({"text_input": "hi", "sampling_parameters": '{"temprature": 1}'}, "temprature"),
        ({"text_input": b"\xff\xfe bad bytes"}, "UTF-8"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(served, fields, message):
    # gpt2's context is 256 tokens, so a 400-word prompt is too long for it.
    result = grpc_stream(served.grpc_url, "gpt2", fields)
    assert "error" in result, result
    assert message in result["error"]
    assert len(result["error"].splitlines()) == 1
    ok = grpc_stream(served.grpc_url, "gpt2", {"text_input": "still there?", "max_tokens": 3})
    assert "error" not in ok and ok["num_output_tokens"] >= 1


def test_max_tokens_beyond_context_is_clamped(served):
    prompt = "the fox " * 20  # well under gpt2 tiny's 256-token context
    body = http_generate(
        served.http_url, "gpt2",
        {"text_input": prompt, "max_tokens": 10_000, "min_tokens": 10_000,
         "exclude_input_in_output": True},
    )  # fmt: skip
    assert "error" not in body, body
    assert body["finish_reason"] == "length"
    assert body["num_input_tokens"] + body["num_output_tokens"] == 256


def wait_until_idle(url: str, timeout: float = 60) -> None:
    """Until the entry model runs and awaits nothing, steps included, for two flushes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        m = metrics(url)
        now = (m["tritonkit_running_batch_size"], m["tritonkit_waiting_requests"],
               m["tritonkit_decode_steps_total"])  # fmt: skip
        if now[:2] == (0, 0) and now == last:
            return
        last = now
        time.sleep(0.3)
    raise AssertionError("the server never became idle")


def test_concurrent_requests_share_decode_steps(served):
    prompts = [f"Request {i}: the quick brown fox" for i in range(8)]
    fields = {"max_tokens": 48, "min_tokens": 48, "stream": True}
    alone = {p: grpc_stream(served.grpc_url, "llm", {"text_input": p, **fields})["text"]
             for p in prompts}  # fmt: skip
    wait_until_idle(served.metrics_url)  # earlier tests' cancelled streams must not count
    before = metrics(served.metrics_url)
    with cf.ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(lambda p: grpc_stream(served.grpc_url, "llm", {"text_input": p, **fields}),
                     prompts)
        )  # fmt: skip
    # Metrics are flushed every 0.25 s: wait until the batch's rows are all counted.
    deadline = time.monotonic() + 10
    while True:
        after = metrics(served.metrics_url)
        rows = after["tritonkit_decode_rows_total"] - before["tritonkit_decode_rows_total"]
        if rows >= 8 * 47 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for prompt, result in zip(prompts, together):
        assert "error" not in result
        assert result["text"] == alone[prompt]  # batched == alone, token for token
        assert result["num_output_tokens"] == 48
    steps = after["tritonkit_decode_steps_total"] - before["tritonkit_decode_steps_total"]
    assert rows >= 8 * 47
    assert rows / steps > 2.0, f"mean batch {rows / steps:.2f}: requests were not batched"


def test_grpc_cancel_mid_stream_stops_generation(served):
    cancel_mid_stream(served, "llm", PROMPT)


def test_http_disconnect_stops_generation(served):
    before = metrics(served.metrics_url)["tritonkit_cancelled_requests_total"]
    body = {"text_input": PROMPT, "max_tokens": 1500, "min_tokens": 1500, "stream": True}
    request = urllib.request.Request(
        f"http://{served.http_url}/v2/models/llm/generate_stream", data=json.dumps(body).encode()
    )
    response = urllib.request.urlopen(request, timeout=60)
    assert response.readline().startswith(b"data:")
    response.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 30
    while metrics(served.metrics_url)["tritonkit_cancelled_requests_total"] <= before:
        assert time.monotonic() < deadline, "the abandoned request kept generating"
        time.sleep(0.1)


def test_unary_infer_with_raw_tritonclient(served):
    text = np.array([PROMPT.encode()], dtype=np.object_)
    max_tokens = np.array([6], dtype=np.int32)

    g = grpcclient.InferenceServerClient(served.grpc_url)
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES"),
              grpcclient.InferInput("max_tokens", [1], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(text)
    inputs[1].set_data_from_numpy(max_tokens)
    result = g.infer("llm_sync", inputs)
    grpc_text = result.as_numpy("text_output")[0].decode()
    assert grpc_text.startswith(PROMPT)
    assert int(result.as_numpy("num_output_tokens")[0]) == 6

    h = httpclient.InferenceServerClient(served.http_url)
    inputs = [httpclient.InferInput("text_input", [1], "BYTES"),
              httpclient.InferInput("max_tokens", [1], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(text)
    inputs[1].set_data_from_numpy(max_tokens)
    result = h.infer("llm_sync", inputs)
    assert result.as_numpy("text_output")[0].decode() == grpc_text

    bad = [httpclient.InferInput("text_input", [1], "BYTES")]
    bad[0].set_data_from_numpy(np.array([b""], dtype=np.object_))
    with pytest.raises(Exception, match="text_input is empty"):
        h.infer("llm_sync", bad)


@pytest.mark.parametrize("model", ["gpt2", "llm"])  # a concat graph, a fused-attention one
def test_decoder_model_serves_the_raw_graph(served, model):
    report = json.loads((served.repository / model / "1" / "tokenizer" / "export.json").read_text())
    fused = report["graph"] == "fused"
    assert fused == (model == "llm")  # auto: fused for Llama, concat for GPT-2
    client = httpclient.InferenceServerClient(served.http_url)
    meta = client.get_model_metadata(f"{model}_decoder")
    names = [i["name"] for i in meta["inputs"]]
    first = ["input_ids", "attention_mask"] + ([] if fused else ["position_ids"])
    assert names[: len(first)] == first and names[len(first)] == "past_key_values.0.key"
    inputs = []
    for name, array in (
        ("input_ids", np.array([[5, 6, 7]], np.int64)),
        ("attention_mask", np.ones((1, 3), np.int64)),
        ("position_ids", np.array([[0, 1, 2]], np.int64)),
    ):
        if name in names:
            inputs.append(httpclient.InferInput(name, list(array.shape), "INT64"))
            inputs[-1].set_data_from_numpy(array)
    dims = report["dims"]
    for name in names[len(first) :]:
        shape = [1, dims["num_kv_heads"], 0, dims["head_dim"]]
        inputs.append(httpclient.InferInput(name, shape, "FP32"))
        inputs[-1].set_data_from_numpy(np.zeros(shape, np.float32))
    result = client.infer(f"{model}_decoder", inputs)
    # the fused graph computes the last position's logits only
    assert result.as_numpy("logits").shape[:2] == (1, 1 if fused else 3)
    assert result.as_numpy("present.0.key").shape[2] == 3


def test_metrics_are_published(served):
    http_generate(served.http_url, "llm", {"text_input": PROMPT, "max_tokens": 4})
    time.sleep(0.6)  # custom metrics are flushed every 0.25 s
    values = metrics(served.metrics_url)
    for name in ("tritonkit_prompt_tokens_total", "tritonkit_generated_tokens_total",
                 "tritonkit_time_to_first_token_seconds_count",
                 "tritonkit_inter_token_latency_seconds_count"):  # fmt: skip
        assert values[name] > 0
    assert "tritonkit_running_batch_size" in values
