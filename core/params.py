"""Parse and validate one generation request from the tensors Triton delivers.

The interface (declared in ``interface.py``) is the one vLLM and TensorRT-LLM backends
share, so their clients work unchanged: ``text_input`` plus optional scalar tensors
(``max_tokens``, ``temperature``, ...) and an optional vLLM-style ``sampling_parameters``
JSON string. An explicit tensor wins over the same key in ``sampling_parameters``.

Every problem with a request raises ``RequestError`` (a ``ValueError``) whose message is
one line naming the input, the valid range and the value received, so ``model.py`` can
send it back as that request's error without failing the rest of the batch.

Runs inside the Triton container: standard library and numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonkit.core.interface import ENTRY_INPUTS, GUIDED_INPUTS, numeric_settings

DEFAULT_MAX_TOKENS = 64  # new tokens generated when a request does not say (vLLM's default is 16)
MAX_STOP_WORDS = 16  # each stop string is matched against every streamed piece
MAX_STOP_CHARS = 256  # characters of one stop string (the matcher holds this much text back)
MAX_SEED = 2**64 - 1  # seeds feed np.random.PCG64 and arrive as UINT64
MAX_PENALTY = 2.0  # presence and frequency penalties lie in [-2, 2], as OpenAI's
MAX_LOGIT_BIAS = 300  # entries of logit_bias
MAX_BIAS = 100.0  # each bias lies in [-100, 100], as OpenAI's
MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's top_logprobs
MAX_GUIDE_CHARS = 65536  # characters of a schema, regex or grammar (each is compiled)
MAX_CHOICES = 256  # strings of guided_choice
MAX_N = 64  # choices per request (each takes a KV row; the model checks its own rows)

# Keys accepted inside ``sampling_parameters``; anything else is a typo we report.
SAMPLING_KEYS = (
    "max_tokens",
    "min_tokens",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "repetition_penalty",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "min_p",
    "logit_bias",
    "logprobs",
    "n",
    *GUIDED_INPUTS,
)


class RequestError(ValueError):
    """A bad request: the message is one line saying what is wrong and what is valid."""


@dataclass
class RequestSettings:
    """What one request asks for, validated; defaults mean "not set by the client"."""

    prompt: str
    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS, clamped to the context
    min_tokens: int = 0  # EOS is masked until this many tokens are generated
    stream: bool = False  # one response per piece of text instead of one at the end
    exclude_input_in_output: bool = False  # False: the output starts with the prompt
    temperature: float = 0.0  # 0: greedy argmax
    top_k: int = 0  # 0: off (vLLM's -1 is read as 0)
    top_p: float = 1.0  # 1: off
    seed: int | None = None  # None: fresh entropy per request
    repetition_penalty: float = 1.0  # 1: off; > 1 discourages repeating seen tokens
    stop: list[str] = field(default_factory=list)  # generation ends before any of these
    presence_penalty: float = 0.0  # subtracted from each token generated at least once
    frequency_penalty: float = 0.0  # subtracted per time a token was generated
    min_p: float = 0.0  # 0: off; else drop tokens under min_p x the top probability
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    logprobs: int | None = None  # None: none sent; N: each token's and N alternatives
    # At most one constraint (checked here, compiled by ``constraints.py``):
    guided_json: str | None = None  # a JSON schema, as JSON text
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None  # Lark (llguidance's dialect) or GBNF
    n: int = 1  # choices from one prefill (one KV row each, forked after the prompt)

    def guide(self) -> tuple[str, str | list[str]] | None:
        """The request's constraint as (input name, its value), or None."""
        for name in GUIDED_INPUTS:
            value = getattr(self, name)
            if value is not None:
                return name, value
        return None


def parse_request(inputs: Mapping[str, np.ndarray | None]) -> RequestSettings:
    """Build ``RequestSettings`` from Triton input names to numpy arrays.

    BYTES inputs are object arrays of ``bytes``; scalars may have shape [1] or [1, 1].
    Absent inputs may be missing from ``inputs``, ``None`` or empty arrays.

    Raises:
        RequestError: a missing or empty ``text_input``, bytes that are not UTF-8, a value
            of the wrong type or out of range, malformed or unknown ``sampling_parameters``.
    """
    present = {name: a for name, a in inputs.items() if a is not None and np.size(a) > 0}
    if "text_input" not in present:
        raise RequestError("text_input is required: send the prompt as a BYTES tensor")
    prompt = _text("text_input", _scalar("text_input", present["text_input"]))
    if not prompt.strip():
        raise RequestError("text_input is empty: send a prompt with some text")

    # (label, raw value) per field: the JSON first, then explicit tensors over it.
    raw: dict[str, tuple[str, Any]] = {}
    if "sampling_parameters" in present:
        raw.update(_sampling_parameters(present["sampling_parameters"]))
    for key, names in numeric_settings().items():  # e.g. min_tokens: min_tokens, min_length
        given = [(n, _scalar(n, present[n])) for n in names if n in present]
        if len(given) == 2 and given[0][1] != given[1][1]:
            (a, va), (b, vb) = given
            raise RequestError(f"{a} and {b} are aliases; got {a}={va} and {b}={vb}")
        if given:
            raw[key] = given[0]
    for t in ENTRY_INPUTS:  # BYTES settings: stop_words, logit_bias, guided_*
        if t.datatype != "BYTES" or t.name not in present or t.setting in (None, "prompt"):
            continue
        if t.dims == (-1,):
            raw[t.setting] = (t.name, [_text(t.name, w) for w in present[t.name].flat])
        else:
            raw[t.setting] = (t.name, _text(t.name, _scalar(t.name, present[t.name])))

    p = RequestSettings(prompt=prompt)
    for t in ENTRY_INPUTS:
        if t.datatype == "BOOL" and t.name in present and t.setting:  # stream, exclude_...
            setattr(p, t.setting, _bool(t.name, _scalar(t.name, present[t.name])))
    for key, (label, value) in raw.items():
        if value is not None:  # JSON null means "use the default"
            setattr(p, key, _check(key, label, value))
    guides = [name for name in GUIDED_INPUTS if getattr(p, name) is not None]
    if len(guides) > 1:
        raise RequestError(f"send at most one of {', '.join(GUIDED_INPUTS)}; got {guides}")
    if p.max_tokens is not None and p.min_tokens > p.max_tokens:
        raise RequestError(
            f"min_tokens must be <= max_tokens, got min_tokens={p.min_tokens}, "
            f"max_tokens={p.max_tokens}"
        )
    return p


def resolve_max_new_tokens(params: RequestSettings, prompt_tokens: int, max_context: int) -> int:
    """How many tokens to generate: the request's (or the default) within the context.

    The result is clamped to the room left after the prompt; the caller reports
    finish_reason "length" when generation stops there.

    Raises:
        RequestError: the prompt has no tokens, or leaves no room in the context.
    """
    if prompt_tokens <= 0:
        raise RequestError("text_input has no tokens after tokenization: send a longer prompt")
    if prompt_tokens >= max_context:
        raise RequestError(
            f"prompt is {prompt_tokens} tokens; the model's context is {max_context} tokens"
        )
    wanted = DEFAULT_MAX_TOKENS if params.max_tokens is None else params.max_tokens
    return min(wanted, max_context - prompt_tokens)


# ---------------------------------------------------------------------------- helpers


def _sampling_parameters(array: np.ndarray) -> dict[str, tuple[str, Any]]:
    """Decode the JSON object; returns {field: ("sampling_parameters.key", value)}."""
    text = _text("sampling_parameters", _scalar("sampling_parameters", array))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"sampling_parameters is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from exc
    except (ValueError, RecursionError) as exc:  # 5,000-digit numbers, deep nesting
        raise RequestError(f"sampling_parameters is not usable JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RequestError(f"sampling_parameters must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(SAMPLING_KEYS))
    if unknown:
        raise RequestError(
            f"sampling_parameters has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"accepted keys: {', '.join(SAMPLING_KEYS)}"
        )
    stop = obj.get("stop")
    if isinstance(stop, str):
        obj["stop"] = [stop]
    elif stop is not None and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise RequestError(
            f"sampling_parameters.stop must be a string or a list of strings, got {stop!r}"
        )
    for key, value in obj.items():
        if key in _NUMERIC and isinstance(value, str):
            obj[key] = _number_from_text(f"sampling_parameters.{key}", value)
    return {key: (f"sampling_parameters.{key}", value) for key, value in obj.items()}


_NUMERIC = frozenset(numeric_settings())  # the settings numeric inputs set


def _number_from_text(label: str, text: str) -> int | float:
    """vLLM's backend accepts numbers sent as strings (genai-perf --backend vllm does so)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise RequestError(f"{label} must be a number, got {text!r}") from None


def _check(key: str, label: str, value: Any) -> Any:
    """Convert and range-check one field; ``label`` is the name the client used."""
    if key == "stop":
        if len(value) > MAX_STOP_WORDS:
            raise RequestError(f"{label} has {len(value)} strings; at most {MAX_STOP_WORDS}")
        if any(not s for s in value):
            raise RequestError(f"{label} must be non-empty strings, got {value!r}")
        longest = max(len(s) for s in value)
        if longest > MAX_STOP_CHARS:  # the string itself is not echoed back
            raise RequestError(
                f"{label} holds a string of {longest} characters; at most {MAX_STOP_CHARS}"
            )
        return list(value)
    if key in _TEXT_CHECKS:
        return _TEXT_CHECKS[key](label, value)
    if key in ("max_tokens", "min_tokens", "top_k", "seed", "logprobs", "n"):
        n = _int(label, value)
        if key == "max_tokens" and n <= 0:
            raise RequestError(f"{label} must be >= 1, got {n}")
        if key == "min_tokens" and n < 0:
            raise RequestError(f"{label} must be >= 0, got {n}")
        if key == "top_k" and n < -1:
            raise RequestError(f"{label} must be >= 0 (0 or -1 means off), got {n}")
        if key == "seed" and not 0 <= n <= MAX_SEED:
            raise RequestError(f"{label} must be in [0, 2**64 - 1], got {n}")
        if key == "n" and not 1 <= n <= MAX_N:
            raise RequestError(f"{label} must be in [1, {MAX_N}], got {n}")
        if key == "logprobs" and not 0 <= n <= MAX_LOGPROBS:
            raise RequestError(f"{label} must be in [0, {MAX_LOGPROBS}] alternatives, got {n}")
        return 0 if key == "top_k" and n == -1 else n
    x = _float(label, value)
    if key == "temperature" and x < 0:
        raise RequestError(f"{label} must be >= 0 (0 means greedy), got {x}")
    if key == "top_p" and not 0 < x <= 1:
        raise RequestError(f"{label} must be in (0, 1], got {x}")
    if key == "repetition_penalty" and x <= 0:
        raise RequestError(f"{label} must be > 0 (1 means off), got {x}")
    if key in ("presence_penalty", "frequency_penalty") and not -MAX_PENALTY <= x <= MAX_PENALTY:
        raise RequestError(f"{label} must be in [-2, 2] (0 means off), got {x}")
    if key == "min_p" and not 0 <= x <= 1:
        raise RequestError(f"{label} must be in [0, 1] (0 means off), got {x}")
    return x


def _logit_bias(label: str, value: Any) -> dict[int, float]:
    """``{"token id": bias}`` (JSON text from a tensor, an object from the JSON)."""
    if isinstance(value, str):
        value = _json(label, value)
    if not isinstance(value, dict):
        raise RequestError(f'{label} must be a JSON object {{"token id": bias}}')
    if len(value) > MAX_LOGIT_BIAS:
        raise RequestError(f"{label} has {len(value)} entries; at most {MAX_LOGIT_BIAS}")
    bias: dict[int, float] = {}
    for key, b in value.items():
        token = str(key)
        if not (token.isascii() and token.isdigit() and len(token) <= 10):
            raise RequestError(f"{label} keys must be token ids (integers >= 0), got {key!r}")
        x = _float(f"{label}[{token}]", b)
        if not -MAX_BIAS <= x <= MAX_BIAS:
            raise RequestError(f"{label}[{token}] must be in [-100, 100], got {x}")
        bias[int(token)] = x
    return bias


def _json(label: str, text: str) -> Any:
    """``text`` parsed as JSON.

    Raises:
        RequestError: not JSON, or JSON Python refuses (a 5,000-digit number, nesting
            deeper than its recursion limit).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"{label} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"{label} is not usable JSON: {str(exc)[:120]}") from exc


def _guide_text(label: str, value: Any) -> str:
    """A regex or grammar: a non-empty string within ``MAX_GUIDE_CHARS``."""
    if not isinstance(value, str):
        raise RequestError(f"{label} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError(f"{label} is empty")
    if len(value) > MAX_GUIDE_CHARS:
        raise RequestError(f"{label} holds {len(value)} characters; at most {MAX_GUIDE_CHARS}")
    return value


def _guided_json(label: str, value: Any) -> str:
    """A JSON schema as compact JSON text (an object from the JSON, text from a tensor)."""
    if isinstance(value, str):
        _guide_text(label, value)
        value = _json(label, value)
    if not isinstance(value, dict | bool):
        raise RequestError(f"{label} must be a JSON schema (an object), got {type(value).__name__}")
    return _guide_text(label, json.dumps(value, separators=(",", ":")))


def _guided_choice(label: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise RequestError(f"{label} must be a list of strings")
    if not value or any(not c for c in value):
        raise RequestError(f"{label} must hold at least one string, none of them empty")
    if len(value) > MAX_CHOICES:
        raise RequestError(f"{label} has {len(value)} strings; at most {MAX_CHOICES}")
    chars = sum(len(c) for c in value)
    if chars > MAX_GUIDE_CHARS:
        raise RequestError(f"{label} holds {chars} characters; at most {MAX_GUIDE_CHARS}")
    return list(value)


_TEXT_CHECKS: dict[str, Any] = {
    "logit_bias": _logit_bias,
    "guided_json": _guided_json,
    "guided_regex": _guide_text,
    "guided_grammar": _guide_text,
    "guided_choice": _guided_choice,
}


def _scalar(name: str, array: np.ndarray) -> Any:
    """The single element of a [1] or [1, 1] tensor, as a Python value."""
    a = np.asarray(array)
    if a.size != 1:
        raise RequestError(f"{name} must hold one value, got shape {list(a.shape)}")
    v = a.reshape(-1)[0]
    return v.item() if isinstance(v, np.generic) else v


def _text(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                f"{name} is not valid UTF-8 (bad byte at position {exc.start}): send UTF-8 text"
            ) from exc
    raise RequestError(f"{name} must be a string (BYTES), got {value!r}")


def _int(label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{label} must be an integer, got {value!r}")
    return value


def _float(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{label} must be a finite number, got {value!r}")
    return float(value)


def _bool(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{label} must be a boolean, got {value!r}")
    return value
