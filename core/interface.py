"""The entry model's request interface, declared once: every input and output tensor.

It is the interface of Triton's vLLM and TensorRT-LLM backends, so genai-perf,
perf_analyzer, the HTTP generate endpoint and their clients work as is. Everything else
follows from this declaration: the config writer (``tritonkit.model_repository.config``)
writes the entry model's and its unary twin's inputs and outputs from it, the entry
model reads the names from the config Triton gives it, the request parser
(``params.py``) takes its aliases from it, the client (``tritonkit.client``) its typed
scalar inputs, and the tests' toy model its config.

Runs inside the Triton container (copied with the runtime): standard library and numpy only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Errors a client must tell apart begin with one of these codes and ": " (written by the
# entry model, before any text a request supplied, so no request can forge them); clients
# classify by the code, never by the words after it.
ERROR_SERVER_BUSY = "server_busy"  # the wait queue is full: retry shortly, here or elsewhere
ERROR_ENGINE_FAILED = "engine_failed"  # this instance cannot generate: try another replica
ERROR_CODES = (ERROR_SERVER_BUSY, ERROR_ENGINE_FAILED)
_CODED = re.compile(rf"^\s*(?:\[[^\]]*\]\s*)?({'|'.join(ERROR_CODES)}): ")


def coded_error(code: str, message: str) -> str:
    """``message`` as the entry model sends it under ``code``."""
    return f"{code}: {message}"


def error_code(message: str) -> str | None:
    """The code a coded error message starts with (a transport's ``[StatusCode.X]``
    prefix allowed), or None."""
    match = _CODED.match(message)
    return match.group(1) if match else None


@dataclass(frozen=True)
class EntryTensor:
    """One input or output of the entry model.

    ``datatype``: the KServe v2 name (``BYTES``, ``BOOL``, ``INT32``, ``UINT64``, ``FP32``...).
    ``setting``: the ``RequestSettings`` field (``params.py``) an input sets (None: it
    carries several, as ``sampling_parameters`` does); ``alias_of``: the input it is
    another name for (declared after it).
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    meaning: str
    optional: bool = True
    setting: str | None = None
    alias_of: str | None = None


ENTRY_INPUTS: tuple[EntryTensor, ...] = (
    EntryTensor("text_input", "BYTES", (1,), "the prompt", optional=False, setting="prompt"),
    EntryTensor("max_tokens", "INT32", (1,), "new tokens at most", setting="max_tokens"),
    EntryTensor(
        "min_tokens", "INT32", (1,), "new tokens before EOS may end it", setting="min_tokens"
    ),
    EntryTensor(
        "min_length",
        "INT32",
        (1,),
        "TensorRT-LLM's name",
        setting="min_tokens",
        alias_of="min_tokens",
    ),
    EntryTensor("stream", "BOOL", (1,), "one response per piece of text", setting="stream"),
    EntryTensor(
        "exclude_input_in_output",
        "BOOL",
        (1,),
        "the text without the prompt",
        setting="exclude_input_in_output",
    ),
    EntryTensor("temperature", "FP32", (1,), "0: greedy", setting="temperature"),
    EntryTensor("top_k", "INT32", (1,), "0 or -1: off", setting="top_k"),
    EntryTensor("top_p", "FP32", (1,), "1: off", setting="top_p"),
    EntryTensor("seed", "UINT64", (1,), "the sampler's seed", setting="seed"),
    EntryTensor(
        "random_seed", "UINT64", (1,), "TensorRT-LLM's name", setting="seed", alias_of="seed"
    ),
    EntryTensor(
        "repetition_penalty",
        "FP32",
        (1,),
        "1: off; > 1 discourages repeats",
        setting="repetition_penalty",
    ),
    EntryTensor("stop_words", "BYTES", (-1,), "generation ends before these", setting="stop"),
    EntryTensor(
        "presence_penalty",
        "FP32",
        (1,),
        "OpenAI's: subtracted once from every token already generated, in [-2, 2]",
        setting="presence_penalty",
    ),
    EntryTensor(
        "frequency_penalty",
        "FP32",
        (1,),
        "OpenAI's: subtracted per occurrence of a generated token, in [-2, 2]",
        setting="frequency_penalty",
    ),
    EntryTensor(
        "min_p", "FP32", (1,), "drop tokens below min_p x the top probability", setting="min_p"
    ),
    EntryTensor(
        "logit_bias",
        "BYTES",
        (1,),
        'JSON {"token id": bias in [-100, 100]}, added to the logits',
        setting="logit_bias",
    ),
    EntryTensor(
        "logprobs",
        "INT32",
        (1,),
        "send each token's log-probability and this many alternatives (0-20)",
        setting="logprobs",
    ),
    EntryTensor(
        "guided_json", "BYTES", (1,), "a JSON schema the output must match", setting="guided_json"
    ),
    EntryTensor(
        "guided_regex", "BYTES", (1,), "a regular expression it must match", setting="guided_regex"
    ),
    EntryTensor(
        "guided_choice", "BYTES", (-1,), "it must be one of these strings", setting="guided_choice"
    ),
    EntryTensor(
        "guided_grammar",
        "BYTES",
        (1,),
        "a Lark or GBNF grammar it must match",
        setting="guided_grammar",
    ),
    EntryTensor(
        "n",
        "INT32",
        (1,),
        "choices from one prefill, each sampled with its own seed (seed + i); streamed",
        setting="n",
    ),
    EntryTensor(
        "sampling_parameters", "BYTES", (1,), "vLLM-style JSON object of settings"
    ),  # explicit tensors win over the same key in it
)

# The constraints (at most one per request); the settings they set are the input names.
GUIDED_INPUTS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")

ENTRY_OUTPUTS: tuple[EntryTensor, ...] = (
    EntryTensor("text_output", "BYTES", (-1,), "the text (a piece when streaming)", False),
    EntryTensor("finish_reason", "BYTES", (-1,), '"stop" or "length" when final, else ""', False),
    EntryTensor("num_input_tokens", "UINT32", (-1,), "prompt tokens", False),
    EntryTensor("num_output_tokens", "UINT32", (-1,), "generated tokens so far", False),
    EntryTensor("index", "UINT32", (-1,), "the choice this response belongs to (with n)"),
    EntryTensor(
        "cached_tokens",
        "UINT32",
        (-1,),
        "prompt tokens not prefilled: their KV was kept from an earlier request",
    ),
    EntryTensor(
        "token_logprobs",
        "BYTES",
        (-1,),
        "with logprobs: a JSON list, one OpenAI logprob entry per token of this response",
    ),
)

_NUMPY: dict[str, type] = {
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP32": np.float32,
}


def numeric_settings() -> dict[str, tuple[str, ...]]:
    """{setting: input names that set it}, the canonical name first, for numeric inputs."""
    names: dict[str, tuple[str, ...]] = {}
    for t in ENTRY_INPUTS:  # an alias is declared after the input it names
        if t.setting and t.datatype in _NUMPY:
            names[t.setting] = (*names.get(t.setting, ()), t.name)
    return names


def scalar_inputs() -> dict[str, tuple[str, type, type]]:
    """The numeric scalar inputs a client sends, aliases left out:
    {name: (KServe datatype, numpy dtype, Python type)}."""
    return {
        t.name: (t.datatype, _NUMPY[t.datatype], float if t.datatype.startswith("FP") else int)
        for t in ENTRY_INPUTS
        if t.datatype in _NUMPY and t.alias_of is None
    }


SCALAR_INPUTS = scalar_inputs()  # what tritonkit.client sends as typed scalars
