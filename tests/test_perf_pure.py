"""``tritonkit.perf`` figures, metrics and input files, checked on exact hand-made data.

No server here: the profile exports below have the layout perf_analyzer writes (checked
against real ones in test_perf.py), with round timestamps so every figure is exact.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.cli import build_parser
from tritonkit.errors import ToolFailed, UsageError
from tritonkit.perf.inputs import (
    InputSpec,
    decoder_input_data,
    entry_input_data,
    load_tokenizer,
    make_prompts,
)
from tritonkit.perf.profile import (
    figures,
    position_latencies,
    read_profile_export,
    retokenized_counts,
)
from tritonkit.perf.report import BenchReport, LevelResult
from tritonkit.perf.server_metrics import parse_metrics, server_figures
from tritonkit.perf.tools import tool_error_line

MS = 1_000_000  # ns


def _request(start_ms: int, responses: list[tuple[int, int, str]], n_in: int = 5) -> dict:
    """A request as perf_analyzer exports it: (time ms, cumulative tokens, text) per response."""
    return {
        "timestamp": start_ms * MS,
        "request_inputs": {"text_input": "x", "max_tokens": 4},
        "response_timestamps": [t * MS for t, _, _ in responses],
        "response_outputs": [
            {
                "text_output": text,
                "num_output_tokens": n,
                "num_input_tokens": n_in,
                "finish_reason": "",
            }
            for _, n, text in responses
        ],
    }


def _export(tmp_path: Path, requests: list[dict]) -> Path:
    path = tmp_path / "profile_export.json"
    path.write_text(json.dumps({"experiments": [{"experiment": {}, "requests": requests}]}))
    return path


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return _export(
        tmp_path,
        [
            # 1 token at 10 ms, then 2 more merged into one response at 14 ms, 1 at 15 ms.
            _request(0, [(10, 1, "a"), (14, 3, "bc"), (15, 4, "d")]),
            # Starts later; one token per response every 2 ms after a 20 ms first token.
            _request(5, [(25, 1, "e"), (27, 2, "f"), (29, 3, "g"), (31, 4, "h")]),
            # A stream's empty final response (no outputs) is not a token.
            {
                **_request(6, [(16, 4, "ijkl")]),
                "response_timestamps": [16 * MS, 17 * MS],
                "response_outputs": [
                    {"text_output": "ijkl", "num_output_tokens": 4, "num_input_tokens": 5},
                    {},
                ],
            },
        ],
    )


def test_position_latencies_spread_a_merged_response_over_its_tokens(export: Path) -> None:
    first, second, _ = read_profile_export(export)
    assert position_latencies(first) == pytest.approx([0.010, 0.002, 0.002, 0.001])
    assert position_latencies(second) == pytest.approx([0.020, 0.002, 0.002, 0.002])


def test_figures_use_the_server_token_counts(export: Path) -> None:
    records = read_profile_export(export)
    assert [r.output_tokens[-1] for r in records] == [4, 4, 4]
    f = figures(records)
    assert f.requests == 3
    assert f.time_to_first_token_ms.p50 == pytest.approx(10.0)  # 10, 20, 10
    assert f.time_to_first_token_ms.max == pytest.approx(20.0)
    # (last - first) / (tokens after the first response): 5/3, 6/3; the third has one response.
    assert f.inter_token_latency_ms.min == pytest.approx(5 / 3)
    assert f.inter_token_latency_ms.max == pytest.approx(2.0)
    assert f.request_latency_ms.min == pytest.approx(10.0)  # 15, 26, 10
    assert f.window_s == pytest.approx(0.031)  # first start 0 ms to last response 31 ms
    assert f.output_tokens_per_s == pytest.approx(12 / 0.031)
    assert f.requests_per_s == pytest.approx(3 / 0.031)
    assert f.output_tokens.min == f.output_tokens.max == 4
    assert f.input_tokens.p50 == 5
    assert f.position_latency_ms[0] == pytest.approx(10.0)  # median of 10, 20, 2.5
    assert len(f.position_latency_ms) == 4


def test_a_run_whose_requests_differ_in_length_is_not_exact(export: Path, tmp_path: Path) -> None:
    exact = LevelResult(1, figures(read_profile_export(export)), None)
    assert exact.exact_output
    short = _export(
        tmp_path,
        [_request(0, [(5, 1, "a"), (6, 2, "b")]), _request(0, [(5, 1, "a"), (6, 3, "bc")])],
    )
    assert not LevelResult(1, figures(read_profile_export(short)), None).exact_output


def test_an_export_without_requests_is_a_tool_failure(tmp_path: Path) -> None:
    with pytest.raises(ToolFailed, match="no completed request"):
        read_profile_export(_export(tmp_path, []))
    with pytest.raises(ToolFailed, match="no readable profile export"):
        read_profile_export(tmp_path / "missing.json")


METRICS_BEFORE = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="llm",version="1"} 10
nv_inference_request_success{model="llm_decoder",version="1"} 99
nv_inference_queue_duration_us{model="llm",version="1"} 1000
nv_inference_compute_infer_duration_us{model="llm",version="1"} 5000
tritonkit_generated_tokens_total{model="llm",version="1"} 100
tritonkit_time_to_first_token_seconds_sum{model="llm",version="1"} 1.0
tritonkit_time_to_first_token_seconds_count{model="llm",version="1"} 10
tritonkit_decode_steps_total{model="llm",version="1"} 50
tritonkit_decode_rows_total{model="llm",version="1"} 60
"""
METRICS_AFTER = """\
nv_inference_request_success{model="llm",version="1"} 14
nv_inference_request_success{model="llm",version="2"} 2
nv_inference_request_success{model="llm_decoder",version="1"} 99
nv_inference_queue_duration_us{model="llm",version="1"} 4000
nv_inference_compute_infer_duration_us{model="llm",version="1"} 8000
tritonkit_generated_tokens_total{model="llm",version="1"} 196
tritonkit_time_to_first_token_seconds_sum{model="llm",version="1"} 1.6
tritonkit_time_to_first_token_seconds_count{model="llm",version="1"} 16
tritonkit_decode_steps_total{model="llm",version="1"} 80
tritonkit_decode_rows_total{model="llm",version="1"} 150
"""


def test_server_figures_are_deltas_per_request_for_one_model() -> None:
    before, after = parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER)
    assert before[("nv_inference_request_success", "llm_decoder")] == 99
    s = server_figures(before, after, "llm")
    assert s.requests == 6  # 4 on version 1, 2 on version 2
    assert s.queue_ms == pytest.approx(3000 / 1e3 / 6)
    assert s.compute_ms == pytest.approx(3000 / 1e3 / 6)
    assert s.generated_tokens == 96
    assert s.server_ttft_ms == pytest.approx(600 / 6)
    assert s.mean_decode_batch == pytest.approx(90 / 30)
    assert s.server_itl_ms is None  # a counter the server does not have
    assert server_figures(before, after, "other").requests == 0


def test_tool_error_line_prefers_the_request_error() -> None:
    log = (
        "$ perf_analyzer -m llm\nFailed to retrieve results from inference request.\n"
        "Thread [0] had error: sampling_parameters.max_tokens must be an integer, got '32'\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
    )
    assert tool_error_line(log) == (
        "had error: sampling_parameters.max_tokens must be an integer, got '32'"
    )
    assert tool_error_line("just one line\n") == "just one line"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tritonkit.export import tiny

    folder = tmp_path_factory.mktemp("tok")
    tiny.build_tokenizer().save_pretrained(folder)
    return load_tokenizer(folder)


@pytest.mark.parametrize("tokens", [2, 3, 17, 128, 600])
def test_prompts_encode_to_exactly_the_asked_length(tokenizer: Any, tokens: int) -> None:
    prompts = make_prompts(tokenizer, tokens, count=6, seed=tokens)
    assert len(set(prompts)) == 6
    assert [len(tokenizer.encode(p).ids) for p in prompts] == [tokens] * 6


def test_prompt_length_below_two_is_refused(tokenizer: Any) -> None:
    with pytest.raises(UsageError, match="--input-tokens must be >= 2"):
        make_prompts(tokenizer, 1, count=1)


def test_retokenized_counts_encode_the_text_without_special_tokens(tokenizer: Any) -> None:
    from tritonkit.perf.profile import RequestRecord

    text = "hello world"
    record = RequestRecord(0, [1], [1], 1, text)
    assert retokenized_counts([record], tokenizer) == [
        len(tokenizer.encode(text, add_special_tokens=False).ids)
    ]


def test_entry_input_data_sets_the_minimum_only_when_exact() -> None:
    exact = entry_input_data(["a b"], 8)["data"][0]
    assert exact == {
        "text_input": ["a b"],
        "max_tokens": [8],
        "stream": [True],
        "exclude_input_in_output": [True],
        "min_tokens": [8],
    }
    assert "min_tokens" not in entry_input_data(["a b"], 8, exact=False)["data"][0]


DECODER = [
    InputSpec("input_ids", "INT64", (-1, -1)),
    InputSpec("attention_mask", "INT64", (-1, -1)),
    InputSpec("position_ids", "INT64", (-1, -1)),
    InputSpec("past_key_values.0.key", "FP16", (-1, 2, -1, 8)),
    InputSpec("past_key_values.0.value", "FP16", (-1, 2, -1, 8)),
]


def _decode(tensor: dict, dtype: Any) -> np.ndarray:
    return np.frombuffer(base64.b64decode(tensor["b64"]), dtype).reshape(tensor["shape"])


def test_decoder_input_data_prefill_and_decode_shapes() -> None:
    prefill = decoder_input_data(DECODER, batch=3, sequence=5, past=0, vocab_size=50)["data"][0]
    assert prefill["past_key_values.0.key"] == {"content": [], "shape": [3, 2, 0, 8]}
    assert _decode(prefill["position_ids"], np.int64).tolist() == [list(range(5))] * 3
    ids = _decode(prefill["input_ids"], np.int64)
    assert ids.shape == (3, 5) and ids.min() >= 3 and ids.max() < 50

    decode = decoder_input_data(DECODER, batch=3, sequence=1, past=5, vocab_size=50)["data"][0]
    assert _decode(decode["attention_mask"], np.int64).shape == (3, 6)  # (B, past + 1)
    assert _decode(decode["position_ids"], np.int64).tolist() == [[5]] * 3
    past = _decode(decode["past_key_values.0.value"], np.float16)
    assert past.shape == (3, 2, 5, 8) and np.isfinite(past).all() and past.std() > 0.5


def test_decoder_input_data_refuses_an_unknown_input() -> None:
    with pytest.raises(UsageError, match="encoder_hidden_states"):
        decoder_input_data(
            [*DECODER, InputSpec("encoder_hidden_states", "FP32", (-1, -1, 4))], 1, 1, 1, 10
        )


def test_report_rows_and_table(export: Path, tmp_path: Path) -> None:
    report = BenchReport(
        {"model": "llm"}, [LevelResult(2, figures(read_profile_export(export)), None)]
    )
    files = report.write(tmp_path / "out")
    rows = files["csv"].read_text().splitlines()
    assert rows[0].startswith("concurrency,requests,ttft_ms_p50,ttft_ms_p99")
    assert rows[1].startswith("2,3,10.0,")
    assert json.loads(files["json"].read_text())["rows"][0]["requests"] == 3
    table = report.table().splitlines()
    assert "TTFT ms" in table[0] and table[2].split("|")[1].strip() == "2"
    assert table[2].split("|")[2].strip() == "10 / 19.8"  # p50 / p99 of 10, 20, 10


@pytest.mark.parametrize("name", ["perf", "bench"])
def test_perf_and_its_former_name_bench_are_one_command(name: str) -> None:
    parser = build_parser()
    run = parser.parse_args([name, "--url", "127.0.0.1:8001", "--concurrency", "1,8"])
    inputs = parser.parse_args([name, "inputs", "--tokenizer", "tok", "--output", "out"])
    assert run.handler.__name__ == "_run" and run.concurrency == [1, 8]
    assert inputs.handler.__name__ == "_inputs" and inputs.output == "out"
    with pytest.raises(SystemExit):  # an unknown command is refused, the alias is not
        parser.parse_args([f"{name}x", "--url", "127.0.0.1:8001"])


GONE = (
    "tritonkit.bench",
    "tritonkit.perf.errors",
    "tritonkit.blob.errors",
    "tritonkit.deploy.errors",
)


@pytest.mark.parametrize("module", GONE)
def test_one_errors_module_and_no_bench_package(module: str) -> None:
    # Errors are imported from tritonkit.errors; the package is tritonkit.perf.
    assert importlib.util.find_spec(module) is None
    assert importlib.util.find_spec(module.rsplit(".", 1)[0]) is not None
