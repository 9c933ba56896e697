"""The entry model: a decoupled python-backend model that serves text generation.

It tokenizes, runs the generation loop (in-flight batching, chunked prefill) over the
exported ONNX decoder in-process, samples, stops, detokenizes incrementally and streams.
The engine follows the export's graph: fused attention over preallocated KV rows, or
the concat graph (``tritonkit_runtime/engines.py``); no tensor crosses a BLS call per
step. The logic lives in the pure modules of ``tritonkit_runtime/`` (scheduler, metrics
buffer, responder thread), tested without a server; this file only binds them to Triton.
The request interface is the one of Triton's vLLM and TensorRT-LLM backends, so
genai-perf, perf_analyzer, the HTTP generate endpoint and their clients work as is.

This file and ``tritonkit_runtime/`` next to it are copied into the model repository
by ``tritonkit repo build``; inside Triton they import only numpy, onnxruntime,
tokenizers and llguidance (constrained decoding and token bytes for logprobs; without
it, constrained requests are refused and logprobs name tokens by their decoded text).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from typing import Any

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tritonkit_runtime.constraints import Grammars
from tritonkit_runtime.engines import open_engine, tensorrt_provider_options
from tritonkit_runtime.generation import ChoiceGroup, GenerationRequest, Output
from tritonkit_runtime.layout import (
    GENERATION_FILE,
    TOKENIZER_FILE,
    read_decoder_ref,
    read_export_report,
    tokenizer_dir,
)
from tritonkit_runtime.metrics import BufferedMetrics
from tritonkit_runtime.params import RequestError, parse_request
from tritonkit_runtime.responder import Responder
from tritonkit_runtime.scheduler import (
    DEFAULT_MAX_WAITING,
    DEFAULT_PREFILL_CHUNK,
    STALL_FACTOR,
    Scheduler,
    StepStats,
)
from tritonkit_runtime.triton_io import (
    ChoiceKey,
    metric_factory,
    request_inputs,
    send_output,
)


def _providers(gpu: bool, execution_provider: str) -> list[str] | None:
    """onnxruntime providers for this instance: None (CPU) or CUDA, TensorRT first if asked."""
    if not gpu:
        return None
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if execution_provider == "tensorrt":
        providers.insert(0, "TensorrtExecutionProvider")
    return providers


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_dir = args["model_repository"]
        version_dir = os.path.join(model_dir, args["model_version"])
        repo_root = os.path.dirname(os.path.abspath(model_dir))
        # The request interface is the config's (written from interface.ENTRY_INPUTS).
        self.inputs = [i["name"] for i in config["input"]]
        # This version's graph: NAME/V/decoder.json names the decoder model and version.
        decoder_path = str(read_decoder_ref(version_dir).graph_path(repo_root))
        tokenizer_files = tokenizer_dir(version_dir)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_files / TOKENIZER_FILE))
        settings = json.loads((tokenizer_files / GENERATION_FILE).read_text(encoding="utf-8"))
        report = read_export_report(tokenizer_files)  # which graph, its dims and dtype
        self.eos = list(settings["eos_token_ids"])
        self.vocab_size = report.dims.vocab_size  # the logits' width
        # Constrained decoding (llguidance); built once, off the decode loop.
        self.grammars: Grammars | None = None
        self.no_grammars = "llguidance is not installed in this server's Python environment"
        try:
            self.grammars = Grammars(
                (tokenizer_files / TOKENIZER_FILE).read_text(encoding="utf-8"),
                self.vocab_size,
                self.eos,
            )
        except ImportError:
            pass
        except Exception as exc:  # a tokenizer llguidance cannot read: serve without it
            self.no_grammars = f"llguidance cannot read this model's tokenizer ({exc})"
        self.max_context = int(params.get("max_context") or settings["max_context"])

        gpu = args.get("model_instance_kind") == "GPU"
        providers = _providers(gpu, params.get("execution_provider", "cuda"))
        threads = params.get("intra_op_threads", "auto")
        max_batch = int(params.get("max_batch_size", "16"))
        self.max_batch = max_batch
        options = None
        if providers and "TensorrtExecutionProvider" in providers:
            cache = params.get("tensorrt_cache_dir") or os.path.join(
                tempfile.gettempdir(), "tritonkit-trt", args["model_name"], args["model_version"]
            )
            os.makedirs(cache, exist_ok=True)
            options = {
                "TensorrtExecutionProvider": tensorrt_provider_options(
                    report, max_batch, self.max_context, cache
                )
            }
        # On a GPU instance the engine must run on the GPU: a CUDA provider that cannot
        # start fails the load here, naming the cause, instead of serving from the CPU.
        engine = open_engine(
            decoder_path,
            report,
            max_rows=max_batch,
            max_context=self.max_context,
            providers=providers,
            intra_op_threads=None if threads == "auto" else int(threads),
            device_id=int(args.get("model_instance_device_id") or 0),
            provider_options=options,
            prefix_cache=params.get("prefix_cache", "true") == "true",
        )
        self.engine = engine
        self._prefix_seen = {"hits": 0, "misses": 0, "evictions": 0, "cached_tokens": 0}
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self._families: list[Any] = []
        self.metrics = BufferedMetrics(metric_factory(pb_utils, labels, self._families))
        self.metrics.set("broken", 0)
        self.scheduler = Scheduler(
            engine,
            max_batch_size=max_batch,
            prefill_chunk=int(params.get("prefill_chunk") or DEFAULT_PREFILL_CHUNK),
            on_step=self._on_step,
            max_waiting=int(params.get("max_waiting") or DEFAULT_MAX_WAITING),
            on_broken=self._on_broken,
            stall_factor=float(params.get("stall_factor") or STALL_FACTOR),
        )
        self.responder = Responder(
            self._send,
            on_error=lambda exc: pb_utils.Logger.log_warn(
                f"tritonkit: could not send a response: {exc}"
            ),
        )
        self.scheduler.start()
        self.logger = pb_utils.Logger
        self.logger.log_info(
            f"tritonkit: {args['model_name']} serving {decoder_path} ({report.graph} "
            f"graph, {type(engine).__name__}; context {self.max_context}, batch up to {max_batch})"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                params = parse_request(request_inputs(pb_utils, request, self.inputs))
                ids = self.tokenizer.encode(params.prompt).ids
                seq = self._choices(params, ids, sender)
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

    def _choices(self, params: Any, ids: list[int], sender: Any) -> GenerationRequest:
        """The request's first choice, the others (n > 1) attached as its forks.

        Raises:
            RequestError: n above the rows this instance has, or a constraint that
                cannot be applied or compiled.
        """
        n = params.n
        if n > self.max_batch:
            raise RequestError(
                f"n={n} needs {n} KV rows at once; this model instance has {self.max_batch} "
                f"(its max_batch_size): ask for at most {self.max_batch}"
            )
        guide = params.guide()
        if guide is not None and self.grammars is None:
            raise RequestError(
                f"{guide[0]} cannot be applied: {self.no_grammars}; install llguidance "
                "(tritonkit/versions.py pins it) or send the request without it"
            )
        group = ChoiceGroup(n) if n > 1 else None
        choices = []
        for i in range(n):
            own = params
            if i and params.seed is not None:  # seed + i: each choice its own, reproducible
                own = dataclasses.replace(params, seed=(params.seed + i) % 2**64)
            key = sender if group is None else ChoiceKey(sender, group)
            constraint = None
            if guide is not None and self.grammars is not None:
                constraint = self.grammars.constraint(*guide)  # compiled here, cached
            choices.append(
                GenerationRequest(
                    own,
                    ids,
                    self.tokenizer,
                    self.eos,
                    self.max_context,
                    emit=lambda out, k=key: self.responder.put(k, out),
                    is_cancelled=sender.is_cancelled,
                    on_done=self._on_done,
                    constraint=constraint,
                    token_bytes=None if self.grammars is None else self.grammars.token_bytes,
                    vocab_size=self.vocab_size,
                    index=i,
                )
            )
        choices[0].forks = choices[1:]
        return choices[0]

    def _send(self, key: Any, out: Output) -> None:
        what = send_output(pb_utils, key, out)
        if what == "cancelled":
            self.metrics.add("cancelled")
        elif what == "final":
            self.metrics.add("generated", out.num_output_tokens)

    def _on_broken(self, why: str) -> None:
        self.metrics.set("broken", 1)
        pb_utils.Logger.log_error(f"tritonkit: {why}")

    def _on_step(self, stats: StepStats) -> None:
        self.metrics.set("batch", stats.batch_size)
        self.metrics.set("waiting", stats.waiting)
        if stats.decoded_rows:
            self.metrics.add("steps")
            self.metrics.add("rows", stats.decoded_rows)
        if stats.prefilled:
            self.metrics.add("prefill_tokens", stats.prefilled)
        prefix = getattr(self.engine, "stats", None)  # the fused engine's prefix cache
        if prefix is not None:
            for key, seen in self._prefix_seen.items():
                now = getattr(prefix, key)
                if now != seen:
                    self.metrics.add("prefix_" + key if key != "cached_tokens" else key, now - seen)
                    self._prefix_seen[key] = now
            self.metrics.set("kept_rows", prefix.kept)

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
        self.responder.close()
        self.metrics.close()
