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
import os
import signal
import socket
import statistics
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
from edge.tiers import RedisTier
from tests.helpers import EdgeProc, FakeTime, Launcher, RedisServer, Sim, wait_until

REDIS_TIMEOUT = 0.25


def plate_images(sim: Sim, plate_index: int, n: int) -> list[int]:
    plate = sim.info["plates"][plate_index]["id"]
    grid = httpx.get(f"{sim.url}/webgateway/plate/{plate}/0/", timeout=10).json()["grid"]
    return [cell["id"] for row in grid for cell in row if cell][:n]


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
        ids = plate_images(sim, 0, 400)
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
    finally:
        server.stop()


@pytest.mark.process
def test_hung_redis_releases_a_request_waiting_on_another_nodes_fill(sim: Sim, edges: Launcher):
    """A request polling for another node's fill (the lock is held in Redis) when Redis hangs fills the
    entry itself after one redis_timeout, instead of polling a dead Redis until fill_timeout."""
    server = RedisServer()
    try:
        first = edges("--redis", server.url)
        iid = plate_images(sim, 1, 1)[0]
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
