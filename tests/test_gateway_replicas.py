"""One gateway in front of several Triton replicas (``tritonkit.gateway.replicas``).

The replicas are real tritonservers serving one release, as two pods from the same
storageUri do: the toy repository (``servers.py``: a decoupled python-backend ``llm`` that
streams the prompt's words back, here one word every 20 ms so streams overlap) is
published to a real Azurite, released, pulled into ONE folder and verified against the
release's SHA-256 before any Triton serves it. Requests go through the real gateway over
HTTP. Only DNS is faked, in the discovery unit test: a resolver function whose answers
change between calls, which no real lookup on this machine can do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import TOY_REPOSITORY, misbehaving_repository, toy_server, wait_until

from tritonkit.blob import (
    ChecksumError,
    create_release,
    publish_repository,
    pull_release,
    verify_release_dir,
)
from tritonkit.errors import UsageError
from tritonkit.gateway import GatewayConfig, GatewayServer
from tritonkit.gateway.discovery import diff_addresses, split_host_port
from tritonkit.gateway.replicas import ReplicaPool
from tritonkit.serve import TritonServer, free_ports

pytest_plugins = ["azurite"]
PIECE_DELAY_S = "0.02"  # one word per 20 ms: 8 words take ~0.2 s, so requests overlap
PROBE_MAX_S = 1.0  # the gateway re-probes a down replica at least this often
REJOIN_S = 2.0  # a restarted replica serves again this soon after it is ready


# -- the picker and discovery, no server ------------------------------------------------


def test_picker_takes_the_least_in_flight_and_round_robins_ties() -> None:
    pool = ReplicaPool(["a:1", "b:1", "c:1"])
    a, b, c = (pool.replicas[u] for u in ("a:1", "b:1", "c:1"))
    # Ties go round robin: every replica in turn.
    assert [pool.pick().url for _ in range(6)] == ["a:1", "b:1", "c:1"] * 2  # type: ignore[union-attr]
    a.in_flight, b.in_flight, c.in_flight = 2, 0, 1
    assert {pool.pick().url for _ in range(5)} == {"b:1"}  # type: ignore[union-attr]
    b.in_flight = 2
    assert {pool.pick().url for _ in range(5)} == {"c:1"}  # type: ignore[union-attr]
    c.up = False  # down: skipped even though it has the fewest
    picks = {pool.pick().url for _ in range(6)}  # type: ignore[union-attr]
    assert picks == {"a:1", "b:1"}  # a and b tie at 2: both in turn
    b.draining = True
    assert {pool.pick().url for _ in range(4)} == {"a:1"}  # type: ignore[union-attr]
    assert pool.pick(exclude={"a:1"}) is None
    a.up = False
    assert pool.pick() is None and pool.up_count == 0


def test_discovery_adds_drains_and_drops_replicas_with_a_fake_resolver() -> None:
    # A mock of DNS: the answers must change between lookups, which no resolver here does.
    answers: list[Any] = [
        ["10.0.0.1:8001", "10.0.0.2:8001"],
        ["10.0.0.2:8001", "[fd00::3]:8001"],
        OSError("Temporary failure in name resolution"),
        ["10.0.0.2:8001", "[fd00::3]:8001", "10.0.0.1:8001"],
    ]
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    async def scenario() -> None:
        pool = ReplicaPool(discover="triton-headless:8001", resolver=resolver)
        assert await pool.refresh_addresses() == (["10.0.0.1:8001", "10.0.0.2:8001"], [])
        pool.replicas["10.0.0.1:8001"].in_flight = 1  # a stream still running there
        added, drained = await pool.refresh_addresses()
        assert (added, drained) == (["[fd00::3]:8001"], ["10.0.0.1:8001"])
        gone = pool.replicas["10.0.0.1:8001"]
        assert gone.draining and not gone.available
        await pool._reap()
        assert "10.0.0.1:8001" in pool.replicas  # kept while its request runs
        assert all(pool.pick().url != "10.0.0.1:8001" for _ in range(4))  # type: ignore[union-attr]
        # A failed lookup changes nothing.
        assert await pool.refresh_addresses() == ([], [])
        assert len(pool) == 3
        # Listed again while draining: taken back, not added twice.
        assert await pool.refresh_addresses() == (["10.0.0.1:8001"], [])
        assert not gone.draining and len(pool) == 3
        gone.draining, gone.in_flight = True, 0
        await pool._reap()
        assert sorted(pool.replicas) == ["10.0.0.2:8001", "[fd00::3]:8001"]
        await pool.close()

    asyncio.run(scenario())
    assert asked == [("triton-headless", 8001)] * 4
    assert diff_addresses(["a", "b"], ["b", "c"]) == (["c"], ["a"])
    assert diff_addresses(["a"], ["a"]) == ([], [])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"triton_discover": "no-port"}, "--triton-discover takes HOST:PORT"),
        ({"triton_discover": "svc:99999"}, "--triton-discover takes HOST:PORT"),
        ({"triton_discover": "svc:8001", "triton_urls": ("a:1",)}, "exclude each other"),
        ({"triton_discover": "svc:8001", "discover_interval_s": 0}, "--discover-interval"),
        ({"triton_urls": ("a:1", "b:1", "a:1")}, "a:1 is given twice"),
        ({"triton_urls": ("a:1", "http://x/y")}, "--triton-url takes"),
        ({"triton_url": "127.0.0.1"}, "--triton-url takes"),
    ],
)
def test_replica_settings_are_checked(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        GatewayConfig(**fields).check()


def test_cli_takes_repeated_urls_or_discovery() -> None:
    from tritonkit.cli import gateway_cmd

    def parse(*argv: str) -> GatewayConfig:
        parser = argparse.ArgumentParser()
        gateway_cmd.add_parser(parser.add_subparsers())
        return gateway_cmd.config_from_args(parser.parse_args(["gateway", *argv]))

    many = parse("--triton-url", "a:8001", "--triton-url", "b:8001")
    assert many.replica_urls == ("a:8001", "b:8001") and many.triton_url == "a:8001"
    assert parse("--triton-url", "a:8001").replica_urls == ("a:8001",)
    found = parse("--triton-discover", "svc:8001", "--discover-interval", "2")
    assert found.replica_urls == () and found.triton_discover == "svc:8001"
    assert found.discover_interval_s == 2
    assert split_host_port("[::1]:8001") == ("::1", 8001)
    with pytest.raises(SystemExit):  # argparse: not both
        parse("--triton-url", "a:8001", "--triton-discover", "svc:8001")


# -- real replicas ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(azurite: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder both replicas serve: a release of the (slowed) toy repository, pulled
    from Azurite and verified against the SHA-256 its creation reported."""
    root = tmp_path_factory.mktemp("replicas")
    source = root / "source"
    shutil.copytree(TOY_REPOSITORY, source, ignore=shutil.ignore_patterns("__pycache__"))
    config = source / "llm" / "config.pbtxt"
    config.write_text(config.read_text().replace('"0.002"', f'"{PIECE_DELAY_S}"'))
    store = azurite.store(azurite.new_container(), "team/toy")
    publish_repository(source, store)
    release = create_release(store)
    assert release.models == {"llm": [1]}
    folder = root / "release"
    pull_release(store, folder, release.number, expect_sha256=release.sha256)
    assert verify_release_dir(folder, release.sha256).release == release.number
    with pytest.raises(ChecksumError, match="not the pinned"):  # the check can fail
        verify_release_dir(folder, "0" * 64)
    assert PIECE_DELAY_S in (folder / "llm" / "config.pbtxt").read_text()
    return folder


@pytest.fixture(scope="module")
def replica_a(repository: Path) -> Iterator[TritonServer]:
    with toy_server(repository) as server:
        yield server


@dataclass
class Outcome:
    status: int
    text: str = ""
    error: str | None = None  # the error event of a stream, or the error body
    done: bool = False  # the stream ended with [DONE]


WORDS = "alpha bravo charlie delta echo foxtrot golf hotel"


async def stream_completion(
    client: httpx.AsyncClient, url: str, words: str = WORDS, max_tokens: int = 32
) -> Outcome:
    body = {"model": "llm", "prompt": words, "max_tokens": max_tokens, "stream": True}
    async with client.stream("POST", f"{url}/v1/completions", json=body) as reply:
        if reply.status_code != 200:
            return Outcome(reply.status_code, error=(await reply.aread()).decode())
        outcome = Outcome(200)
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                outcome.done = True
                continue
            event = json.loads(line[6:])
            if "error" in event:
                outcome.error = event["error"]["message"]
            else:
                outcome.text += event["choices"][0].get("text") or ""
        return outcome


async def concurrent_chats(url: str, n: int) -> list[int]:
    body = {
        "model": "llm",
        "messages": [{"role": "user", "content": WORDS}],
        "max_tokens": 8,
        "stream": True,
    }
    async with httpx.AsyncClient(timeout=60) as client:

        async def one() -> int:
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
                text = (await reply.aread()).decode()
                assert reply.status_code == 200 and text.rstrip().endswith("data: [DONE]"), text
                return reply.status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


def gateway_samples(url: str, name: str) -> dict[str, float]:
    """``replica -> value`` of one per-replica gateway metric."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                values[sample.labels["replica"]] = sample.value
    return values


def triton_successes(server: TritonServer) -> float:
    """Triton's own count of successful inferences of ``llm``."""
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_request_success{") and 'model="llm"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.slow
def test_two_replicas_share_load_survive_a_stop_and_take_one_back(
    repository: Path, replica_a: TritonServer
) -> None:
    b = toy_server(repository).start()
    try:
        urls = (replica_a.grpc_url, b.grpc_url)
        config = GatewayConfig(triton_urls=urls, max_concurrent=0)
        with GatewayServer(config) as gw:
            gw.app.state.gateway.pool.probe_max_s = PROBE_MAX_S  # the probe interval, at most
            # (a) 16 concurrent streamed chat completions: both replicas take a fair share.
            triton_before = [triton_successes(s) for s in (replica_a, b)]
            assert asyncio.run(concurrent_chats(gw.url, 16)) == [200] * 16
            split = gateway_samples(gw.url, "tritonkit_gateway_replica_requests_total")
            assert sum(split.values()) == 16 and min(split[u] for u in urls) >= 5, split
            served = [triton_successes(s) - n for s, n in zip((replica_a, b), triton_before)]
            assert served == [split[u] for u in urls], (served, split)
            assert gateway_samples(gw.url, "tritonkit_gateway_replica_up") == dict.fromkeys(
                urls, 1.0
            )

            # (b) Stop b (SIGTERM; Triton drains) while 6 clients send requests back to back.
            outcomes, stopped_at = asyncio.run(load_while_stopping(gw.url, b))
            not_started = [o for o in outcomes if o.status != 200]
            assert not not_started, not_started  # no request failed before streaming
            complete = [o for o in outcomes if o.error is None]
            clean_errors = [o for o in outcomes if o.error is not None]
            assert all(o.done and o.text == " " + WORDS for o in complete)
            assert all(o.done and "request id" in (o.error or "") for o in clean_errors)
            print(
                f"\n(b) {len(outcomes)} requests while stopping a replica: {len(complete)} "
                f"complete, {len(clean_errors)} clean errors, 0 failed before streaming"
            )
            assert len(complete) >= len(outcomes) - 6 and stopped_at > 0
            # Some requests met b while it drained or after it exited, and went to a instead.
            retried = gateway_samples(gw.url, "tritonkit_gateway_replica_failures_total")
            assert retried[b.grpc_url] >= 1 and retried[replica_a.grpc_url] == 0, retried
            wait_until(
                lambda: gateway_samples(gw.url, "tritonkit_gateway_replica_up")[b.grpc_url] == 0,
                what="the stopped replica to be marked down",
            )
            # After it is down every new request goes to the survivor.
            before = gateway_samples(gw.url, "tritonkit_gateway_replica_requests_total")
            a_before = triton_successes(replica_a)
            assert asyncio.run(concurrent_chats(gw.url, 8)) == [200] * 8
            after = gateway_samples(gw.url, "tritonkit_gateway_replica_requests_total")
            assert after[b.grpc_url] == before[b.grpc_url]
            assert after[replica_a.grpc_url] == before[replica_a.grpc_url] + 8
            assert triton_successes(replica_a) == a_before + 8
            health = httpx.get(f"{gw.url}/health").json()
            assert health["replicas"] == 2 and health["replicas_up"] == 1

            # (c) A new Triton on b's ports: the background probe takes it back, on fresh
            # connections, within about a probe interval of it being ready (not after
            # gRPC's reconnect backoff on the old ones).
            b = toy_server(
                repository,
                http_port=port_of(b.http_url),
                grpc_port=port_of(b.grpc_url),
                metrics_port=port_of(b.metrics_url),
            ).start()
            rejoined_s = asyncio.run(seconds_until_served(gw.url, b))
            print(f"\n(c) the restarted replica served again {rejoined_s:.2f} s after it was ready")
            assert rejoined_s < REJOIN_S, rejoined_s
            assert gateway_samples(gw.url, "tritonkit_gateway_replica_up")[b.grpc_url] == 1
            before = gateway_samples(gw.url, "tritonkit_gateway_replica_requests_total")
            b_before = triton_successes(b)
            assert asyncio.run(concurrent_chats(gw.url, 8)) == [200] * 8
            after = gateway_samples(gw.url, "tritonkit_gateway_replica_requests_total")
            assert after[b.grpc_url] - before[b.grpc_url] >= 2, (before, after)
            assert triton_successes(b) - b_before == after[b.grpc_url] - before[b.grpc_url]
    finally:
        b.stop()


async def seconds_until_served(url: str, server: TritonServer, timeout_s: float = 20) -> float:
    """Seconds from now (``server`` ready) until ``server`` has served a request of the
    gateway: pairs of streamed chats go through the gateway until Triton counts one."""
    started = time.monotonic()
    while triton_successes(server) == 0:
        assert time.monotonic() - started < timeout_s, "the restarted replica never rejoined"
        assert await concurrent_chats(url, 2) == [200] * 2
    return time.monotonic() - started


async def load_while_stopping(url: str, victim: TritonServer) -> tuple[list[Outcome], float]:
    """6 clients send streamed completions back to back; ``victim`` is stopped (and waited
    for) on a thread after 0.5 s; the load goes on 1 s past its exit."""
    outcomes: list[Outcome] = []
    stopped = threading.Event()
    stopped_at = 0.0

    def stop() -> None:
        nonlocal stopped_at
        time.sleep(0.5)
        victim.stop()
        stopped_at = time.monotonic()
        stopped.set()

    async with httpx.AsyncClient(timeout=60) as client:

        async def worker() -> None:
            deadline = None
            while deadline is None or time.monotonic() < deadline:
                outcomes.append(await stream_completion(client, url))
                if stopped.is_set() and deadline is None:
                    deadline = time.monotonic() + 1.0

        stopper = threading.Thread(target=stop)
        stopper.start()
        await asyncio.gather(*(worker() for _ in range(6)))
        stopper.join()
    return outcomes, stopped_at


@pytest.mark.slow
def test_a_replica_killed_mid_stream_ends_it_with_an_error_not_a_repeat(
    repository: Path, replica_a: TritonServer
) -> None:
    import os
    import signal

    c = toy_server(repository).start()
    words = " ".join(f"w{i}" for i in range(150))  # 3 s of streaming
    try:
        config = GatewayConfig(triton_urls=(c.grpc_url, replica_a.grpc_url))
        with GatewayServer(config) as gw:
            pool = gw.app.state.gateway.pool
            pool.replicas[replica_a.grpc_url].in_flight = 10**6  # so c takes the stream

            async def scenario() -> Outcome:
                async with httpx.AsyncClient(timeout=60) as client:
                    task = asyncio.ensure_future(stream_completion(client, gw.url, words, 200))
                    await asyncio.sleep(1.0)
                    assert c.pid is not None
                    os.killpg(c.pid, signal.SIGKILL)  # no drain: the stream breaks
                    return await task

            outcome = asyncio.run(scenario())
            pool.replicas[replica_a.grpc_url].in_flight = 0
        assert outcome.status == 200 and outcome.done and outcome.error is not None
        assert "broke off" in outcome.error and "request id" in outcome.error
        sent = outcome.text.split()
        assert 0 < len(sent) < 150 and sent == words.split()[: len(sent)]  # no repeated text
    finally:
        c.stop()


@pytest.mark.slow
def test_discovery_of_localhost_serves_through_the_address_that_answers(
    replica_a: TritonServer,
) -> None:
    port = port_of(replica_a.grpc_url)
    config = GatewayConfig(triton_discover=f"localhost:{port}", discover_interval_s=1)
    with GatewayServer(config) as gw:
        assert asyncio.run(concurrent_chats(gw.url, 4)) == [200] * 4
        up = gateway_samples(gw.url, "tritonkit_gateway_replica_up")
        assert up[f"127.0.0.1:{port}"] == 1  # and ::1, when localhost has it, is down here
        assert all(value == 0 for url, value in up.items() if url.startswith("["))
        assert httpx.get(f"{gw.url}/health").json()["status"] == "ok"


def test_a_probe_that_cannot_connect_leaves_fresh_connections() -> None:
    closed = f"127.0.0.1:{free_ports(1)[0]}"

    async def scenario() -> None:
        pool = ReplicaPool([closed])
        replica = pool.replicas[closed]
        old_admin, old_model = replica.admin, replica.client("llm")
        replica.in_flight = 1  # a request may still be on the old model client
        assert not await pool.probe(replica)
        assert "127.0.0.1" in replica.down_reason and replica.reconnects == 1
        assert replica.admin is not old_admin and replica.client("llm") is not old_model
        assert replica._retired == [old_model, old_admin]  # not closed under a request
        replica.in_flight = 0
        await replica.close_retired()
        assert replica._retired == []
        await pool.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_replica_found_up_again_gets_fresh_model_connections(replica_a: TritonServer) -> None:
    async def scenario() -> None:
        pool = ReplicaPool([replica_a.grpc_url])
        replica = pool.replicas[replica_a.grpc_url]
        admin, model = replica.admin, replica.client("llm")
        assert await pool.probe(replica) and replica.reconnects == 0  # up: nothing changes
        replica.set_up(False, "a request could not connect")
        assert await pool.probe(replica) and replica.up
        assert replica.reconnects == 1 and replica.admin is admin  # the admin one just worked
        assert replica.client("llm") is not model and replica._retired == []
        assert "one two" in (await pool.generate("llm", "one two", max_tokens=4)).text
        await pool.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_stream_cut_before_any_text_is_answered_by_another_replica(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Replica "cut" ends every request of model M with an empty final response before any
    # text (as a Triton that is stopping cancels what it runs); replica "good" serves M as
    # the toy llm. Nothing reached the user, so the gateway may answer it whole elsewhere.
    model = "cancelled_at_once"
    cut_repo = misbehaving_repository(tmp_path_factory.mktemp("cut") / "repository")
    good_repo = tmp_path_factory.mktemp("good") / "repository"
    shutil.copytree(TOY_REPOSITORY / "llm", good_repo / model,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    config = good_repo / model / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "llm"', f'name: "{model}"'))
    with toy_server(cut_repo) as cut, toy_server(good_repo) as good:

        async def scenario() -> tuple[str, str]:
            pool = ReplicaPool([cut.grpc_url, good.grpc_url])
            try:
                answers = []
                for streamed in (False, True):
                    pool.replicas[good.grpc_url].in_flight = 10**6  # so "cut" is tried first
                    if streamed:
                        chunks = [c async for c in pool.stream_events(model, "one two")]
                        answers.append("".join(c.text for c in chunks))
                    else:
                        answers.append((await pool.generate(model, "one two")).text)
                    pool.replicas[good.grpc_url].in_flight = 0
                assert pool.replicas[cut.grpc_url].up  # it answers probes: not marked down
                return answers[0], answers[1]
            finally:
                await pool.close()

        whole, streamed = asyncio.run(scenario())
    assert whole.endswith("one two") and streamed == " one two"


def _same_model_elsewhere(folder: Path, model: str) -> Path:
    """A repository serving the toy llm under ``model``'s name."""
    repo = folder / "repository"
    shutil.copytree(TOY_REPOSITORY / "llm", repo / model,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    config = repo / model / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "llm"', f'name: "{model}"'))
    return repo


def test_a_replica_whose_engine_gave_up_is_marked_down_and_skipped(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two real Tritons: "broken" reports the model ready but every request fails with
    engine_failed (what a scheduler that gave up answers); "good" serves it. The request
    is answered by "good", "broken" goes down and draws no more traffic."""
    model = "engine_failed"
    broken_repo = misbehaving_repository(tmp_path_factory.mktemp("broken") / "repository")
    good_repo = _same_model_elsewhere(tmp_path_factory.mktemp("good"), model)
    with toy_server(broken_repo) as broken, toy_server(good_repo) as good:

        async def scenario() -> list[str]:
            pool = ReplicaPool([broken.grpc_url, good.grpc_url])
            try:
                pool.replicas[good.grpc_url].in_flight = 10**6  # so "broken" is tried first
                answers = [(await pool.generate(model, "one two")).text]
                pool.replicas[good.grpc_url].in_flight = 0
                assert not pool.replicas[broken.grpc_url].up
                assert "engine_failed" in (pool.replicas[broken.grpc_url].down_reason or "")
                tried = pool.replicas[broken.grpc_url].requests
                for _ in range(4):  # least-in-flight would pick "broken" half the time
                    chunks = [c async for c in pool.stream_events(model, "one two")]
                    answers.append("".join(c.text for c in chunks))
                assert pool.replicas[broken.grpc_url].requests == tried  # never chosen again
                # Probes find its Triton ready; that is no proof the engine works again.
                await pool.probe(pool.replicas[broken.grpc_url])  # its Triton answers ready
                assert not pool.replicas[broken.grpc_url].up  # held down all the same
                return answers
            finally:
                await pool.close()

        answers = asyncio.run(scenario())
    assert answers[0].endswith("one two") and answers[1:] == [" one two"] * 4


def test_a_full_queue_is_retried_elsewhere_and_all_full_is_503_retry_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tritonkit.errors import ServerBusy
    from tritonkit.gateway.http_errors import from_client_error

    model = "server_busy"
    busy_repo = misbehaving_repository(tmp_path_factory.mktemp("busy") / "repository")
    good_repo = _same_model_elsewhere(tmp_path_factory.mktemp("roomy"), model)
    with toy_server(busy_repo) as busy, toy_server(good_repo) as good:

        async def scenario() -> None:
            pool = ReplicaPool([busy.grpc_url, good.grpc_url])
            try:
                pool.replicas[good.grpc_url].in_flight = 10**6
                assert (await pool.generate(model, "one two")).text.endswith("one two")
                assert pool.replicas[busy.grpc_url].up  # busy is not broken
            finally:
                await pool.close()
            only_busy = ReplicaPool([busy.grpc_url])
            try:
                with pytest.raises(ServerBusy) as info:
                    await only_busy.generate(model, "one two")
            finally:
                await only_busy.close()
            error = from_client_error(info.value, "req-1")
            assert error.status == 503 and error.code == "server_busy"
            assert error.headers == {"Retry-After": "1"}

        asyncio.run(scenario())


def test_no_replica_up_is_one_line_503() -> None:
    closed = [f"127.0.0.1:{p}" for p in free_ports(2)]
    with GatewayServer(GatewayConfig(triton_urls=tuple(closed))) as gw:
        reply = httpx.post(f"{gw.url}/v1/completions", json={"model": "llm", "prompt": "hi"})
        assert reply.status_code == 503
        error = reply.json()["error"]
        assert error["code"] == "triton_unavailable" and "\n" not in error["message"]
        assert "no Triton replica is up (2 of 2 down" in error["message"]
        assert not any(url in reply.text for url in closed)  # addresses stay in the log
        assert httpx.get(f"{gw.url}/health").status_code == 503
        up = gateway_samples(gw.url, "tritonkit_gateway_replica_up")
        assert up == dict.fromkeys(closed, 0.0)
