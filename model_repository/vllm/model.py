"""The vLLM entry model: tritonkit's request interface served by vLLM's async engine.

The same decoupled python-backend model as ``llm/model.py`` on the outside (the inputs
and outputs of ``interface.py``, streaming, stop strings, cancellation, the tritonkit_*
metric names), so every client, the gateway and ``tritonkit perf`` work against either
engine. Inside, vLLM (paged attention, continuous batching, prefix caching, structured
outputs through llguidance, n) generates; requests are parsed by the same
``params.parse_request`` and mapped by ``vllm_params.py``, so both engines refuse the same
requests with the same one-line errors.

vLLM runs on an asyncio loop in a thread of its own; its engine core is a child process
(started with ``spawn`` from this stub's interpreter). Responses leave through the same
``Responder`` thread as the other engine's. Copied into the repository by
``tritonkit repo build --engine vllm``; needs an environment with vLLM, numpy < 2 and
tokenizers first on the server's PATH (``tritonkit serve`` sets it up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import locale
import os
import sys
import threading
import time
import uuid
from typing import Any

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tritonkit_runtime.generation import CANCEL_POLL_S, ChoiceGroup, Output
from tritonkit_runtime.layout import HF_DIR
from tritonkit_runtime.metrics import BufferedMetrics
from tritonkit_runtime.params import RequestError, parse_request, resolve_max_new_tokens
from tritonkit_runtime.responder import Responder
from tritonkit_runtime.triton_io import (
    ChoiceKey,
    metric_factory,
    request_inputs,
    send_output,
)
from tritonkit_runtime.vllm_params import (
    FINISH_REASONS,
    logprob_entries,
    sampling_kwargs,
    structured_kwargs,
)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        # The stub's embedded interpreter starts in the C locale (ASCII); torch and vLLM
        # read their UTF-8 source templates with the default encoding (checked: vLLM's
        # import fails with UnicodeDecodeError without this).
        with contextlib.suppress(locale.Error):
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        hf = os.path.join(version_dir, HF_DIR)
        self.inputs = [i["name"] for i in config["input"]]
        self.tokenizer = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
        self.max_context = int(params["max_context"])
        self.max_batch = int(params.get("max_batch_size", "16"))
        gpu = args.get("model_instance_kind") == "GPU"
        if not gpu:  # GiB of KV cache on the CPU (vLLM's own variable wins when set)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", params.get("cpu_kv_cache_gib", "1"))

        from vllm.engine.arg_utils import AsyncEngineArgs

        engine_args = AsyncEngineArgs(
            model=hf,
            tokenizer=hf,
            served_model_name=args["model_name"],
            dtype=params.get("dtype", "auto"),
            max_model_len=self.max_context,
            max_num_seqs=self.max_batch,
            enable_prefix_caching=params.get("prefix_cache", "true") == "true",
            enforce_eager=params.get("enforce_eager", "false") == "true",
            gpu_memory_utilization=float(params.get("gpu_memory_utilization", "0.9")),
            structured_outputs_config={"backend": "guidance"},  # llguidance, as the other
            disable_log_stats=True,
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="tritonkit-vllm-loop", daemon=True
        )
        self._thread.start()
        self.engine = self._call(self._start(engine_args))

        labels = {"model": args["model_name"], "version": args["model_version"]}
        self._families: list[Any] = []
        self.metrics = BufferedMetrics(metric_factory(pb_utils, labels, self._families))
        self.metrics.set("broken", 0)
        self.responder = Responder(
            self._send,
            on_error=lambda exc: pb_utils.Logger.log_warn(
                f"tritonkit: could not send a response: {exc}"
            ),
        )
        self._running: dict[str, Any] = {}  # request id -> response sender (cancel watch)
        self._cancelled: set[str] = set()
        self._watch = asyncio.run_coroutine_threadsafe(self._watch_cancels(), self.loop)
        pb_utils.Logger.log_info(
            f"tritonkit: {args['model_name']} serving {hf} with vLLM "
            f"(context {self.max_context}, batch up to {self.max_batch})"
        )

    def _call(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the engine's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _start(self, engine_args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(engine_args)

    def execute(self, requests: list[Any]) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        for request in requests:
            sender = request.get_response_sender()
            try:
                params = parse_request(request_inputs(pb_utils, request, self.inputs))
                ids = self.tokenizer.encode(params.prompt).ids
                max_new = resolve_max_new_tokens(params, len(ids), self.max_context)
                if params.n > self.max_batch:
                    raise RequestError(
                        f"n={params.n} needs {params.n} sequences at once; this model runs "
                        f"at most {self.max_batch} (its max_batch_size): ask for fewer"
                    )
                guide = structured_kwargs(params)
                try:
                    sampling = SamplingParams(
                        **sampling_kwargs(params, max_new),
                        output_kind=RequestOutputKind.DELTA
                        if params.stream
                        else RequestOutputKind.FINAL_ONLY,
                        structured_outputs=None
                        if guide is None
                        else StructuredOutputsParams(**guide),
                    )
                except (ValueError, TypeError) as exc:  # vLLM's own checks
                    raise RequestError(str(exc).splitlines()[0]) from exc
            except RequestError as exc:
                self.metrics.add("failures")
                self.responder.put(sender, Output("", final=True, error=str(exc)))
                continue
            except Exception as exc:  # a bug must fail this request only
                self.metrics.add("failures")
                self.responder.put(sender, Output("", final=True, error=f"internal error: {exc}"))
                continue
            self.metrics.add("requests")
            self.metrics.add("prompt_tokens", len(ids))
            asyncio.run_coroutine_threadsafe(
                self._generate(sender, params, ids, sampling), self.loop
            )
        return None

    async def _generate(self, sender: Any, params: Any, ids: list[int], sampling: Any) -> None:
        """Stream one request's outputs to the responder until every choice ends."""
        from vllm.inputs import TokensPrompt

        rid = uuid.uuid4().hex
        group = ChoiceGroup(params.n) if params.n > 1 else None
        keys = [sender if group is None else ChoiceKey(sender, group) for _ in range(params.n)]
        counts = [0] * params.n
        submitted = time.perf_counter()
        last: float | None = None
        self._running[rid] = sender
        try:
            stream = self.engine.generate(TokensPrompt(prompt_token_ids=ids), sampling, rid)
            async for result in stream:
                if rid in self._cancelled:
                    break
                now = time.perf_counter()
                if last is None:
                    self.metrics.add("ttft_sum", now - submitted)
                    self.metrics.add("ttft_count")
                else:
                    self.metrics.add("itl_sum", now - last)
                    self.metrics.add("itl_count")
                last = now
                cached = int(result.num_cached_tokens or 0)
                for choice in result.outputs:
                    self._emit(keys, counts, params, ids, cached, choice)
        except Exception as exc:  # the engine failed this request: one error, the end
            if rid not in self._cancelled:
                self.metrics.add("failures")
                self.responder.put(sender, Output("", final=True, error=_one_line(exc)))
                return
        finally:
            self._running.pop(rid, None)
        if rid in self._cancelled:
            self._cancelled.discard(rid)
            self.metrics.add("cancelled")
            self.responder.put(sender, Output("", final=True, cancelled=True))

    def _emit(
        self,
        keys: list[Any],
        counts: list[int],
        params: Any,
        ids: list[int],
        cached: int,
        choice: Any,
    ) -> None:
        """Queue one choice's new text (streaming) or its whole text (not streaming)."""
        i = choice.index
        finished = choice.finish_reason is not None
        token_ids, token_logprobs = list(choice.token_ids), choice.logprobs
        if finished and choice.finish_reason == "stop" and not isinstance(choice.stop_reason, str):
            # Ended by the model's end-of-sequence token, which vLLM keeps in token_ids:
            # as in tritonkit's engine it is not part of the answer, its count or logprobs.
            token_ids = token_ids[:-1]
            token_logprobs = token_logprobs[:-1] if token_logprobs else token_logprobs
        counts[i] += len(token_ids)
        text = choice.text
        if not params.stream and not params.exclude_input_in_output:
            text = params.prompt + text
        if not text and not finished:
            return
        logprobs = None
        if params.logprobs is not None:
            logprobs = logprob_entries(token_ids, token_logprobs, params.logprobs)
        out = Output(
            text,
            final=finished,
            finish_reason=FINISH_REASONS.get(choice.finish_reason or "", "stop")
            if finished
            else "",
            num_input_tokens=len(ids),
            num_output_tokens=counts[i],
            cached_tokens=cached,
            index=i,
            logprobs=logprobs,
        )
        if finished:
            self.metrics.add("generated", counts[i])
            self.metrics.add("cached_tokens", cached)
            self.metrics.add("prefix_hits" if cached else "prefix_misses")
        self.responder.put(keys[i], out)

    async def _watch_cancels(self) -> None:
        """Abort the requests whose client went away (asking is an IPC round trip, so
        every ``CANCEL_POLL_S`` for all running requests at once)."""
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            self.metrics.set("batch", len(self._running))
            for rid, sender in list(self._running.items()):
                if rid not in self._cancelled and sender.is_cancelled():
                    self._cancelled.add(rid)
                    await self.engine.abort(rid)

    def _send(self, key: Any, out: Output) -> None:
        send_output(pb_utils, key, out)

    def finalize(self) -> None:
        self._watch.cancel()
        try:
            self.engine.shutdown()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.responder.close()
            self.metrics.close()


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
