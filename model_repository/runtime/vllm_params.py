"""tritonkit's request settings in vLLM's terms, and vLLM's results in tritonkit's.

The vLLM entry model (``vllm/model.py``) parses a request with ``params.parse_request``,
the same parser as tritonkit's own engine, then hands vLLM these keyword arguments; so
both engines accept and refuse the same requests with the same one-line errors.

Pure: standard library only (vLLM's classes are built by the caller from these dicts),
so it is tested without vLLM installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tritonkit.core.params import RequestSettings

# vLLM's finish reasons in the interface's words: a stop string or EOS is "stop".
FINISH_REASONS = {"stop": "stop", "length": "length"}


def sampling_kwargs(params: RequestSettings, max_new_tokens: int) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for ``params`` (without output_kind and
    structured_outputs, which need vLLM's own types)."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "max_tokens": max_new_tokens,
        "min_tokens": params.min_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,  # 0: off, in both
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed,
        "stop": list(params.stop) or None,
        "include_stop_str_in_output": False,  # the text ends before a stop string, as here
        "skip_special_tokens": True,
    }
    if params.logit_bias:
        kwargs["logit_bias"] = dict(params.logit_bias)
    if params.logprobs is not None:
        kwargs["logprobs"] = params.logprobs
    return kwargs


def structured_kwargs(params: RequestSettings) -> dict[str, Any] | None:
    """``vllm.sampling_params.StructuredOutputsParams`` keyword arguments, or None.

    JSON is written without free whitespace: with it, small models loop on newlines
    until ``max_tokens`` (seen on SmolLM2 with tritonkit's engine).
    """
    guide = params.guide()
    if guide is None:
        return None
    name, value = guide
    key = {
        "guided_json": "json",
        "guided_regex": "regex",
        "guided_choice": "choice",
        "guided_grammar": "grammar",
    }[name]
    kwargs: dict[str, Any] = {key: value}
    if key == "json":
        kwargs["disable_any_whitespace"] = True
    return kwargs


def logprob_entries(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Any]] | None, top: int
) -> list[dict[str, Any]]:
    """OpenAI logprob entries for ``token_ids`` from vLLM's per-position maps.

    ``positions[i]`` maps token ids to vLLM ``Logprob`` objects (``logprob``, ``rank``,
    ``decoded_token``): the sampled token and the ``top`` most likely. Entries hold
    ``token``, ``logprob``, ``bytes`` and ``top_logprobs`` (the ``top`` by rank).
    """
    entries: list[dict[str, Any]] = []
    for token, alternatives in zip(token_ids, positions or ()):
        chosen = alternatives.get(token)
        best = sorted(
            (
                (i, lp)
                for i, lp in alternatives.items()
                if lp.rank is not None and 1 <= lp.rank <= top
            ),
            key=lambda item: item[1].rank,
        )
        entry = _entry(token, chosen)
        entry["top_logprobs"] = [_entry(i, lp) for i, lp in best]
        entries.append(entry)
    return entries


def _entry(token: int, logprob: Any) -> dict[str, Any]:
    text = "" if logprob is None else (logprob.decoded_token or "")
    return {
        "token": text,
        "logprob": -9999.0 if logprob is None else float(logprob.logprob),  # OpenAI's "unknown"
        "bytes": list(text.encode("utf-8")),
    }
