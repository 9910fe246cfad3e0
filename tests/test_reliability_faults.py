"""Reliability: faults that hang or cut off instead of refusing (issue 13).

- a Redis that accepts connections and never answers (its redis-server SIGSTOPped, then SIGCONT):
  no request waits longer than `redis_timeout` for it, the tier is skipped while it hangs (also by
  the fill lock, and by a request already waiting on another node's fill), and is used again soon
  after it answers;
- a backend that dies mid-response (headers and part of the body, then the connection closes):
  nothing stored, the client gets a 502 or the stale copy — for one fill and for a get_thumbnails batch;
- the Redis tier's reconnect schedule: exponential backoff with jitter, reset by a success (unit, a
  test clock, no sleeping);
- a slow client under hypercorn is cut off after `header_timeout`, as under granian.

Real processes on loopback (a private redis-server, the simulated OMERO, edges, and small TCP servers
of the test's own), every loop bounded, everything stopped by PID.
"""
from __future__ import annotations

import asyncio
import http.client
import os
import select
import signal
import socket
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager

import httpx
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from edge import tiers
from edge.locks import RedisLock
from edge.settings import Settings
from edge.tiers import RedisTier
from edge.upstream import Upstream, UpstreamError
from tests.helpers import EdgeProc, FakeTime, Launcher, RedisServer, Sim, wait_until

REDIS_TIMEOUT = 0.25



def thumb(iid: int) -> str:
    return f"/webgateway/render_thumbnail/{iid}/"


def batch(ids: list[int]) -> str:
    return "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids)


def redis_keys(url: str, pattern: str = "edge:e:*") -> list[bytes]:
    with closing(redis.Redis.from_url(url, socket_timeout=5)) as r:
        return list(r.scan_iter(pattern, count=1000))


def metric(edge: EdgeProc, name: str) -> str:
    return next(line.split()[-1] for line in edge.get("/_edge/metrics").text.splitlines() if line.startswith(name))


def timed_get(client: httpx.Client, path: str) -> tuple[int, float]:
    started = time.monotonic()
    r = client.get(path)
    return r.status_code, time.monotonic() - started


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


@contextmanager
def hung(server: RedisServer) -> Iterator[None]:
    """redis-server stopped (SIGSTOP): the kernel still accepts connections, nobody answers. Resumed on exit."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


# --- 1. a hung Redis -------------------------------------------------------------------------------


@pytest.mark.process
def test_hung_redis_stalls_no_request_beyond_its_timeout(sim: Sim, edges: Launcher):
    server = RedisServer()
    try:
        edge = edges("--redis", server.url, env={"EDGE_REDIS_TIMEOUT": str(REDIS_TIMEOUT)})
        ids = sim.plate_images(0, 400)
        warm, singles, batches, later = ids[:10], ids[10:130], ids[130:250], ids[250:]
        with edge.client() as client:
            before = [timed_get(client, thumb(i)) for i in warm]  # healthy Redis: the baseline
            assert all(s == 200 for s, _ in before) and len(redis_keys(server.url)) >= len(warm)
            with hung(server):
                hung_at = time.monotonic()
                # new misses one after another (each reads, locks and writes Redis when it is up) …
                seq = [timed_get(client, thumb(i)) for i in singles[:60]]
                # … get_thumbnails batches (one MGET for their members) …
                seq += [timed_get(client, batch(batches[n:n + 10])) for n in range(0, len(batches), 10)]
                # … and eight at a time
                with ThreadPoolExecutor(8) as pool:
                    burst = list(pool.map(lambda i: timed_get(edge.client(), thumb(i)), singles[60:]))
                assert metric(edge, 'edge_tier_up{tier="redis"}') == "0.0"
                hang = time.monotonic() - hung_at
            resumed_at = time.monotonic()
            # back: new misses until one of them is written to Redis again
            keys_before = len(redis_keys(server.url))
            sent = 0

            def written_again() -> bool:
                nonlocal sent
                assert client.get(thumb(later[sent])).status_code == 200
                sent += 1
                return len(redis_keys(server.url)) > keys_before

            wait_until(written_again, timeout=40, interval=0.05, message="Redis not used again within 40 s")
            resume = time.monotonic() - resumed_at
        statuses = [s for s, _ in seq + burst]
        assert statuses == [200] * len(statuses), statuses
        times = [t for _, t in seq + burst]
        print(f"\nhung Redis ({hang:.1f} s, redis_timeout {REDIS_TIMEOUT} s): {len(times)} requests, "
              f"max {max(times) * 1000:.0f} ms, p95 {p95(times) * 1000:.0f} ms, median "
              f"{statistics.median(times) * 1000:.0f} ms (healthy: max {max(t for _, t in before) * 1000:.0f} ms); "
              f"sequential max {max(t for _, t in seq) * 1000:.0f} ms, 8-way max {max(t for _, t in burst) * 1000:.0f} ms"
              f"; Redis used again {resume:.2f} s after it answered ({sent} requests)")
        assert max(times) < REDIS_TIMEOUT + 0.75, sorted(times)[-5:]
        assert p95(times) < REDIS_TIMEOUT + 0.1, sorted(times)[-10:]
        assert resume < 12.0  # at most one backoff interval (a few seconds after a hang this short)
        assert metric(edge, 'edge_tier_up{tier="redis"}') == "1.0"
        log = edge.proc.log()
        assert log.count("redis tier unavailable, serving without it: no answer within 0.25 s") == 1, log[-3000:]
        assert "redis tier is back" in log and "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


@pytest.mark.process
def test_hung_redis_releases_a_request_waiting_on_another_nodes_fill(sim: Sim, edges: Launcher):
    """A request polling for another node's fill (the lock is held in Redis) when Redis hangs fills the
    entry itself after one redis_timeout, instead of polling a dead Redis until fill_timeout."""
    server = RedisServer()
    try:
        first = edges("--redis", server.url)
        iid = sim.plate_images(1, 1)[0]
        expected = httpx.get(sim.url + thumb(iid), timeout=10).content
        assert first.get(thumb(iid)).status_code == 200
        (stored,) = redis_keys(server.url)
        digest = stored.decode().removeprefix("edge:e:")
        with closing(redis.Redis.from_url(server.url, socket_timeout=5)) as r:
            r.delete(stored)  # gone from the shared tier, and another node is filling it (for a minute)
            r.set("edge:lock:" + digest, "another-node", px=60_000)
        second = edges("--redis", server.url, env={"EDGE_FILL_TIMEOUT": "35"})  # empty L0/L1
        answer: list[tuple[int, bytes, str]] = []
        asked = time.monotonic()
        waiter = threading.Thread(target=lambda: answer.append(
            (r := second.get(thumb(iid))).status_code and (r.status_code, r.content, r.headers["x-edge-cache"])))
        waiter.start()
        time.sleep(0.5)
        assert not answer, answer  # waiting for the other node's entry
        with hung(server):
            hung_at = time.monotonic()
            waiter.join(10)
            released = time.monotonic() - hung_at
        assert answer and answer[0][:2] == (200, expected)
        print(f"\nwaiting on another node's fill: answered {released * 1000:.0f} ms after Redis hung "
              f"({time.monotonic() - asked:.2f} s in all; fill_timeout 35 s)")
        assert released < REDIS_TIMEOUT + 0.75
    finally:
        server.stop()


# --- 2. a backend that dies mid-response -------------------------------------------------------------


class CutBackend:
    """A loopback HTTP/1.1 server the edge takes for OMERO.web: it forwards each request to the sim and
    answers it whole, or — `cut` set — sends the status line, the headers and half the body, then goes
    away as a killed process does:

    - "length": Content-Length of the whole body, then FIN;
    - "chunked": one chunk announced for the whole body, then FIN;
    - "reset": Content-Length of the whole body, then RST (SO_LINGER 0);
    - "close": no length at all (the body ends when the connection does), then FIN.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.cut: str | None = None
        self.requests = 0
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(15)
            buf = b""
            for _ in range(1000):  # requests on one keep-alive connection
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = dict(line.split(":", 1) for line in lines)
                headers = {k.strip(): v.strip() for k, v in headers.items() if k.strip().lower() != "connection"}
                with self._lock:
                    self.requests += 1
                cut = self.cut
                up = http.client.HTTPConnection(*self.upstream, timeout=15)
                try:
                    up.request(method, target, headers=headers)
                    resp = up.getresponse()
                    body = resp.read()
                finally:
                    up.close()
                kept = "".join(f"{k}: {v}\r\n" for k, v in resp.getheaders()
                               if k.lower() not in ("content-length", "transfer-encoding", "connection"))
                start = f"HTTP/1.1 {resp.status} {resp.reason}\r\n{kept}"
                if cut is None:
                    conn.sendall(f"{start}content-length: {len(body)}\r\n\r\n".encode("latin-1") + body)
                    continue
                half = body[:len(body) // 2]
                if cut == "chunked":
                    out = f"{start}transfer-encoding: chunked\r\n\r\n{len(body):x}\r\n".encode("latin-1") + half
                elif cut == "close":
                    out = f"{start}connection: close\r\n\r\n".encode("latin-1") + half
                else:
                    out = f"{start}content-length: {len(body)}\r\n\r\n".encode("latin-1") + half
                conn.sendall(out)
                if cut == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        self.server.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def cut_backend(sim: Sim) -> Iterator[CutBackend]:
    backend = CutBackend(sim.url)
    yield backend
    backend.close()


def batch_values(sim: Sim, ids: list[int]) -> dict[str, str]:
    return httpx.get(sim.url + batch(ids), timeout=10).json()


CUTS = ["length", "chunked", "reset"]


@pytest.mark.process
def test_backend_dying_mid_response_stores_nothing(sim: Sim, edges: Launcher, cut_backend: CutBackend):
    """One fill and one get_thumbnails batch, from a backend that dies mid-body in each way: a clean 502 naming
    the upstream, not retried (the backend ran the request: a render that kills its worker must not kill
    three), nothing stored (the next request goes to the backend again), then the whole answer."""
    # The breaker stays closed (every cut would count): this test is about what is stored.
    edge = edges(backend=cut_backend.url, ms=False, env={"EDGE_BREAKER_FAILURES": "0"})
    ids = sim.plate_images(2, 3 + 10 * len(CUTS))
    outcomes = {}
    with edge.client() as client:
        for n, cut in enumerate(CUTS):
            single, members = ids[n], ids[len(CUTS) + 10 * n:len(CUTS) + 10 * (n + 1)]
            cut_backend.cut = cut
            for path in (thumb(single), batch(members)):
                for attempt in (1, 2):  # the second one is a miss again: the backend is asked again
                    before = cut_backend.requests
                    started = time.monotonic()
                    r = client.get(path)
                    took = time.monotonic() - started
                    asked = cut_backend.requests - before
                    assert r.status_code == 502 and r.headers["x-edge-cache"] == "MISS", (cut, path, r.status_code)
                    assert r.content.startswith(b"omero-edge: upstream omero-web closed the connection mid-response"), \
                        r.content
                    assert asked == 1, (cut, path, attempt)  # asked again, and not retried: it ran the request
                    outcomes[(cut, "batch" if "get_thumbnails" in path else "single", attempt)] = \
                        (r.content.decode().strip(), asked, took)
            cut_backend.cut = None
            r = client.get(thumb(single))
            assert (r.status_code, r.headers["x-edge-cache"]) == (200, "MISS")
            assert r.content == httpx.get(sim.url + thumb(single), timeout=10).content
            assert client.get(thumb(single)).headers["x-edge-cache"] == "HIT"
            r = client.get(batch(members))
            assert (r.status_code, r.headers["x-edge-cache"]) == (200, "MISS") and r.json() == batch_values(sim, members)
            assert client.get(batch(members)).headers["x-edge-cache"] == "HIT"
    print()
    for (cut, kind, attempt), (body, asked, took) in outcomes.items():
        print(f"cut {cut:8} {kind:6} #{attempt}: 502 {body!r}, {asked} backend requests, {took * 1000:.0f} ms")
    assert "Traceback" not in edge.proc.log(), edge.proc.log()[-3000:]


@pytest.mark.process
def test_backend_dying_mid_response_serves_the_stale_copy(sim: Sim, edges: Launcher, cut_backend: CutBackend):
    edge = edges(backend=cut_backend.url, ms=False,
                 env={"EDGE_TTL_THUMBNAIL": "1", "EDGE_STALE_WHILE_REVALIDATE": "0", "EDGE_STALE_IF_ERROR": "600",
                      "EDGE_BREAKER_FAILURES": "0"})
    ids = sim.plate_images(3, 11)
    single, members = ids[0], ids[1:]
    expected, values = httpx.get(sim.url + thumb(single), timeout=10).content, batch_values(sim, members)
    with edge.client() as client:
        assert client.get(thumb(single)).status_code == 200 and client.get(batch(members)).status_code == 200
        time.sleep(1.1)  # past freshness, inside stale-if-error
        cut_backend.cut = "length"
        before = cut_backend.requests
        r = client.get(thumb(single))
        assert (r.status_code, r.headers["x-edge-cache"], r.content) == (200, "STALE", expected)
        r = client.get(batch(members))
        assert (r.status_code, r.headers["x-edge-cache"]) == (200, "STALE") and r.json() == values
        assert cut_backend.requests - before >= 2  # both were tried
        cut_backend.cut = None
        r = client.get(thumb(single))  # the stale copy was not replaced by the cut one: refreshed now
        assert (r.status_code, r.headers["x-edge-cache"], r.content) == (200, "MISS", expected)
        r = client.get(batch(members))
        assert (r.status_code, r.headers["x-edge-cache"]) == (200, "MISS") and r.json() == values


@pytest.mark.process
def test_backend_dying_mid_close_delimited_body_stores_nothing(sim: Sim, edges: Launcher, cut_backend: CutBackend):
    edge = edges(backend=cut_backend.url, ms=False)
    iid = sim.plate_images(3, 20)[-1]
    cut_backend.cut = "close"
    with edge.client() as client:
        first = client.get(thumb(iid))
        cut_backend.cut = None
        second = client.get(thumb(iid))
    assert first.status_code == 502 or second.headers["x-edge-cache"] == "MISS", (first.status_code, len(first.content))


class HalfBody(httpx.AsyncByteStream):
    """A response body that yields its first half, then fails as a connection closed mid-response does."""

    def __init__(self, body: bytes, error: type[httpx.HTTPError]) -> None:
        self.body, self.error = body, error

    async def __aiter__(self):
        yield self.body[:len(self.body) // 2]
        raise self.error("peer closed connection without sending complete message body")


@pytest.mark.parametrize("error", [httpx.RemoteProtocolError, httpx.ReadError])
def test_a_body_cut_short_is_a_502_and_not_retried_a_connection_closed_before_answering_is(error):
    """In process (MockTransport): the pool's rule that the fault tests above see from outside."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["target"].decode())
        if len(seen) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        body = b"\xff\xd8" + bytes(1000)
        return httpx.Response(200, headers={"content-length": str(len(body))}, stream=HalfBody(body, error))

    web = Upstream("omero-web", ["http://a"], Settings(retries=2, breaker_failures=0), httpx.MockTransport(handler))

    async def scenario() -> list[UpstreamError]:
        failures = []
        for path in ("/first", "/second"):
            with pytest.raises(UpstreamError) as failed:
                await web.request("GET", path, [])
            failures.append(failed.value)
        await web.close()
        return failures

    first, second = asyncio.run(scenario())
    # /first: closed before answering (retried), then cut mid-body (not retried); /second: cut once
    assert seen == ["/first", "/first", "/second"], seen
    assert all(f.status == 502 and "closed the connection mid-response" in f.reason for f in (first, second))


# --- 3. the Redis tier's reconnect schedule (in process, a test clock) -------------------------------


class Midpoint:
    """Stands in for `random` in edge.tiers: no jitter, so the schedule is exact."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return (low + high) / 2


async def refused() -> None:
    raise RedisConnectionError("Connection refused")


async def answered() -> str:
    return "OK"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    return FakeTime().install(monkeypatch, tiers)


def attempt(tier: RedisTier, command) -> tuple[object, bool]:
    """One call through the tier: (its value, whether Redis was asked at all)."""
    asked = []

    async def counted():
        asked.append(1)
        return await command()

    return asyncio.run(tier.call(counted, "skipped")), bool(asked)


def test_redis_retries_back_off_exponentially_to_a_cap_and_reset_after_a_success(
        clock: FakeTime, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tiers, "random", Midpoint)
    tier = RedisTier("redis://127.0.0.1:1/0", 1024)
    assert attempt(tier, refused) == ("skipped", True) and not tier.up  # the first failure: down
    schedule = []
    for _ in range(9):
        interval = tier.retry_after
        schedule.append(interval)
        clock.advance(interval - 0.01)
        assert attempt(tier, refused) == ("skipped", False)  # resting: Redis not asked
        clock.advance(0.02)
        assert attempt(tier, refused) == ("skipped", True)  # the trial, failed
    assert schedule == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    clock.advance(30.01)
    assert attempt(tier, answered) == ("OK", True) and tier.up and tier.failures == 0
    assert attempt(tier, refused) == ("skipped", True) and tier.retry_after == 0.5  # a new outage starts over


def test_redis_retry_intervals_are_jittered(clock: FakeTime):
    schedules = []
    for _ in range(2):
        tier = RedisTier("redis://127.0.0.1:1/0", 1024)
        attempt(tier, refused)
        schedule = []
        for n in range(8):
            schedule.append(tier.retry_after)
            clock.advance(tier.retry_after + 0.01)
            attempt(tier, refused)
        nominal = [min(30.0, 0.5 * 2 ** n) for n in range(8)]
        assert all(0.8 * x <= got <= 1.2 * x for x, got in zip(nominal, schedule)), schedule
        schedules.append(schedule)
    assert schedules[0] != schedules[1]  # two nodes that lost one Redis do not retry in step


def test_one_trial_at_a_time_and_an_outage_under_load_counts_once(clock: FakeTime, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tiers, "random", Midpoint)
    tier = RedisTier("redis://127.0.0.1:1/0", 1024)
    for _ in range(8):  # eight calls in flight when Redis went away fail one after another
        tier._failed(RedisConnectionError("Connection reset by peer"))
    assert tier.failures == 1 and tier.retry_after == 0.5
    clock.advance(0.51)
    assert tier.usable()  # the trial
    assert not tier.usable() and not tier.usable()  # the others keep skipping Redis while it is out
    clock.advance(0.51)  # a trial that never reports (its request was cancelled): another one, an interval later
    assert tier.usable() and not tier.usable()
    tier._failed(RedisConnectionError("Connection refused"))
    assert tier.failures == 2 and tier.retry_after == 1.0


def test_hung_redis_costs_one_timeout_per_call_in_process():
    """A listener that accepts and never answers: each tier and lock call gives up after `timeout`; then the
    tier is skipped (no second wait) until its trial."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"

    async def run() -> list[tuple[str, object, float]]:
        tier = RedisTier(url, 1024, timeout=0.1)
        lock = RedisLock(tier, "me")
        out = []
        for name, call in [("get", lambda: tier.get("d", "key")), ("acquire", lambda: lock.acquire("d", 2.0)),
                           ("held", lambda: lock.held("d")), ("release", lambda: lock.release("d")),
                           ("result", lambda: lock.result("d", "key"))]:
            started = time.monotonic()
            out.append((name, await call(), time.monotonic() - started))
        await tier.close()
        return out

    try:
        (_, entry, first), *rest = asyncio.run(run())
    finally:
        listener.close()
    assert entry is None and 0.09 < first < 0.5, first
    assert [(name, value) for name, value, _ in rest] == [("acquire", True), ("held", False), ("release", None),
                                                          ("result", None)]
    assert max(t for *_, t in rest) < 0.01, rest  # skipped: the tier is down


# --- 4. slow clients under hypercorn, as under granian --------------------------------------------------

HEADER_TIMEOUT = 1.0


def trickle(port: int, request: bytes, every: float = 0.2, limit: float = 8.0) -> tuple[float | None, bytes]:
    """Sends `request` one byte per `every` s on a fresh connection (never finishing its headers) until the
    server closes it: (seconds until closed, or None if it was still open after `limit` s; what it answered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        started = time.monotonic()
        for byte in request * (int(limit / every) // len(request) + 1):
            if time.monotonic() - started > limit:
                return None, b""
            try:
                s.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - started, b""
            readable, _, _ = select.select([s], [], [], every)
            if readable:
                try:
                    answer = s.recv(4096)
                except OSError:
                    answer = b""
                return time.monotonic() - started, answer
    return None, b""


@pytest.mark.process
@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_slow_client_is_cut_off_after_header_timeout(sim: Sim, edges: Launcher, server: str):
    edge = edges(server=server, env={"EDGE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})
    port = int(edge.url.rsplit(":", 1)[1])
    iid = sim.info["public_images"][2]
    closed, answer = trickle(port, b"GET /webgateway/render_thumbnail/%d/ HTTP/1.1\r\nHost: a\r\n" % iid)
    # … while a client that sent its request at once may wait longer than header_timeout for the answer
    sim.faults(latency_ms=1500)
    try:
        started = time.monotonic()
        r = httpx.get(edge.url + thumb(sim.info["public_images"][3]), timeout=10)
        slow_answer = time.monotonic() - started
    finally:
        sim.faults()
    status_line = answer.split(b"\r\n", 1)[0]
    print(f"\n{server}: a client sending its request line at 5 bytes/s was cut off after "
          f"{closed if closed is None else round(closed, 2)} s (header_timeout {HEADER_TIMEOUT} s), "
          f"answered {status_line!r}; a 1.5 s answer was delivered ({slow_answer:.2f} s)")
    assert closed is not None and closed < HEADER_TIMEOUT + 1.0, closed
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    assert r.status_code == 200 and slow_answer >= 1.5
