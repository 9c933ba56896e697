"""perf_analyzer ``--input-data`` files: prompts of an exact token length for the entry
model, and prefill / decode tensors (KV cache included) for the decoder model.

Prompt lengths are counted the way the entry model counts them: ``tokenizers``'
``Tokenizer.encode(text).ids`` on the model's own ``tokenizer.json``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.core import layout
from tritonkit.errors import RepositoryError, UsageError

# Prompts are drawn from these words (in a seeded random order, so each prompt differs).
_TEXT = (
    "the model reads a prompt and writes tokens one at a time while the server keeps "
    "every sequence of the batch in step so that each new request joins the running "
    "batch at the next decode step and leaves it when its last token is sent back to "
    "the client that asked for it with the time of each piece measured on both sides "
    "of the network from the first token to the last one in a stream of text about "
    "rivers mountains cities harbours gardens bridges markets libraries and the people "
    "who walk through them in the morning light before the shops open their doors."
)
_WORDS = _TEXT.split()


@dataclass(frozen=True)
class InputSpec:
    """One model input as the profiler must feed it: name, Triton type and dims."""

    name: str
    data_type: str  # "INT64", "FP32", "FP16", "BF16", "INT32"
    dims: tuple[int, ...]  # -1 for a dynamic dim


@dataclass
class ModelFiles:
    """What ``locate`` found for an entry model in a local repository."""

    model: str
    version: int
    tokenizer_dir: Path
    decoder: str | None = None
    decoder_version: int | None = None
    decoder_inputs: list[InputSpec] = field(default_factory=list)


@dataclass
class InputFiles:
    """The files ``write_inputs`` wrote."""

    entry: Path
    prefill: Path | None = None
    decode: Path | None = None


def locate(repository: str | Path, model: str, version: int | None = None) -> ModelFiles:
    """The tokenizer folder and the decoder of entry model ``model`` in a local repository.

    ``version``: the entry model's version folder (default: the highest one).

    Raises:
        RepositoryError: no such model or version folder, no tokenizer, or an unreadable
            decoder config.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    from tritonkit.model_repository import config as cfg

    model_dir = Path(repository).expanduser() / model
    if not model_dir.is_dir():
        raise RepositoryError(
            f"{model_dir} does not exist: pass the repository the server runs and the "
            "entry model's name (e.g. --model llm)"
        )
    versions = layout.version_numbers(model_dir)
    if not versions or (version is not None and version not in versions):
        wanted = f"version {version}" if version is not None else "a version folder"
        raise RepositoryError(f"{model_dir} has no {wanted}")
    chosen = version if version is not None else versions[-1]
    vdir = model_dir / str(chosen)
    tokenizer_dir = layout.tokenizer_dir(vdir)
    if not (tokenizer_dir / layout.TOKENIZER_FILE).is_file():
        raise RepositoryError(
            f"{tokenizer_dir} has no {layout.TOKENIZER_FILE}: is {model} a tritonkit entry model?"
        )
    files = ModelFiles(model, chosen, tokenizer_dir)
    if (vdir / layout.DECODER_REF).is_file():
        try:
            ref = layout.read_decoder_ref(vdir)
        except layout.LayoutError as exc:
            raise RepositoryError(str(exc)) from exc
        files.decoder, files.decoder_version = ref.model, ref.version
        config = cfg.read(Path(repository).expanduser() / files.decoder)
        files.decoder_inputs = [
            InputSpec(i.name, mc.DataType.Name(i.data_type).removeprefix("TYPE_"), tuple(i.dims))
            for i in config.input
        ]
    return files


def load_tokenizer(tokenizer_dir: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer_dir/tokenizer.json``.

    Raises:
        UsageError: no tokenizer.json there.
    """
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir).expanduser() / layout.TOKENIZER_FILE
    if not path.is_file():
        raise UsageError(
            f"no {layout.TOKENIZER_FILE} in {path.parent}: pass the model's tokenizer folder"
        )
    return Tokenizer.from_file(str(path))


def make_prompts(tokenizer: Any, tokens: int, count: int, seed: int = 0) -> list[str]:
    """``count`` different prompts that each encode to exactly ``tokens`` tokens.

    Raises:
        UsageError: ``tokens`` < 2, or no prompt of that length could be built.
    """
    if tokens < 2:
        raise UsageError(f"--input-tokens must be >= 2, got {tokens}")
    rng = np.random.default_rng(seed)
    return [_prompt(tokenizer, tokens, rng) for _ in range(count)]


def _prompt(tokenizer: Any, tokens: int, rng: np.random.Generator) -> str:
    def n(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    text = ""
    for _ in range(tokens * 4 + 64):  # each accepted word adds >= 1 token
        word = str(_WORDS[int(rng.integers(len(_WORDS)))])
        # The whole word, else a prefix of it: single characters end on the exact count.
        for k in range(len(word), 0, -1):
            candidate = f"{text} {word[:k]}" if text else word[:k]
            got = n(candidate)
            if got == tokens:
                return candidate
            if got < tokens:
                if k == len(word):
                    text = candidate
                break
    raise UsageError(f"could not build a prompt of exactly {tokens} tokens with this tokenizer")


# Request inputs a run sets itself: the prompt, the lengths and streaming.
RUN_INPUTS = ("text_input", "max_tokens", "min_tokens", "stream", "exclude_input_in_output")


def request_inputs(pairs: Sequence[str]) -> dict[str, list[Any]]:
    """``NAME=VALUE`` pairs (``--request-input``) as perf_analyzer input data values,
    typed by the entry model's declaration (``core/interface.py``). A BYTES input
    declared with many values (``guided_choice``, ``stop_words``) takes a JSON list;
    ``@FILE`` reads a value from a file.

    Raises:
        UsageError: no ``=``, an input the model does not declare or the run sets
            itself, a value of the wrong type, or a file that cannot be read.
    """
    from tritonkit.core.interface import ENTRY_INPUTS

    declared = {t.name: t for t in ENTRY_INPUTS}
    values: dict[str, list[Any]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise UsageError(f"--request-input takes NAME=VALUE, got {pair!r}")
        t = declared.get(name)
        if t is None or name in RUN_INPUTS:
            takes = sorted(n for n in declared if n not in RUN_INPUTS)
            raise UsageError(f"--request-input {name!r}: the run sets it, or the model has no "
                             f"such input; it takes {', '.join(takes)}")  # fmt: skip
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read {text[1:]}: {exc.strerror or exc}") from exc
        try:
            if t.datatype == "BYTES" and t.dims == (-1,):
                items = json.loads(text)
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise ValueError("a JSON list of strings")
                values[name] = items
            elif t.datatype == "BYTES":
                values[name] = [text]
            elif t.datatype == "BOOL":
                values[name] = [{"true": True, "false": False}[text.lower()]]
            else:
                values[name] = [float(text) if t.datatype.startswith("FP") else int(text)]
        except (ValueError, KeyError) as exc:
            raise UsageError(f"--request-input {name}: {t.datatype} value, got {text!r}") from exc
    return values


def entry_input_data(
    prompts: list[str],
    output_tokens: int,
    exact: bool = True,
    extra: Mapping[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """perf_analyzer input data for the entry model: one streamed request per prompt.

    ``exact``: also send ``min_tokens`` = ``output_tokens``, so EOS cannot end a request
    early and every request generates exactly ``output_tokens`` tokens. ``extra``: more
    inputs for every request (``request_inputs``), a constraint or sampling settings.
    """
    rows = []
    for prompt in prompts:
        row: dict[str, Any] = {
            "text_input": [prompt],
            "max_tokens": [output_tokens],
            "stream": [True],
            "exclude_input_in_output": [True],
        }
        if exact:
            row["min_tokens"] = [output_tokens]
        row.update(extra or {})
        rows.append(row)
    return {"data": rows}


_NUMPY = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP16": np.float16}


def _tensor(array: np.ndarray, data_type: str) -> dict[str, Any]:
    """An input as perf_analyzer's base64 form (compact for KV-cache tensors)."""
    if data_type == "BF16":  # numpy has no bfloat16: keep the top half of each float32
        raw = (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    else:
        raw = np.ascontiguousarray(array, dtype=_NUMPY[data_type]).tobytes()
    return {"b64": base64.b64encode(raw).decode("ascii"), "shape": list(array.shape)}


def decoder_input_data(
    inputs: list[InputSpec],
    batch: int,
    sequence: int,
    past: int,
    vocab_size: int,
    seed: int = 0,
) -> dict[str, Any]:
    """perf_analyzer input data for the decoder graph: one step of ``sequence`` new tokens
    on top of ``past`` cached ones, for ``batch`` rows.

    Prefill is ``sequence=P, past=0``; a decode step is ``sequence=1, past=P``. The past
    tensors (B, kv_heads, past, head_dim) hold random values: a step's cost does not
    depend on them.

    Raises:
        UsageError: an input this layout does not know, or a type perf_analyzer data
            cannot carry here.
    """
    rng = np.random.default_rng(seed)
    total = past + sequence
    data: dict[str, Any] = {}
    array: np.ndarray[Any, Any]
    for spec in inputs:
        if spec.data_type not in (*_NUMPY, "BF16"):
            raise UsageError(f"decoder input {spec.name} has type {spec.data_type}: not supported")
        if spec.name == "input_ids":
            array = rng.integers(3, vocab_size, (batch, sequence))  # (B, S)
        elif spec.name == "position_ids":
            array = np.tile(np.arange(past, total), (batch, 1))  # (B, S)
        elif spec.name == "attention_mask":
            array = np.ones((batch, total))  # (B, P+S)
        elif spec.name.startswith("past_key_values.") and len(spec.dims) == 4:
            kv_heads, head_dim = spec.dims[1], spec.dims[3]
            if past == 0:  # zero-length past: an empty tensor, no bytes to carry
                data[spec.name] = {"content": [], "shape": [batch, kv_heads, 0, head_dim]}
                continue
            array = rng.standard_normal((batch, kv_heads, past, head_dim))  # (B, kv, P, hd)
        else:
            raise UsageError(
                f"decoder input {spec.name} {list(spec.dims)} is not one of input_ids, "
                "attention_mask, position_ids, past_key_values.*: write its data by hand"
            )
        data[spec.name] = _tensor(array, spec.data_type)
    return {"data": [data]}


def write_inputs(
    output: str | Path,
    tokenizer_dir: str | Path,
    model: str,
    input_tokens: int,
    output_tokens: int,
    count: int = 32,
    exact: bool = True,
    decoder: str | None = None,
    decoder_inputs: list[InputSpec] | None = None,
    batch: int = 1,
    seed: int = 0,
) -> InputFiles:
    """Write ``OUTPUT/MODEL.json`` (entry model) and, given the decoder's inputs,
    ``OUTPUT/DECODER.prefill.json`` and ``OUTPUT/DECODER.decode.json``.

    Raises:
        UsageError: bad lengths or counts, no tokenizer, or decoder inputs of an unknown layout.
    """
    if output_tokens < 1 or count < 1 or batch < 1:
        raise UsageError("--output-tokens, --count and --batch must be >= 1")
    out = Path(output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_dir)
    prompts = make_prompts(tokenizer, input_tokens, count, seed)
    files = InputFiles(out / f"{model}.json")
    files.entry.write_text(json.dumps(entry_input_data(prompts, output_tokens, exact), indent=1))
    if decoder and decoder_inputs:
        vocab = tokenizer.get_vocab_size()
        files.prefill = out / f"{decoder}.prefill.json"
        files.decode = out / f"{decoder}.decode.json"
        for path, (sequence, past) in (
            (files.prefill, (input_tokens, 0)),
            (files.decode, (1, input_tokens)),
        ):
            data = decoder_input_data(decoder_inputs, batch, sequence, past, vocab, seed)
            path.write_text(json.dumps(data))
    return files
