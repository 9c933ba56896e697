"""The entry model's request interface is declared once (``core/interface.py``): the
client, the request parser, the config writer, the gateway's request bodies, the CLI's
flags, perf's request inputs and the toy model's config must agree with that
declaration. Pure: no server."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np
import pytest
from servers import TOY_REPOSITORY, toy_config
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.cli.client_cmd import request_flags
from tritonkit.client._base import SCALAR_INPUTS, GenerationParams, request_arrays, request_values
from tritonkit.core import interface
from tritonkit.core.interface import EntryTensor
from tritonkit.core.params import RequestSettings, parse_request
from tritonkit.errors import UsageError
from tritonkit.gateway.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from tritonkit.model_repository import config as cfg
from tritonkit.perf import inputs as perf_inputs

_NUMPY = {"BOOL": np.bool_, "INT32": np.int32, "UINT64": np.uint64, "FP32": np.float32}
# A valid value per input the parser reads, and one per BYTES input by name.
_SAMPLE: dict[str, Any] = {"BOOL": True, "INT32": 3, "UINT64": 7, "FP32": 0.5}
_TEXT = {
    "text_input": ["hi there"], "stop_words": ["x"], "sampling_parameters": ['{"top_k": 2}'],
    "logit_bias": ['{"3": 1.5}'], "guided_json": ['{"type": "object"}'],
    "guided_regex": ["[ab]+"], "guided_choice": ["a", "b"], "guided_grammar": ['start: "a"'],
}  # fmt: skip
# One value per constraint as the client and the gateway take it (at most one a request).
_GUIDES: dict[str, Any] = {
    "guided_json": {"type": "object"},
    "guided_regex": "[ab]+",
    "guided_choice": ["a", "b"],
    "guided_grammar": 'start: "a"',
}


def _array(t: EntryTensor) -> np.ndarray:
    if t.datatype == "BYTES":
        return np.array([v.encode() for v in _TEXT[t.name]], dtype=np.object_)
    return np.array([_SAMPLE[t.datatype]], dtype=_NUMPY[t.datatype])


def check_agreement() -> None:
    """AssertionError naming the first place where the client, the parser or the
    config writer disagrees with ``interface.ENTRY_INPUTS``."""
    declared = {t.name: t for t in interface.ENTRY_INPUTS}

    # The config writer: the entry model's inputs are the declaration's, typed alike.
    written = {s.name: (s.data_type, s.dims, s.optional) for s in cfg.entry_inputs()}
    for t in declared.values():
        kind = mc.TYPE_STRING if t.datatype == "BYTES" else mc.DataType.Value(f"TYPE_{t.datatype}")
        assert written.get(t.name) == (kind, t.dims, t.optional), f"config writer: {t.name}"

    # The client: a request that sets everything sends every declared input but the
    # aliases, each with its declared type, and nothing undeclared.
    every = GenerationParams(
        max_tokens=4, min_tokens=1, temperature=0.5, top_k=3, top_p=0.9, seed=7, stop=["x"],
        repetition_penalty=1.1, exclude_input_in_output=True, sampling_parameters={"top_k": 2},
        presence_penalty=0.5, frequency_penalty=0.25, min_p=0.1, logit_bias={3: 1.5},
        logprobs=2, guided_regex="[ab]+", n=2,
    )  # fmt: skip
    sent = {name: (dt, arr) for name, dt, arr in request_arrays(request_values("hi", True, every))}
    for guide, value in _GUIDES.items():  # the other constraints, one request each
        one = dataclasses.replace(every, **{"guided_regex": None, guide: value})
        arrays = request_arrays(request_values("hi", True, one))
        sent.update({name: (dt, arr) for name, dt, arr in arrays if name == guide})
    wanted = {n for n, t in declared.items() if t.alias_of is None}
    assert set(sent) == wanted, f"client sends {sorted(sent)}, declared {sorted(wanted)}"
    for name, (datatype, _) in sent.items():
        assert datatype == declared[name].datatype, f"client: {name} is {datatype}"
    assert interface.scalar_inputs() == SCALAR_INPUTS, "client: its scalar inputs"
    # ... and every parameter the client takes is a declared input (``stop`` is sent as
    # ``stop_words``): a parameter whose input was dropped would be discarded silently.
    params = {f.name for f in dataclasses.fields(GenerationParams)}
    renamed = {"stop": "stop_words"}
    assert {renamed.get(p, p) for p in params} == wanted - {"text_input", "stream"}, (
        f"client parameters {sorted(params)} vs declared {sorted(wanted)}"
    )

    # The parser: each declared input sets the settings field it names, and every
    # field is set by some input.
    settings = {f.name for f in dataclasses.fields(RequestSettings)}
    base = {"text_input": _array(declared["text_input"])}
    default = parse_request(base)
    for t in declared.values():
        assert t.setting is None or t.setting in settings, f"parser: no setting {t.setting}"
        parsed = parse_request({**base, t.name: _array(t)})
        if t.setting is not None and t.name != "text_input":
            assert getattr(parsed, t.setting) != getattr(default, t.setting), f"parser: {t.name}"
    assert settings <= {t.setting for t in declared.values()}, "parser: a field no input sets"

    # Client -> parser: what the client sends is what the parser reads back.
    one_guide = {n: a for n, (_, a) in sent.items() if n not in _GUIDES or n == "guided_regex"}
    got = parse_request(one_guide)
    assert (got.max_tokens, got.min_tokens, got.top_k, got.seed) == (4, 1, 3, 7)
    assert got.stop == ["x"] and got.stream and got.exclude_input_in_output
    assert (got.logit_bias, got.logprobs, got.guided_regex) == ({3: 1.5}, 2, "[ab]+")

    # The gateway: its bodies set every client parameter but the raw JSON, under the
    # client's names (so a new input the gateway does not map fails here).
    client_params = params - {"sampling_parameters"}
    chat = {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["x"], "top_k": 3, "min_p": 0.1,
        "min_tokens": 1, "repetition_penalty": 1.1, "presence_penalty": 0.5,
        "frequency_penalty": 0.25, "logit_bias": {"3": 1.5}, "logprobs": True, "top_logprobs": 2,
        "n": 2,
    }  # fmt: skip
    covered: set[str] = set()
    for guide, value in _GUIDES.items():
        for cls, body in ((ChatCompletionRequest, chat), (CompletionRequest, {
            **{k: v for k, v in chat.items() if k not in ("messages", "top_logprobs")},
            "prompt": "hi", "logprobs": 2,
        })):  # fmt: skip
            kwargs = parse_body(cls, {**body, guide: value}).generation_kwargs()
            GenerationParams.from_kwargs(kwargs)  # every key is a client parameter
            covered |= set(kwargs)
    assert covered == client_params, f"gateway sets {sorted(covered)}, client {sorted(params)}"

    # The CLI: one flag per client parameter but the raw JSON and exclude_input_in_output.
    flags = set(request_flags())
    assert flags == client_params - {"exclude_input_in_output"}, f"CLI flags {sorted(flags)}"

    # perf: every input the run does not set itself can be added to its requests, and the
    # model's parser reads it back.
    run_sets = {"text_input", "max_tokens", "min_tokens", "stream", "exclude_input_in_output"}
    for t in declared.values():
        if t.name in run_sets or t.alias_of is not None:
            continue
        text = _TEXT[t.name][0] if t.datatype == "BYTES" else str(_SAMPLE[t.datatype]).lower()
        if t.dims == (-1,):
            text = json.dumps(_TEXT[t.name])
        try:
            extra = perf_inputs.request_inputs([f"{t.name}={text}"])
        except UsageError as exc:
            raise AssertionError(f"perf cannot send {t.name}: {exc}") from exc
        row = perf_inputs.entry_input_data(["hi there"], 4, extra=extra)["data"][0]
        arrays = {n: np.array([v.encode() if isinstance(v, str) else v for v in row[n]],
                              dtype=_NUMPY.get(declared[n].datatype, np.object_))
                  for n in row}  # fmt: skip
        parse_request(arrays)


def test_client_parser_and_config_agree_with_the_declaration() -> None:
    check_agreement()


@pytest.mark.parametrize(
    "change",
    [
        "an input only the declaration has",
        "an input the parser does not know",
        "a retyped input",
        "a dropped input",
        "a dropped input everyone else followed but the client's parameters",
        "an input the gateway does not pass on",
        "an input the CLI has no flag for",
        "an input perf cannot send",
    ],
)
def test_the_agreement_check_fails_on_a_drifted_declaration(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = list(interface.ENTRY_INPUTS)
    if change == "an input the gateway does not pass on":
        from tritonkit.gateway import schemas

        kwargs = schemas._GenerationBody.generation_kwargs
        monkeypatch.setattr(
            schemas._GenerationBody,
            "generation_kwargs",
            lambda self: {k: v for k, v in kwargs(self).items() if k != "min_p"},
        )
    elif change == "an input the CLI has no flag for":
        from tritonkit.cli import client_cmd

        monkeypatch.setattr(client_cmd, "_NOT_FLAGS", (*client_cmd._NOT_FLAGS, "logprobs"))
    elif change == "an input perf cannot send":
        monkeypatch.setattr(perf_inputs, "RUN_INPUTS", (*perf_inputs.RUN_INPUTS, "min_p"))
    elif change == "an input only the declaration has":
        inputs.append(EntryTensor("beam_width", "INT32", (1,), "beams", setting="top_k"))
    elif change == "an input the parser does not know":
        inputs.append(EntryTensor("beam_width", "INT32", (1,), "beams", setting="beam_width"))
    elif change == "a retyped input":
        i = next(i for i, t in enumerate(inputs) if t.name == "top_k")
        inputs[i] = dataclasses.replace(inputs[i], datatype="FP32")
    else:
        inputs = [t for t in inputs if t.name != "repetition_penalty"]
    if change.startswith("a dropped input everyone"):
        # the scalar list and the parser's settings regenerated without it, as a real edit
        # of the declaration and of RequestSettings would; GenerationParams still has it
        scalars = {k: v for k, v in SCALAR_INPUTS.items() if k != "repetition_penalty"}
        monkeypatch.setattr(sys.modules[__name__], "SCALAR_INPUTS", scalars)
        monkeypatch.setattr(sys.modules[request_values.__module__], "SCALAR_INPUTS", scalars)
        monkeypatch.setattr(interface, "scalar_inputs", lambda: scalars)
    monkeypatch.setattr(interface, "ENTRY_INPUTS", tuple(inputs))
    with pytest.raises(AssertionError):
        check_agreement()


def test_the_config_writer_follows_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = EntryTensor("beam_width", "INT32", (1,), "beams", setting="top_k")
    monkeypatch.setattr(interface, "ENTRY_INPUTS", (*interface.ENTRY_INPUTS, extra))
    for config in (
        cfg.entry_config("llm", "llm_decoder", "cpu", max_batch_size=4, max_context=64),
        cfg.sync_config("llm_sync", "llm", 1, "cpu"),
    ):
        names = [i.name for i in config.input]
        assert names == [t.name for t in interface.ENTRY_INPUTS]
        assert [o.name for o in config.output] == [t.name for t in interface.ENTRY_OUTPUTS]
        assert [list(o.dims) for o in config.output] == [[-1]] * len(interface.ENTRY_OUTPUTS)


def test_the_toy_models_config_is_generated_from_the_declaration() -> None:
    config = cfg.read(TOY_REPOSITORY / "llm")
    assert cfg.to_text(config) == cfg.to_text(toy_config())
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in config.input] == [
        (s.name, s.data_type, list(s.dims), s.optional) for s in cfg.entry_inputs()
    ]
    assert {"min_length", "random_seed"} <= {i.name for i in config.input}
    assert config.model_transaction_policy.decoupled
    assert config.parameters["piece_delay_s"].string_value
