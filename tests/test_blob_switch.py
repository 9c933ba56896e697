"""Zero-downtime version switch: publish, pull, promote and roll back under streaming load.

A real Triton in explicit model-control mode serves version 1 of ``llm`` pulled from
Azurite while four threads stream requests; version 2 (other weights, so other greedy
text) is published, pulled, promoted, then rolled back. No request may fail, and
each response must be wholly one version's text.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from stream_load import Load

from tritonkit.blob import (
    promote_on_server,
    publish_repository,
    pull_repository,
    rollback_on_server,
    server_versions,
)
from tritonkit.client import LLMClient
from tritonkit.errors import InvalidRequest
from tritonkit.serve import TritonServer

pytest_plugins = ["azurite"]
pytestmark = pytest.mark.slow

PROMPT = "the quick brown fox jumps"
PARAMS = {"max_tokens": 16, "min_tokens": 16}  # greedy (temperature 0), fixed length
THREADS = 4


def test_publish_promote_rollback_under_streaming_load_fails_nothing(
    azurite: Any, blob_repos: dict[str, Path], served: Any, tmp_path: Path
) -> None:
    store = azurite.store(azurite.new_container(), "prod/tiny")
    publish_repository(blob_repos["a"], store)
    repository = tmp_path / "repository"
    pull_repository(store, repository)
    # The greedy texts of each version, from the session's server (same weights, other names).
    text = {}
    for version, model in ((1, "llm"), (2, "llama")):
        pieces: list[str] = []
        with LLMClient(served.grpc_url, model=model) as client:
            client.generate(PROMPT, on_text=pieces.append, **PARAMS)
        text[version] = "".join(pieces)
    assert text[1] != text[2] and all(text.values())

    server = TritonServer(
        repository, http_port=0, grpc_port=0, metrics_port=0, model_control_mode="explicit",
        load_models=["llm"], exit_timeout_s=3, log_file=tmp_path / "server.log",
    )  # fmt: skip
    with server:
        url = server.grpc_url
        with Load(url, PROMPT, PARAMS, THREADS) as load:
            load.wait_for(text[1], 0)
            result = publish_repository(blob_repos["b"], store)
            assert {m.model: m.version for m in result.models}["llm"] == 2
            pull_repository(store, repository, force=True)  # versions 1 and 2, under the server
            promote_started = time.monotonic()
            switch = promote_on_server(url, "llm", 2)
            promoted_at = time.monotonic()
            assert (switch.before, switch.after) == ([1], [2])
            load.wait_for(text[2], promoted_at)
            rollback_started = time.monotonic()
            back = rollback_on_server(url, "llm")
            rolled_back_at = time.monotonic()
            assert (back.before, back.after) == ([2], [1])
            load.wait_for(text[1], rolled_back_at)
            ready = [r.version for r in server_versions(url, "llm") if r.state == "READY"]
            assert ready == [1]  # version 2 is unloading or gone
        # A version the server's repository lacks: a one-line error, and 1 keeps serving.
        with pytest.raises(InvalidRequest, match="could not load version 7 of llm") as err:
            promote_on_server(url, "llm", 7)
        assert "\n" not in str(err.value)
        assert [r.version for r in server_versions(url, "llm") if r.state == "READY"] == [1]
        # Control: a naive switch (unload, then load) drops requests, and the check sees it.
        with Load(url, PROMPT, PARAMS, THREADS) as naive:
            naive.wait_for(text[1], 0)
            with grpcclient.InferenceServerClient(url) as admin:
                admin.unload_model("llm")
                time.sleep(1.0)
                admin.load_model("llm")
            naive.wait_for(text[2], time.monotonic())  # the pulled config serves 2
        assert any(isinstance(o, BaseException) for _, _, o in naive.results)

    for moment in (promote_started, rollback_started):  # streams were running through both
        assert any(s < moment < e for s, e, _ in load.results)
    failures = [o for _, _, o in load.results if isinstance(o, BaseException)]
    assert failures == [], failures[:3]
    outcomes = [o for _, _, o in load.results]
    assert set(outcomes) == {text[1], text[2]}  # every response wholly from one version
    # What started after a switch returned came from the version switched to.
    between = {o for s, e, o in load.results if s > promoted_at and e < rollback_started}
    assert between == {text[2]}
    assert {o for s, _, o in load.results if s > rolled_back_at} == {text[1]}
