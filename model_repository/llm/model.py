"""The entry model: a decoupled python-backend model that serves text generation.

It tokenizes, runs the generation loop with in-flight batching over the exported
ONNX decoder in-process (the KV cache stays resident in onnxruntime; no tensor
crosses a BLS call per step), samples, stops, detokenizes incrementally and streams.
The request interface is the one of Triton's vLLM and TensorRT-LLM backends, so
genai-perf, perf_analyzer, the HTTP generate endpoint and their clients work as is.

This file and ``tritonkit_runtime/`` next to it are copied into the model repository
by ``tritonkit repo build``; inside Triton they import only numpy, onnxruntime and
tokenizers.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tritonkit_runtime.decoder import OnnxDecoder
from tritonkit_runtime.generation import GenerationRequest, Output, coalesce
from tritonkit_runtime.params import RequestError, parse_request
from tritonkit_runtime.scheduler import Scheduler, StepStats

INPUTS = (
    "text_input", "max_tokens", "min_tokens", "min_length", "stream",
    "exclude_input_in_output", "temperature", "top_k", "top_p", "seed", "random_seed",
    "repetition_penalty", "stop_words", "sampling_parameters",
)  # fmt: skip
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class Metrics:
    """Prometheus metrics next to Triton's own, through the custom-metrics API."""

    def __init__(self, labels: dict[str, str]) -> None:
        self._families: list[Any] = []  # a family must outlive its metrics

        def family(name: str, kind: Any, description: str) -> Any:
            fam = pb_utils.MetricFamily(name=name, description=description, kind=kind)
            self._families.append(fam)
            return fam.Metric(labels=labels)

        counter, gauge = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        self.requests = family("tritonkit_requests_total", counter, "Requests accepted")
        self.failures = family("tritonkit_request_failures_total", counter, "Requests rejected")
        self.cancelled = family("tritonkit_cancelled_requests_total", counter, "Requests cancelled")
        self.prompt_tokens = family("tritonkit_prompt_tokens_total", counter, "Prompt tokens")
        self.generated = family("tritonkit_generated_tokens_total", counter, "Generated tokens")
        self.ttft_sum = family(
            "tritonkit_time_to_first_token_seconds_sum", counter, "Sum of time to first token"
        )
        self.ttft_count = family(
            "tritonkit_time_to_first_token_seconds_count", counter, "Requests with a first token"
        )
        self.itl_sum = family(
            "tritonkit_inter_token_latency_seconds_sum", counter, "Sum of inter-token latencies"
        )
        self.itl_count = family(
            "tritonkit_inter_token_latency_seconds_count", counter, "Inter-token intervals"
        )
        self.batch = family("tritonkit_running_batch_size", gauge, "Sequences in the batch")
        self.waiting = family("tritonkit_waiting_requests", gauge, "Requests waiting to join")
        self.steps = family("tritonkit_decode_steps_total", counter, "Batched decode steps")
        self.rows = family(
            "tritonkit_decode_rows_total", counter, "Sequences advanced by decode steps (sum)"
        )


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_dir = args["model_repository"]
        version_dir = os.path.join(model_dir, args["model_version"])
        repo_root = os.path.dirname(os.path.abspath(model_dir))
        # This version's graph: NAME/V/decoder.json names the decoder model and version.
        with open(os.path.join(version_dir, "decoder.json")) as f:
            ref = json.load(f)
        decoder_path = os.path.join(
            repo_root, ref["model"], str(ref["version"]), ref.get("file", "model.onnx")
        )
        tokenizer_dir = os.path.join(version_dir, "tokenizer")
        self.tokenizer = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        with open(os.path.join(tokenizer_dir, "generation.json")) as f:
            settings = json.load(f)
        self.eos = list(settings["eos_token_ids"])
        self.max_context = int(params.get("max_context") or settings["max_context"])

        gpu = args.get("model_instance_kind") == "GPU"
        providers = None  # CPU
        if gpu:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if params.get("execution_provider") == "tensorrt":
                providers.insert(0, "TensorrtExecutionProvider")
        threads = params.get("intra_op_threads", "auto")
        decoder = OnnxDecoder(
            decoder_path,
            providers,
            intra_op_threads=None if threads == "auto" else int(threads),
            device_id=int(args.get("model_instance_device_id") or 0),
        )
        self.metrics = Metrics({"model": args["model_name"], "version": args["model_version"]})
        self.scheduler = Scheduler(
            decoder, max_batch_size=int(params.get("max_batch_size", "16")), on_step=self._on_step
        )
        # Responses leave through their own thread: a send is an IPC round trip to the
        # server, and the decode loop should not wait for it (streaming 2x faster here).
        self._outbox: queue.Queue[tuple[Any, Output] | None] = queue.Queue()
        self._responder = threading.Thread(target=self._respond, name="tritonkit-responder")
        self._responder.start()
        self.scheduler.start()
        self.logger = pb_utils.Logger
        self.logger.log_info(
            f"tritonkit: {args['model_name']} serving {decoder_path} on {decoder.device} "
            f"(context {self.max_context}, batch up to {self.scheduler.max_batch_size})"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                inputs = {}
                for name in INPUTS:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        inputs[name] = tensor.as_numpy()
                params = parse_request(inputs)
                ids = self.tokenizer.encode(params.prompt).ids
                seq = GenerationRequest(
                    params,
                    ids,
                    self.tokenizer,
                    self.eos,
                    self.max_context,
                    emit=lambda out, s=sender: self._outbox.put((s, out)),
                    is_cancelled=sender.is_cancelled,
                    on_done=self._on_done,
                )
            except RequestError as exc:
                self.metrics.failures.increment(1)
                self._send(sender, Output("", final=True, error=str(exc)))
                continue
            except Exception as exc:  # a bug must fail this request only
                self.metrics.failures.increment(1)
                self._send(sender, Output("", final=True, error=f"internal error: {exc}"))
                continue
            self.metrics.requests.increment(1)
            self.metrics.prompt_tokens.increment(len(ids))
            self.scheduler.submit(seq)
        return None

    def _respond(self) -> None:
        stopping = False
        while not stopping:
            items = [self._outbox.get()]
            while True:  # take whatever else is waiting, to merge each request's pieces
                try:
                    items.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            if None in items:
                stopping = True
                items = [i for i in items if i is not None]
            for sender, out in coalesce(items):
                try:
                    self._send(sender, out)
                except Exception as exc:  # a vanished client must not stop the responder
                    pb_utils.Logger.log_warn(f"tritonkit: could not send a response: {exc}")

    def _send(self, sender: Any, out: Output) -> None:
        if out.cancelled:
            self.metrics.cancelled.increment(1)
            sender.send(flags=FINAL)
            return
        if out.error is not None:
            error = pb_utils.TritonError(out.error)
            sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=FINAL)
            return
        tensors = [
            pb_utils.Tensor("text_output", np.array([out.text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor(
                "finish_reason", np.array([out.finish_reason.encode()], dtype=np.object_)
            ),
            pb_utils.Tensor("num_input_tokens", np.array([out.num_input_tokens], np.uint32)),
            pb_utils.Tensor("num_output_tokens", np.array([out.num_output_tokens], np.uint32)),
        ]
        sender.send(
            pb_utils.InferenceResponse(output_tensors=tensors), flags=FINAL if out.final else 0
        )
        if out.final:
            self.metrics.generated.increment(out.num_output_tokens)

    def _on_step(self, stats: StepStats) -> None:
        self.metrics.batch.set(stats.batch_size)
        self.metrics.waiting.set(stats.waiting)
        if stats.decoded_rows:
            self.metrics.steps.increment(1)
            self.metrics.rows.increment(stats.decoded_rows)

    def _on_done(self, seq: GenerationRequest) -> None:
        t = seq.timing
        if t.first_token is not None:
            self.metrics.ttft_sum.increment(t.first_token - t.submitted)
            self.metrics.ttft_count.increment(1)
        if t.inter_token:
            self.metrics.itl_sum.increment(float(sum(t.inter_token)))
            self.metrics.itl_count.increment(len(t.inter_token))

    def finalize(self) -> None:
        self.scheduler.stop(timeout=float(os.environ.get("TRITONKIT_DRAIN_SECONDS", "30")))
        self._outbox.put(None)
        self._responder.join(timeout=10)
