"""Test fixture: a toy decoupled "llm" with the real model's inputs and outputs.

Its config is generated from the real model's interface declaration
(``toy_config`` in ``tests/servers.py``). It "generates" by echoing the prompt's words
back, one word (" word") per step, until the words run out (finish_reason "stop"),
``max_tokens`` is reached ("length"), or the next word is one of ``stop_words``
("stop", once ``min_tokens`` are out). Sampling
inputs are accepted and ignored. Between steps it sleeps ``piece_delay_s`` (config
parameter) and checks ``is_cancelled()``, logging "toy llm: cancelled after N pieces"
so tests can see a client's cancellation reach the server.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
DEFAULT_MAX_TOKENS = 16


def read_params(request: Any, names: list[str]) -> dict[str, Any]:
    """The request's inputs ``names`` as Python values; sampling_parameters (JSON) fills
    the gaps."""
    params: dict[str, Any] = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            continue
        values = tensor.as_numpy().reshape(-1)
        if name == "stop_words":
            params["stop"] = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        elif values.dtype == np.object_:
            v = values[0]
            params[name] = v.decode() if isinstance(v, bytes) else str(v)
        else:
            params[name] = values[0].item()
    if "sampling_parameters" in params:
        extra = json.loads(params.pop("sampling_parameters") or "{}")
        if isinstance(extra.get("stop"), str):
            extra["stop"] = [extra["stop"]]
        for key, value in extra.items():
            params.setdefault(key, value)
    return params


def plan(prompt: str, params: dict[str, Any]) -> tuple[list[str], str]:
    """The pieces the toy model "generates" for ``prompt`` and the finish reason."""
    max_tokens = int(params.get("max_tokens", DEFAULT_MAX_TOKENS))
    min_tokens = int(params.get("min_tokens", 0))
    stop = set(params.get("stop") or ())
    pieces: list[str] = []
    for word in prompt.split():
        if len(pieces) >= max_tokens:
            return pieces, "length"
        if word in stop and len(pieces) >= min_tokens:
            return pieces, "stop"
        pieces.append(" " + word)
    return pieces, "stop"


def make_response(text: str, finish: str, n_in: int, n_out: int) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_)),
            pb_utils.Tensor("finish_reason", np.array([finish.encode()], dtype=np.object_)),
            pb_utils.Tensor("num_input_tokens", np.array([n_in], dtype=np.uint32)),
            pb_utils.Tensor("num_output_tokens", np.array([n_out], dtype=np.uint32)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        delay = config.get("parameters", {}).get("piece_delay_s", {}).get("string_value", "0")
        self.delay = float(delay)
        self.inputs = [i["name"] for i in config["input"]]  # as the real entry model does
        self.logger = pb_utils.Logger

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self.generate(request, sender)
            except Exception as exc:  # one bad request never fails the others
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
        return None

    def generate(self, request: Any, sender: Any) -> None:
        params = read_params(request, self.inputs)
        prompt = params.get("text_input", "")
        if not prompt.split():
            error = pb_utils.TritonError(
                "text_input is empty: send a prompt with at least one word"
            )
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            return
        pieces, finish = plan(prompt, params)
        n_in = len(prompt.split())
        stream = bool(params.get("stream", False))
        for i, piece in enumerate(pieces):
            if sender.is_cancelled():
                self.logger.log_info(f"toy llm: cancelled after {i} pieces")
                sender.send(flags=FINAL)
                return
            time.sleep(self.delay)
            if stream:
                last = i == len(pieces) - 1
                response = make_response(piece, finish if last else "", n_in, i + 1)
                sender.send(response, flags=FINAL if last else 0)
        if stream and pieces:
            return
        if stream:
            text = ""
        elif params.get("exclude_input_in_output", False):
            text = "".join(pieces)
        else:
            text = prompt + "".join(pieces)
        sender.send(make_response(text, finish, n_in, len(pieces)), flags=FINAL)
