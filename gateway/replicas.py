"""Several Triton replicas behind one gateway: pick one per request, retry, probe, drain.

Each ``Replica`` has its own gRPC clients (one connection per Triton model, plus one for
health and metadata), an in-flight count and an up/down state. ``ReplicaPool``:

* picks the up replica with the fewest requests in flight; ties go round robin (the
  scan starts one further on every pick);
* starts a request there and, when the replica fails before Triton's first response
  (``ConnectionFailed``: refused, reset, UNAVAILABLE; or "model not found" from a replica
  that then fails its health check, as a draining Triton does), marks it down and starts
  the request on the next replica. Nothing has reached the HTTP client yet, so the retry
  is invisible. Once the first response has arrived the request stays where it is: a
  replica that dies then ends the stream with an error (the app sends it as an error
  event), never a retry that would repeat text already sent;
* treats an ``engine_failed`` error (``EngineFailed``: the entry model gave up, while
  Triton still reports it ready) as the replica's failure: down for ``probe_max_s`` and
  the request retried elsewhere; a ``server_busy`` one (its wait queue is full) is
  retried on another replica, and when all are full the client gets 503 + Retry-After;
* re-probes down replicas in the background (Triton's server_ready, else model_ready of
  the models asked for so far), with a backoff from ``probe_min_s`` doubling to
  ``probe_max_s``; when none is up, a request probes them all at once before it gives up
  with a 503. A probe that cannot connect, and a probe that finds a down replica up
  again, replace its gRPC connections with fresh ones (``Replica.reconnect``): an old
  channel would wait out gRPC's own reconnect backoff (1 s, growing 1.6 times per failed
  attempt) before it connects to a restarted Triton, so rejoining would take seconds
  longer than the probe interval;
* with ``discover=HOST:PORT``, re-resolves HOST's A/AAAA records every
  ``discover_interval_s`` (a Kubernetes headless Service lists one per ready pod): each
  address is a replica; one that disappears is drained (no new requests, those in flight
  finish) and dropped once idle. A failed lookup keeps the current set.

Up/down transitions are logged to ``tritonkit.gateway``; the per-replica counters are in
the gateway's ``/metrics`` (``metrics.GatewayMetrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from tritonkit.client import AsyncLLMClient, StreamChunk
from tritonkit.client.errors import (
    ClientError,
    ConnectionFailed,
    EngineFailed,
    ModelNotFound,
    ServerBusy,
    ServerStreamError,
    Timeout,
)
from tritonkit.client.results import GenerationResult

from .discovery import Resolver, diff_addresses, resolve, split_host_port
from .http_errors import APIError, is_restricted
from .metrics import GatewayMetrics
from .request_context import log

T = TypeVar("T")

PROBE_MIN_S = 0.5  # first re-probe of a replica marked down
PROBE_MAX_S = 5.0  # the backoff doubles up to this
PROBE_TIMEOUT_S = 3.0  # one health probe
_TICK_S = 0.25  # the background loop looks at the clock this often at least


class Replica:
    """One Triton server: its clients, in-flight count, and health."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        metrics: GatewayMetrics | None,
        probe_min_s: float,
    ) -> None:
        self.url = url
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.up = True  # until it fails: a new replica is tried at once
        self.draining = False  # gone from DNS: no new requests
        self.down_reason = ""
        self.backoff_s = probe_min_s
        self.next_probe = 0.0
        # An engine that gave up: Triton still answers ready, so no probe may bring the
        # replica back before this time (monotonic); then one request finds out again.
        self.held_down_until = 0.0
        self._headers = dict(headers)
        self._timeout_s = timeout_s
        self._metrics = metrics
        self._clients: dict[str, AsyncLLMClient] = {}
        self._retired: list[AsyncLLMClient] = []  # replaced, closed once nothing is in flight
        self.reconnects = 0
        self.admin = self._admin_client()
        if metrics is not None:
            metrics.replica_up.labels(url).set(1)
            metrics.replica_in_flight.labels(url).set(0)
            metrics.replica_requests.labels(url)
            metrics.replica_failures.labels(url)

    @property
    def available(self) -> bool:
        """Whether new requests may go here."""
        return self.up and not self.draining

    def client(self, model: str) -> AsyncLLMClient:
        """The (lazily connected) client of Triton model ``model`` on this replica."""
        client = self._clients.get(model)
        if client is None:
            client = AsyncLLMClient(
                self.url, model=model, timeout=self._timeout_s, headers=self._headers
            )
            self._clients[model] = client
        return client

    def _admin_client(self) -> AsyncLLMClient:
        return AsyncLLMClient(self.url, timeout=min(self._timeout_s, 30.0), headers=self._headers)

    async def reconnect(self, *, admin: bool = True) -> None:
        """Replace its clients (the admin one too with ``admin``) with fresh ones, which
        connect at once on first use. The old ones are closed now, or, while requests are
        in flight (they may be on them), once none is (``close_retired``)."""
        old = list(self._clients.values())
        self._clients = {}
        if admin:
            old.append(self.admin)
            self.admin = self._admin_client()
        self.reconnects += 1
        self._retired.extend(old)
        await self.close_retired()

    async def close_retired(self) -> None:
        """Close the replaced clients, unless a request is in flight here."""
        if self.in_flight == 0:
            retired, self._retired = self._retired, []
            for client in retired:
                await client.close()

    def begin(self) -> None:
        self.in_flight += 1
        self.requests += 1
        if self._metrics is not None:
            self._metrics.replica_in_flight.labels(self.url).inc()
            self._metrics.replica_requests.labels(self.url).inc()

    def end(self, failed: bool = False) -> None:
        self.in_flight -= 1
        if self._metrics is not None:
            self._metrics.replica_in_flight.labels(self.url).dec()
        if failed:
            self.failures += 1
            if self._metrics is not None:
                self._metrics.replica_failures.labels(self.url).inc()

    def set_up(self, up: bool, reason: str = "") -> None:
        """Record a transition (logged); nothing happens when the state does not change,
        and a replica held down (its engine gave up) is not brought up before its time."""
        if up and time.monotonic() < self.held_down_until:
            return
        if up == self.up:
            return
        self.up = up
        self.down_reason = "" if up else reason
        if self._metrics is not None:
            self._metrics.replica_up.labels(self.url).set(1 if up else 0)
        if up:
            log.warning("Triton replica %s is up again", self.url)
        else:
            log.warning("Triton replica %s is down: %s", self.url, reason)

    async def close(self) -> None:
        """Close its connections and drop its metric series."""
        clients, self._clients = [*self._clients.values(), self.admin, *self._retired], {}
        self._retired = []
        for client in clients:
            await client.close()
        if self._metrics is not None:
            for metric in (
                self._metrics.replica_up,
                self._metrics.replica_in_flight,
                self._metrics.replica_requests,
                self._metrics.replica_failures,
            ):
                with contextlib.suppress(KeyError):
                    metric.remove(self.url)


class ReplicaPool:
    """The Triton replicas of one gateway (see the module docstring)."""

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        discover: str | None = None,
        discover_interval_s: float = 5.0,
        resolver: Resolver | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 600.0,
        metrics: GatewayMetrics | None = None,
        probe_min_s: float = PROBE_MIN_S,
        probe_max_s: float = PROBE_MAX_S,
    ) -> None:
        """Nothing connects until the first request; ``discover`` is resolved then.

        ``resolver(host, port)`` gives the ``HOST:PORT`` of every address (default: the
        system's resolver, ``resolve``); tests inject their own.
        """
        self.discover = split_host_port(discover) if discover else None
        self.discover_interval_s = discover_interval_s
        self._resolver = resolver or resolve
        self._headers = dict(headers or {})
        self._timeout_s = timeout_s
        self._metrics = metrics
        self.probe_min_s = probe_min_s
        self.probe_max_s = probe_max_s
        self.replicas: dict[str, Replica] = {}
        for url in urls:
            self._add(url)
        self._rr = 0
        self._models: set[str] = set()  # Triton models asked for: what probes check
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resolved_at = float("-inf")
        self._probing: asyncio.Future[list[bool]] | None = None

    def __len__(self) -> int:
        return len(self.replicas)

    @property
    def up_count(self) -> int:
        """How many replicas take new requests now."""
        return sum(r.available for r in self.replicas.values())

    def describe(self) -> str:
        """``A, B`` or ``the replicas of HOST:PORT`` (for messages)."""
        if self.discover:
            return "the replicas of {}:{}".format(*self.discover)
        return ", ".join(self.replicas)

    # -- picking -----------------------------------------------------------------------

    def pick(self, exclude: Iterable[str] = ()) -> Replica | None:
        """The available replica with the fewest requests in flight (not in ``exclude``);
        among equals the next in round-robin order. None when there is none."""
        urls = list(self.replicas)
        if not urls:
            return None
        skip = set(exclude)
        start = self._rr % len(urls)
        self._rr += 1
        best: Replica | None = None
        for i in range(len(urls)):
            replica = self.replicas[urls[(start + i) % len(urls)]]
            if not replica.available or replica.url in skip:
                continue
            if best is None or replica.in_flight < best.in_flight:
                best = replica
        return best

    async def _choose(self, tried: set[str], last: ClientError | None) -> Replica:
        await self._ensure_running()
        replica = self.pick(tried)
        if replica is None and any(not r.up for r in self.replicas.values()):
            await self.probe_down_now()  # one may be back before its next scheduled probe
            replica = self.pick(tried)
        if replica is None:
            if isinstance(last, ModelNotFound | ServerBusy):
                raise last  # every replica answered: not found, or all of them full
            raise self._unavailable(last)
        return replica

    def _unavailable(self, last: ClientError | None) -> APIError:
        """The client's 503: counts only; which replicas and why go to the log (``detail``),
        since the answer may reach callers who should not learn internal addresses."""
        if not self.replicas:
            message = "no Triton replica: the gateway's discovery finds no address"
            host, port = self.discover or ("?", 0)
            detail = (
                f"{host} resolves to no address (port {port}); check that Triton pods are "
                "ready behind that headless Service, or give --triton-url"
            )
        else:
            down = [r for r in self.replicas.values() if not r.available]
            reasons = "; ".join(r.down_reason or f"{r.url} draining" for r in down[:3])
            if last is not None and str(last) not in reasons:
                reasons = f"{last}; {reasons}"
            message = (
                f"no Triton replica is up ({len(down)} of {len(self.replicas)} down); "
                f"retry shortly (down replicas are re-probed every {self.probe_max_s:g} s at most)"
            )
            detail = f"{reasons}; start Triton or fix --triton-url/--triton-discover"
        return APIError(503, message, type="server_error", code="triton_unavailable", detail=detail)

    # -- requests ----------------------------------------------------------------------

    async def generate(self, model: str, prompt: str, **params: Any) -> GenerationResult:
        """A whole (unstreamed) generation on one replica; retried on another while no
        answer has come (so nothing was sent to the HTTP client).

        Raises:
            APIError: 503 when no replica is up.
            ClientError: the request's own error (InvalidRequest, Timeout, ModelNotFound
                from every replica asked).
        """
        replica, result = await self._start(model, lambda c: c.generate(prompt, **params))
        replica.end()
        return result

    async def stream_events(
        self, model: str, prompt: str, **params: Any
    ) -> AsyncGenerator[StreamChunk, None]:
        """As ``AsyncLLMClient.stream_events`` on one replica. The replica is chosen, and
        changed on failure, until Triton's first response; after it, an error ends the
        stream (``ClientError``) and is never retried.

        Raises:
            APIError: 503 when no replica is up (at the first chunk).
            ClientError: as ``AsyncLLMClient.stream_events``.
        """

        async def first(client: AsyncLLMClient) -> tuple[Any, StreamChunk]:
            events = client.stream_events(prompt, **params)
            try:
                return events, await events.__anext__()
            except BaseException:
                await events.aclose()
                raise

        replica, (events, chunk) = await self._start(model, first)
        failed = False
        try:
            yield chunk
            while not chunk.is_final:
                chunk = await events.__anext__()
                yield chunk
        except ClientError as exc:
            failed = _replica_fault(exc)
            if isinstance(exc, ConnectionFailed) and not is_restricted(exc):
                replica.set_up(False, str(exc))
                self._schedule_probe(replica)
                # Text has gone out: a broken stream (502 event), not an unreachable Triton.
                raise ServerStreamError(
                    f"Triton replica {replica.url} went away mid-stream: {exc}"
                ) from exc
            raise
        finally:
            await events.aclose()
            replica.end(failed)

    async def _start(
        self, model: str, start: Callable[[AsyncLLMClient], Awaitable[T]]
    ) -> tuple[Replica, T]:
        """Run ``start`` on replicas until one gives an answer; that replica's request
        stays counted in flight (the caller calls ``end``)."""
        self._models.add(model)
        tried: set[str] = set()
        last: ClientError | None = None
        not_found: ModelNotFound | None = None
        while True:
            try:
                replica = await self._choose(tried, last)
            except APIError:
                if not_found is not None:  # the replicas that answered do not have it
                    raise not_found from None
                raise
            tried.add(replica.url)
            replica.begin()
            try:
                return replica, await start(replica.client(model))
            except ClientError as exc:
                retry = await self._failed(replica, model, exc)
                replica.end(failed=_replica_fault(exc) or not replica.up)
                if not retry:
                    raise
                if isinstance(exc, ModelNotFound) and replica.up:
                    not_found = exc
                last = exc
            except BaseException:
                replica.end()
                raise

    async def _failed(self, replica: Replica, model: str, exc: ClientError) -> bool:
        """Whether the request may go to another replica (nothing of it reached the user
        yet); marks this one down if it is."""
        if isinstance(exc, EngineFailed):
            # Its Triton reports the model ready, but the engine gave up: without this it
            # answers fastest and draws most of the traffic. Down until a probe; then one
            # request finds out again, and goes elsewhere too.
            replica.set_up(False, f"{replica.url}: {exc}")
            replica.backoff_s = self.probe_max_s
            replica.next_probe = time.monotonic() + self.probe_max_s
            replica.held_down_until = replica.next_probe  # probes see Triton ready: no proof
            return True
        if isinstance(exc, ServerBusy):
            return True  # its queue is full; another replica may have room
        if isinstance(exc, ConnectionFailed) and not is_restricted(exc):
            replica.set_up(False, str(exc))
            self._schedule_probe(replica)
            return True
        if isinstance(exc, ModelNotFound | ServerStreamError):
            # A stopping Triton unloads its models first, and cancels what it still runs
            # (a stream cut before any text: nothing went out, so another replica may
            # answer it whole). Ask whether this one is still serving.
            try:
                await asyncio.wait_for(replica.admin.is_model_ready(model), PROBE_TIMEOUT_S)
            except (ClientError, asyncio.TimeoutError) as probe_error:
                replica.set_up(False, str(probe_error) or f"{replica.url}: no answer")
                self._schedule_probe(replica)
            return True
        return False

    async def admin_call(self, call: Callable[[AsyncLLMClient], Awaitable[T]]) -> T:
        """``call(client)`` with a healthy replica's admin client; another replica when
        it cannot be reached (that one is marked down).

        Raises:
            APIError: 503 when no replica is up.
            ClientError: whatever ``call`` raises otherwise.
        """
        tried: set[str] = set()
        last: ClientError | None = None
        while True:
            replica = await self._choose(tried, last)
            tried.add(replica.url)
            try:
                return await call(replica.admin)
            except ConnectionFailed as exc:
                if is_restricted(exc):
                    raise
                replica.set_up(False, str(exc))
                self._schedule_probe(replica)
                last = exc

    # -- probes and discovery ------------------------------------------------------------

    def _schedule_probe(self, replica: Replica) -> None:
        if replica.next_probe <= time.monotonic():
            replica.backoff_s = self.probe_min_s
            replica.next_probe = time.monotonic() + replica.backoff_s

    async def probe(self, replica: Replica) -> bool:
        """Ask ``replica`` whether it serves (server_ready, else model_ready of a model
        asked for); record the answer and the next probe time. A probe that could not
        connect (or got no answer) leaves fresh connections for the next one; a down
        replica found up gets fresh model connections. Never raises."""
        unreachable = False
        try:
            ok = await asyncio.wait_for(self._serves(replica), PROBE_TIMEOUT_S)
            reason = f"Triton at {replica.url} answers but is not ready"
        except (ClientError, asyncio.TimeoutError) as exc:
            ok, reason = False, str(exc) or f"no answer from {replica.url}"
            unreachable = not isinstance(exc, ClientError) or (
                isinstance(exc, ConnectionFailed) and not is_restricted(exc)
            )
        if ok:
            replica.backoff_s = self.probe_min_s
            if not replica.up:  # its model channels may still be in gRPC's backoff
                await replica.reconnect(admin=False)
        else:
            replica.backoff_s = min(replica.backoff_s * 2, self.probe_max_s)
            replica.next_probe = time.monotonic() + replica.backoff_s
            if unreachable:
                await replica.reconnect()
        replica.set_up(ok, reason)
        return ok

    async def _serves(self, replica: Replica) -> bool:
        if await replica.admin.is_ready():
            return True
        for model in sorted(self._models):
            if await replica.admin.is_model_ready(model):
                return True
        return False

    async def probe_down_now(self) -> None:
        """Probe every down replica now (requests arriving meanwhile share the probe)."""
        probing = self._probing
        if probing is None or probing.done():
            down = [r for r in self.replicas.values() if not r.up]
            probing = self._probing = asyncio.ensure_future(
                asyncio.gather(*(self.probe(r) for r in down))
            )
        await asyncio.shield(probing)

    async def refresh_addresses(self) -> tuple[list[str], list[str]]:
        """Resolve ``discover`` now and apply it; returns (added, drained) urls.

        A failed lookup is logged and changes nothing.
        """
        if self.discover is None:
            return [], []
        host, port = self.discover
        self._resolved_at = time.monotonic()
        try:
            urls = list(await self._resolver(host, port))
        except (OSError, ValueError) as exc:  # gaierror; UnicodeError for a bad name
            log.warning("cannot resolve %s (keeping %d replicas): %s", host, len(self), exc)
            return [], []
        return self.apply_addresses(urls)

    def apply_addresses(self, urls: Iterable[str]) -> tuple[list[str], list[str]]:
        """Make the replicas ``urls``: add the new ones, drain those not listed (they are
        dropped once idle), take back a draining one listed again. Returns (added, drained)."""
        wanted = list(dict.fromkeys(urls))
        added, drained = diff_addresses(
            [u for u, r in self.replicas.items() if not r.draining], wanted
        )
        for url in added:
            if url in self.replicas:  # draining, and listed again
                self.replicas[url].draining = False
                log.warning("Triton replica %s is listed again: no longer draining", url)
            else:
                self._add(url)
                log.warning("Triton replica %s found", url)
        for url in drained:
            replica = self.replicas[url]
            replica.draining = True
            log.warning(
                "Triton replica %s left %s: draining (%d in flight)",
                url,
                self.describe(),
                replica.in_flight,
            )
        return added, drained

    async def _reap(self) -> None:
        """Drop the draining replicas that have nothing in flight."""
        for url, replica in list(self.replicas.items()):
            if replica.draining and replica.in_flight == 0:
                del self.replicas[url]
                await replica.close()
                log.warning("Triton replica %s drained and removed", url)

    async def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            if self.discover is not None and self._resolved_at == float("-inf"):
                await self.refresh_addresses()
            self._task = loop.create_task(self._watch(), name="tritonkit-replicas")

    async def _watch(self) -> None:
        """Background: re-resolve ``discover``, re-probe down replicas, drop drained ones."""
        while True:
            now = time.monotonic()
            if self.discover is not None and now - self._resolved_at >= self.discover_interval_s:
                await self.refresh_addresses()
            due = [r for r in self.replicas.values() if not r.up and r.next_probe <= now]
            if due:
                await asyncio.gather(*(self.probe(r) for r in due))
            await self._reap()
            for replica in list(self.replicas.values()):
                await replica.close_retired()
            await asyncio.sleep(_TICK_S)

    async def close(self) -> None:
        """Stop the background work and close every connection."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        for replica in list(self.replicas.values()):
            await replica.close()

    def _add(self, url: str) -> None:
        self.replicas[url] = Replica(
            url,
            headers=self._headers,
            timeout_s=self._timeout_s,
            metrics=self._metrics,
            probe_min_s=self.probe_min_s,
        )


def _replica_fault(exc: ClientError) -> bool:
    """Whether ``exc`` counts against the replica (not the request's own fault)."""
    return isinstance(exc, ConnectionFailed | Timeout | ServerStreamError)
