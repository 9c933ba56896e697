"""Raw Triton calls for the tests: plain tritonclient and plain HTTP, none of tritonkit's client.

They show the served models work for any Triton client, not only ours.
"""

from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

_TYPES = {
    "text_input": "BYTES",
    "stop_words": "BYTES",
    "sampling_parameters": "BYTES",
    "max_tokens": "INT32",
    "min_tokens": "INT32",
    "min_length": "INT32",
    "top_k": "INT32",
    "stream": "BOOL",
    "exclude_input_in_output": "BOOL",
    "temperature": "FP32",
    "top_p": "FP32",
    "repetition_penalty": "FP32",
    "seed": "UINT64",
    "random_seed": "UINT64",
}
_NP = {"BYTES": np.object_, "INT32": np.int32, "BOOL": np.bool_, "FP32": np.float32,
       "UINT64": np.uint64}  # fmt: skip


def grpc_inputs(fields: dict[str, Any]) -> list[grpcclient.InferInput]:
    """tritonclient InferInputs for the entry model's interface."""
    inputs = []
    for name, value in fields.items():
        dtype = _TYPES[name]
        values = value if isinstance(value, list) else [value]
        if dtype == "BYTES":
            values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
        array = np.array(values, dtype=_NP[dtype])
        inp = grpcclient.InferInput(name, list(array.shape), dtype)
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs


def grpc_stream(url: str, model: str, fields: dict[str, Any], timeout: float = 120) -> dict:
    """One request over gRPC streaming; returns pieces, final fields, or the error."""
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer(model, grpc_inputs(fields), enable_empty_final_response=True)
        pieces: list[str] = []
        while True:
            result, error = responses.get(timeout=timeout)
            if error is not None:
                return {"error": str(error), "pieces": pieces}
            response = result.get_response()
            if response.outputs:
                pieces.append(result.as_numpy("text_output")[0].decode())
                reason = result.as_numpy("finish_reason")[0].decode()
                counts = (
                    int(result.as_numpy("num_input_tokens")[0]),
                    int(result.as_numpy("num_output_tokens")[0]),
                )
            if response.parameters["triton_final_response"].bool_param:
                return {"pieces": pieces, "text": "".join(pieces), "finish_reason": reason,
                        "num_input_tokens": counts[0], "num_output_tokens": counts[1]}  # fmt: skip
    finally:
        client.stop_stream()
        client.close()


def http_generate(url: str, model: str, fields: dict[str, Any], timeout: float = 120) -> dict:
    """POST /v2/models/MODEL/generate; returns the JSON body (``error`` on failure)."""
    request = urllib.request.Request(
        f"http://{url}/v2/models/{model}/generate", data=json.dumps(fields).encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))


def http_generate_stream(url: str, model: str, fields: dict[str, Any]) -> list[dict]:
    """POST /v2/models/MODEL/generate_stream; returns the SSE events' JSON bodies."""
    request = urllib.request.Request(
        f"http://{url}/v2/models/{model}/generate_stream",
        data=json.dumps({**fields, "stream": True}).encode(),
    )
    events = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def metrics(url: str) -> dict[str, float]:
    """tritonkit_* metrics from the metrics port, summed over labels."""
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tritonkit_"):
            name, value = line.rsplit(" ", 1)
            key = name.split("{")[0]
            values[key] = values.get(key, 0.0) + float(value)
    return values


def cancel_mid_stream(server: Any, model: str, prompt: str, timeout: float = 120) -> None:
    """Start a long gRPC stream, read three responses, cancel it, and wait until the
    model counts it cancelled (``tritonkit_cancelled_requests_total``); then one more
    request must be served.

    Raises:
        AssertionError: an error before the cancel, the count never moved within 30 s,
            or the next request failed.
    """
    import time

    before = metrics(server.metrics_url)["tritonkit_cancelled_requests_total"]
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    fields = {"text_input": prompt, "max_tokens": 1500, "min_tokens": 1500, "stream": True}
    client.async_stream_infer(model, grpc_inputs(fields))
    for _ in range(3):
        _, error = responses.get(timeout=timeout)
        assert error is None
    client.stop_stream(cancel_requests=True)
    client.close()
    deadline = time.monotonic() + 30
    while metrics(server.metrics_url)["tritonkit_cancelled_requests_total"] <= before:
        assert time.monotonic() < deadline, "the cancelled request kept generating"
        time.sleep(0.1)
    ok = grpc_stream(server.grpc_url, model, {"text_input": "next", "max_tokens": 4})
    assert "error" not in ok
