"""Unary (non-streaming) access to the entry model, for clients that cannot stream.

Triton refuses HTTP ``/infer`` and gRPC ``ModelInfer`` on decoupled models, and the
entry model must be decoupled to stream. This small non-decoupled model forwards each
request to the entry model with one BLS call (not one per token: the generation
loop and its KV cache stay inside the entry model, and its requests join the same
in-flight batch) and returns its single response. Several instances serve
concurrent callers, since a non-decoupled model handles one request at a time each.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.entry = config["parameters"]["entry_model"]["string_value"]
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        n = pb_utils.get_input_tensor_by_name(request, "n")
        if n is not None and int(n.as_numpy().reshape(-1)[0]) > 1:
            error = pb_utils.TritonError(
                f"n > 1 sends one response per choice, which a unary call cannot carry: ask "
                f"{self.entry} over a gRPC stream or HTTP generate_stream"
            )
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        tensors = [
            t
            for name in self.inputs
            if name != "stream" and (t := pb_utils.get_input_tensor_by_name(request, name))
        ]
        tensors.append(pb_utils.Tensor("stream", np.array([False])))
        bls = pb_utils.InferenceRequest(
            model_name=self.entry, inputs=tensors, requested_output_names=self.outputs
        )
        for response in bls.exec(decoupled=True):
            if response.has_error():
                return pb_utils.InferenceResponse(output_tensors=[], error=response.error())
            got = [pb_utils.get_output_tensor_by_name(response, n) for n in self.outputs]
            outputs = [o for o in got if o is not None]  # token_logprobs only when asked
            if pb_utils.get_output_tensor_by_name(response, "text_output") is not None:
                return pb_utils.InferenceResponse(output_tensors=outputs)
        error = pb_utils.TritonError(f"{self.entry} sent no response")
        return pb_utils.InferenceResponse(output_tensors=[], error=error)
