"""Responses and metrics through Triton's python backend, shared by both entry models.

The onnxruntime entry model (``llm/model.py``) and the vLLM one (``vllm/model.py``) send
the same outputs for the same ``Output``, so every client, the gateway and perf read
either. ``pb`` is ``triton_python_backend_utils``, passed in: this module imports nothing
of Triton's, and tests pass a stand-in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .generation import ChoiceGroup, Output
from .metrics import MetricFactory


@dataclass(eq=False)
class ChoiceKey:
    """One choice of a request with n > 1: its responses go out through ``sender``,
    their final flag decided by ``group``. A key of its own, so the responder merges
    the pieces of one choice only."""

    sender: Any
    group: ChoiceGroup


def request_inputs(pb: Any, request: Any, names: list[str]) -> dict[str, np.ndarray]:
    """The request's tensors among ``names`` (those it sent) as numpy arrays."""
    inputs = {}
    for name in names:
        tensor = pb.get_input_tensor_by_name(request, name)
        if tensor is not None:
            inputs[name] = tensor.as_numpy()
    return inputs


def metric_factory(pb: Any, labels: dict[str, str], families: list[Any]) -> MetricFactory:
    """A ``BufferedMetrics`` factory over Triton's custom metrics API."""

    def make(name: str, description: str, kind: str) -> Any:
        family = pb.MetricFamily(
            name=name,
            description=description,
            kind=pb.MetricFamily.COUNTER if kind == "counter" else pb.MetricFamily.GAUGE,
        )
        families.append(family)  # a family must outlive its metrics
        return family.Metric(labels=labels)

    return make


def response_tensors(pb: Any, out: Output) -> list[Any]:
    """The output tensors of one response, (1,) each."""
    tensors = [
        pb.Tensor("text_output", np.array([out.text.encode("utf-8")], dtype=np.object_)),
        pb.Tensor("finish_reason", np.array([out.finish_reason.encode()], dtype=np.object_)),
        pb.Tensor("num_input_tokens", np.array([out.num_input_tokens], np.uint32)),
        pb.Tensor("num_output_tokens", np.array([out.num_output_tokens], np.uint32)),
        pb.Tensor("cached_tokens", np.array([out.cached_tokens], np.uint32)),
        pb.Tensor("index", np.array([out.index], np.uint32)),
    ]
    if out.logprobs is not None:  # one JSON list per response
        entries = json.dumps(out.logprobs, separators=(",", ":")).encode()
        tensors.append(pb.Tensor("token_logprobs", np.array([entries], np.object_)))
    return tensors


def send_output(pb: Any, key: Any, out: Output) -> str | None:
    """Send ``out`` for the request ``key`` (its response sender, or a ``ChoiceKey``).

    Returns what happened, for the caller's metrics: "cancelled", "error", "final"
    (the request's last response), or None.
    """
    sender, final = key, out.final
    if isinstance(key, ChoiceKey):
        sender = key.sender
        send, final = key.group.route(out)
        if not send:
            return None
    flag = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    if out.cancelled:
        sender.send(flags=flag)
        return "cancelled"
    if out.error is not None:
        error = pb.TritonError(out.error)
        sender.send(pb.InferenceResponse(output_tensors=[], error=error), flags=flag)
        return "error"
    response = pb.InferenceResponse(output_tensors=response_tensors(pb, out))
    sender.send(response, flags=flag if final else 0)
    return "final" if out.final else None
