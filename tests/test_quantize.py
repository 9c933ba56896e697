"""``--quantize int4`` and the teacher-forced quality gate (export/quality.py).

The tiny model shows the mechanics in seconds; SmolLM2 (the real model, exported once
per run with 4-bit weights and cached like the float32 export) shows the bar means
something: its int4 graph clears it, answers the chat, is served by Triton, and a
graph with one layer's scales wrong falls far below it.
"""

from __future__ import annotations

import json
from pathlib import Path

import graph_faults
import numpy as np
import onnx
import pytest

from tritonkit.client import LLMClient
from tritonkit.errors import UsageError
from tritonkit.export import main_export
from tritonkit.export.architectures import dims_of
from tritonkit.export.quality import GATES, QualityResult, evaluate, measure_quality
from tritonkit.export.verify import failure_summary
from tritonkit.export.verify_fused import FusedVerifier


def _bits(folder: Path) -> list[int]:
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return [
        next(a.i for a in n.attribute if a.name == "bits")
        for n in graph.node
        if n.op_type == "MatMulNBits"
    ]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ---- the measure -------------------------------------------------------------------------


def test_identical_logits_agree_fully_and_a_shuffle_fails_every_bar():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (40, 100))  # (N, vocab): peaked enough to have a clear top-1
    ref = [_log_softmax(logits)]
    same = measure_quality(ref, [logits.astype(np.float32)], "int4")
    assert same.top1 == 1.0 and same.kl_max < 1e-6 and same.passed and same.problem() is None
    shuffled = measure_quality(ref, [logits[:, rng.permutation(100)]], "int4")
    assert shuffled.top1 < 0.2 and not shuffled.passed
    problem = shuffled.problem()
    assert problem and "top-1" in problem and "mean KL" in problem and "largest KL" in problem


def test_non_finite_logits_fail_and_float32_is_recorded_without_a_bar():
    logits = np.random.default_rng(1).normal(0, 4, (8, 50))
    bad = logits.copy()
    bad[3, 7] = np.nan
    result = measure_quality([_log_softmax(logits)], [bad], "float16")
    assert not result.finite and not result.passed and "NaN" in (result.problem() or "")
    fp32 = measure_quality([_log_softmax(logits)], [logits[:, ::-1].copy()], "float32")
    assert fp32.gate is None and fp32.passed  # the strict checks judge float32


def test_near_ties_count_as_agreement_only_inside_their_margin():
    ref = np.log(np.array([[0.30, 0.29, 0.41 - 1e-9, 1e-9]]))  # top-1 is token 2
    near = np.array([[0.0, 0.0, 1.0, 1.05]])  # picks 3: far below 2 in the reference
    tie = np.array([[0.0, 0.0, 1.0, 0.0]])
    assert measure_quality([ref], [near], "int4").top1_with_ties == 0.0
    close = np.log(np.array([[0.39, 0.2, 0.41 - 1e-9, 1e-9]]))  # 0.39 vs 0.41: 0.05 nats
    picks_0 = np.array([[2.0, 0.0, 1.0, 0.0]])
    r = measure_quality([close], [picks_0], "int4")
    assert (r.top1, r.top1_with_ties) == (0.0, 1.0)
    assert measure_quality([ref], [tie], "int4").top1 == 1.0


def test_a_failed_gate_is_named_in_the_one_line_error():
    q = QualityResult("int4", 6, 300, 0.41, 0.43, 0.9, 2.0, 7.5, True, GATES["int4"])
    report = {"checks": [], "greedy_match": False, "quantize": "int4", "quality": q.to_dict()}
    line = failure_summary(report, "export.json")
    assert "int4 quality below its bar: top-1 agreement 0.430 < 0.7" in line
    assert "greedy" not in line  # 4-bit weights are not the model's: greedy is not gated
    assert QualityResult.from_dict(q.to_dict()) == q


# ---- the tiny model ----------------------------------------------------------------------


def test_tiny_int4_export_is_judged_by_quality(tmp_path):
    result = main_export("tiny-llama", tmp_path / "int4", quantize="int4")
    r = result.report
    assert r["passed"] and r["quantize"] == "int4" and r["graph"] == "fused"
    assert r["checks"] == []  # rounding checks do not apply to 4-bit weights
    q = r["quality"]
    assert q["gate"] == {"min_top1": 0.7, "max_kl_mean": 0.35, "max_kl_max": 4.0}
    assert q["positions"] > 300 and q["passed"]
    assert 4 in _bits(tmp_path / "int4")

    # A quantizer that flipped one layer's scales: the gate refuses the graph.
    from tritonkit.export.loading import load

    loaded = load("tiny-llama", progress=False)
    dims = dims_of(loaded.model.config)
    broken = graph_faults.copy_export(tmp_path / "int4", tmp_path / "broken")
    graph_faults.scale_quantized_weight(broken, -1.0, index=1)
    verifier = FusedVerifier(loaded.model, str(broken), dims, "float32", capacity=128)
    bad = evaluate(loaded.model, loaded.tokenizer, dims.vocab_size, verifier.teacher_forced, "int4")
    assert not bad.passed and bad.top1_with_ties < 0.5


def test_float16_export_records_its_quality(tmp_path):
    r = main_export("tiny-llama", tmp_path / "fp16", dtype="float16").report
    q = r["quality"]
    assert r["passed"] and q["precision"] == "float16" and q["gate"]["min_top1"] == 0.98
    assert q["top1_with_ties"] >= 0.98 and q["kl_max"] < 0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"graph": "concat"}, "needs the fused graph"),
        ({"dtype": "float16"}, "use --dtype float32 with --device cpu"),
    ],
)
def test_int4_usage_errors_are_one_line_and_write_nothing(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        main_export("tiny-llama", tmp_path / "out", quantize="int4", **kwargs)
    assert not (tmp_path / "out").exists()


def test_int4_of_an_architecture_without_the_fused_graph_is_refused(tiny_model_folder, tmp_path):
    with pytest.raises(UsageError, match=r"--quantize int4 needs the fused graph.*gpt2"):
        main_export(str(tiny_model_folder("gpt2")), tmp_path / "out", quantize="int4")
    assert not (tmp_path / "out").exists()


# ---- the real model ----------------------------------------------------------------------


def test_smollm2_int4_clears_the_bar_and_is_four_times_smaller(
    smollm2_int4_export: Path, smollm2_export: Path
):
    r = json.loads((smollm2_int4_export / "export.json").read_text())
    q = r["quality"]
    assert r["passed"] and r["quantize"] == "int4" and q["passed"]
    assert q["top1"] >= 0.7 and q["kl_mean"] <= 0.35 and q["kl_max"] <= 4.0
    bits = _bits(smollm2_int4_export)
    assert bits.count(4) > bits.count(8) > 0  # 4-bit body, 8-bit LM head and sensitive layers
    full = json.loads((smollm2_export / "export.json").read_text())
    assert full["quality"]["top1"] == 1.0  # float32: recorded, and exact
    size = (smollm2_int4_export / "model.onnx.data").stat().st_size
    assert size * 4 < (smollm2_export / "model.onnx.data").stat().st_size


def test_smollm2_int4_with_one_layer_scaled_falls_far_below_the_bar(
    smollm2_int4_export: Path, smollm2_reference, tmp_path
):
    model, tokenizer = smollm2_reference.model, smollm2_reference.tokenizer
    dims = dims_of(model.config)
    broken = graph_faults.copy_export(smollm2_int4_export, tmp_path / "broken")
    graph_faults.scale_quantized_weight(broken, 2.0, index=0)  # layer 0's attention output
    verifier = FusedVerifier(model, str(broken), dims, "float32", capacity=128)
    q = evaluate(model, tokenizer, dims.vocab_size, verifier.teacher_forced, "int4")
    assert not q.passed and q.top1 < 0.4 and q.kl_mean > 1.0


def test_smollm2_int4_served_by_triton_answers_the_chat(smollm2_int4_export: Path, tmp_path):
    from tritonkit.model_repository import RepositorySpec, build_repository
    from tritonkit.serve import TritonServer

    built = build_repository(
        smollm2_int4_export, tmp_path / "repo", spec=RepositorySpec(name="smol4")
    )
    with (
        TritonServer(built.path, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=3) as s,
        LLMClient(s.grpc_url, model="smol4") as client,
    ):
        answer = client.chat(
            [{"role": "user", "content": "What is the capital of France?"}], temperature=0.0
        )
    assert "Paris" in answer.text and answer.finish_reason == "stop"
