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
from typing import Any, ClassVar

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tritonkit_runtime.engines import open_engine
from tritonkit_runtime.generation import GenerationRequest, Output, coalesce
from tritonkit_runtime.params import RequestError, parse_request
from tritonkit_runtime.scheduler import DEFAULT_PREFILL_CHUNK, Scheduler, StepStats

INPUTS = (
    "text_input", "max_tokens", "min_tokens", "min_length", "stream",
    "exclude_input_in_output", "temperature", "top_k", "top_p", "seed", "random_seed",
    "repetition_penalty", "stop_words", "sampling_parameters",
)  # fmt: skip
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class Metrics:
    """Prometheus metrics next to Triton's own, through the custom-metrics API.

    Each update of a custom metric is an IPC round trip to the server (profiled: four
    per step took a quarter of the decode loop), so updates are gathered here and a
    thread flushes them every FLUSH_S seconds.
    """

    FLUSH_S = 0.25

    COUNTERS: ClassVar[dict[str, tuple[str, str]]] = {
        "requests": ("tritonkit_requests_total", "Requests accepted"),
        "failures": ("tritonkit_request_failures_total", "Requests rejected"),
        "cancelled": ("tritonkit_cancelled_requests_total", "Requests cancelled"),
        "prompt_tokens": ("tritonkit_prompt_tokens_total", "Prompt tokens"),
        "generated": ("tritonkit_generated_tokens_total", "Generated tokens"),
        "ttft_sum": ("tritonkit_time_to_first_token_seconds_sum", "Sum of time to first token"),
        "ttft_count": ("tritonkit_time_to_first_token_seconds_count", "Requests with a token"),
        "itl_sum": ("tritonkit_inter_token_latency_seconds_sum", "Sum of inter-token latencies"),
        "itl_count": ("tritonkit_inter_token_latency_seconds_count", "Inter-token intervals"),
        "steps": ("tritonkit_decode_steps_total", "Batched decode steps"),
        "rows": ("tritonkit_decode_rows_total", "Sequences advanced by decode steps (sum)"),
    }
    GAUGES: ClassVar[dict[str, tuple[str, str]]] = {
        "batch": ("tritonkit_running_batch_size", "Sequences in the running batch"),
        "waiting": ("tritonkit_waiting_requests", "Requests waiting to join the batch"),
    }

    def __init__(self, labels: dict[str, str]) -> None:
        self._families: list[Any] = []  # a family must outlive its metrics
        self._metrics: dict[str, Any] = {}
        for kind, table in (
            (pb_utils.MetricFamily.COUNTER, self.COUNTERS),
            (pb_utils.MetricFamily.GAUGE, self.GAUGES),
        ):
            for key, (name, description) in table.items():
                family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
                self._families.append(family)
                self._metrics[key] = family.Metric(labels=labels)
        self._lock = threading.Lock()
        self._deltas: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritonkit-metrics", daemon=True)
        self._thread.start()

    def add(self, key: str, value: float = 1.0) -> None:
        """Increment counter ``key`` by ``value`` (flushed later)."""
        with self._lock:
            self._deltas[key] = self._deltas.get(key, 0.0) + value

    def set(self, key: str, value: float) -> None:
        """Set gauge ``key`` (flushed later)."""
        with self._lock:
            self._gauges[key] = value

    def flush(self) -> None:
        with self._lock:
            deltas, gauges = self._deltas, self._gauges
            self._deltas, self._gauges = {}, {}
        for key, value in deltas.items():
            self._metrics[key].increment(value)
        for key, value in gauges.items():
            self._metrics[key].set(value)

    def _run(self) -> None:
        while not self._stop.wait(self.FLUSH_S):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


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
        with open(os.path.join(tokenizer_dir, "export.json")) as f:
            report = json.load(f)  # which graph (fused or concat), its dims and dtype
        self.eos = list(settings["eos_token_ids"])
        self.max_context = int(params.get("max_context") or settings["max_context"])

        gpu = args.get("model_instance_kind") == "GPU"
        providers = None  # CPU
        if gpu:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if params.get("execution_provider") == "tensorrt":
                providers.insert(0, "TensorrtExecutionProvider")
        threads = params.get("intra_op_threads", "auto")
        max_batch = int(params.get("max_batch_size", "16"))
        engine = open_engine(
            decoder_path,
            report,
            max_rows=max_batch,
            max_context=self.max_context,
            providers=providers,
            intra_op_threads=None if threads == "auto" else int(threads),
            device_id=int(args.get("model_instance_device_id") or 0),
        )
        self.metrics = Metrics({"model": args["model_name"], "version": args["model_version"]})
        self.scheduler = Scheduler(
            engine,
            max_batch_size=max_batch,
            prefill_chunk=int(params.get("prefill_chunk") or DEFAULT_PREFILL_CHUNK),
            on_step=self._on_step,
        )
        # Responses leave through their own thread: a send is an IPC round trip to the
        # server, and the decode loop should not wait for it (streaming 2x faster here).
        self._outbox: queue.Queue[tuple[Any, Output] | None] = queue.Queue()
        self._responder = threading.Thread(target=self._respond, name="tritonkit-responder")
        self._responder.start()
        self.scheduler.start()
        self.logger = pb_utils.Logger
        self.logger.log_info(
            f"tritonkit: {args['model_name']} serving {decoder_path} ({report.get('graph')} "
            f"graph, {type(engine).__name__}; context {self.max_context}, batch up to {max_batch})"
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
                self.metrics.add("failures")
                self._send(sender, Output("", final=True, error=str(exc)))
                continue
            except Exception as exc:  # a bug must fail this request only
                self.metrics.add("failures")
                self._send(sender, Output("", final=True, error=f"internal error: {exc}"))
                continue
            self.metrics.add("requests")
            self.metrics.add("prompt_tokens", len(ids))
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
            self.metrics.add("cancelled")
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
            self.metrics.add("generated", out.num_output_tokens)

    def _on_step(self, stats: StepStats) -> None:
        self.metrics.set("batch", stats.batch_size)
        self.metrics.set("waiting", stats.waiting)
        if stats.decoded_rows:
            self.metrics.add("steps")
            self.metrics.add("rows", stats.decoded_rows)

    def _on_done(self, seq: GenerationRequest) -> None:
        t = seq.timing
        if t.first_token is not None:
            self.metrics.add("ttft_sum", t.first_token - t.submitted)
            self.metrics.add("ttft_count")
        if t.inter_token:
            self.metrics.add("itl_sum", float(sum(t.inter_token)))
            self.metrics.add("itl_count", len(t.inter_token))

    def finalize(self) -> None:
        self.scheduler.stop(timeout=float(os.environ.get("TRITONKIT_DRAIN_SECONDS", "30")))
        self._outbox.put(None)
        self._responder.join(timeout=10)
        self.metrics.close()
