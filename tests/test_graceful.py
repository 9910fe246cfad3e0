"""Restarts and upgrades (issue 17.4), through real `edge serve` processes: SIGTERM lets an in-flight request
finish within `shutdown_timeout` and refuses new connections; the restarted edge answers the entry from the
same disk tier (tests/test_reliability_disk.py shows the same for whole workloads, damaged records included);
an entry of another format version, on disk or in Redis, is a miss with the backend's bytes and is replaced."""
from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import diskcache
import httpx
import pytest
import redis

from edge.entry import FORMAT_VERSION, MAGIC, Entry
from edge.identity import Requester
from edge.keys import PUBLIC
from edge.request import request_for
from edge.settings import Settings
from tests.helpers import Launcher, RedisServer, Sim, wait_until

pytestmark = pytest.mark.process

SLOW_MS = 2000
IMAGE = {"granian": 4, "hypercorn": 5}  # each server's own URL: a miss when the request is made


@pytest.mark.parametrize("server", sorted(IMAGE))
def test_sigterm_finishes_in_flight_requests_then_a_restart_keeps_the_disk_tier(sim: Sim, edges: Launcher,
                                                                                server: str):
    path = f"/webgateway/render_thumbnail/{sim.info['public_images'][IMAGE[server]]}/"
    expected = httpx.get(sim.url + path, timeout=10).content
    edge = edges("--shutdown-timeout", "8", server=server)
    answer: list[object] = []

    sim.faults(latency_ms=SLOW_MS)
    try:
        client = threading.Thread(target=lambda: answer.append(_get_or_error(edge.url + path)))
        client.start()
        time.sleep(0.6)  # the request is at the backend now
        signalled = time.monotonic()
        os.kill(edge.proc.pid, signal.SIGTERM)
        time.sleep(0.4)
        with pytest.raises(httpx.TransportError) as refused:  # a new connection is not answered
            httpx.get(edge.url + "/_edge/health", timeout=2)
        client.join(15)
        edge.proc.popen.wait(10)
        exited = time.monotonic() - signalled
    finally:
        sim.faults()
    r = answer[0]
    print(f"\n{server}: in-flight request {getattr(r, 'status_code', r)} with {len(getattr(r, 'content', b''))} "
          f"bytes; exit {exited:.2f} s after SIGTERM (request needed {SLOW_MS / 1000:.1f} s, bound 8 s); "
          f"a new connection after SIGTERM: {type(refused.value).__name__}")
    assert isinstance(r, httpx.Response), r
    assert (r.status_code, r.headers["x-edge-cache"], r.content) == (200, "MISS", expected)
    assert exited < 8 and edge.proc.popen.returncode is not None
    assert "Traceback" not in edge.proc.log()

    again = edges(cache_dir=edge.cache_dir, server=server)
    r = again.get(path)
    assert (r.status_code, r.headers["x-edge-cache"], r.headers["x-edge-tier"], r.content) == \
        (200, "HIT", "disk", expected)


def test_sigterm_kills_what_outlives_the_bound(sim: Sim, edges: Launcher):
    edge = edges("--shutdown-timeout", "1")
    path = f"/webgateway/render_thumbnail/{sim.plate_images(0, 1, first=20)[0]}/"
    outcome: list[object] = []
    sim.faults(latency_ms=3 * SLOW_MS)
    try:
        client = threading.Thread(target=lambda: outcome.append(_get_or_error(edge.url + path)))
        client.start()
        time.sleep(0.6)
        signalled = time.monotonic()
        os.kill(edge.proc.pid, signal.SIGTERM)
        edge.proc.popen.wait(10)
        exited = time.monotonic() - signalled
        client.join(10)
    finally:
        sim.faults()
    print(f"\nshutdown_timeout 1 s, a {3 * SLOW_MS / 1000:.0f} s request in flight: exit {exited:.2f} s after "
          f"SIGTERM; the client got {outcome[0]!r}")
    assert exited < 3 and isinstance(outcome[0], httpx.TransportError)


def _get_or_error(url: str) -> httpx.Response | httpx.HTTPError:
    try:
        return httpx.get(url, timeout=15)
    except httpx.HTTPError as exc:
        return exc


def other_versions(raw: bytes) -> dict[str, object]:
    """What another edge version (or program) may have left under an entry's name."""
    newer = MAGIC.replace(str(FORMAT_VERSION).encode(), str(FORMAT_VERSION + 1).encode())
    return {"newer format": newer + raw[len(MAGIC):], "older format": b"OE0\n" + raw[len(MAGIC):]}


def test_other_format_on_disk_is_a_miss_and_replaced(sim: Sim, edges: Launcher):
    ids = sim.info["public_images"][6:9]
    paths = [f"/webgateway/render_thumbnail/{i}/" for i in ids]
    expected = {p: httpx.get(sim.url + p, timeout=10).content for p in paths}
    first = edges()
    assert all(first.get(p).status_code == 200 for p in paths)
    first.proc.stop()
    cache = diskcache.Cache(first.cache_dir)
    try:
        digests = {p: request_for(Settings(), p, Requester(PUBLIC), first.url).digest for p in paths}
        raw = cache[digests[paths[0]]]
        assert Entry.loads(raw).body == expected[paths[0]]
        bad = {**other_versions(raw), "pickled object": {"status": 200, "body": b"old"}}
        for p, (how, value) in zip(paths, bad.items()):
            cache.set(digests[p], value)
    finally:
        cache.close()
    second = edges(cache_dir=first.cache_dir)
    for p in paths:
        r = second.get(p)
        assert (r.status_code, r.headers["x-edge-cache"], r.content) == (200, "MISS", expected[p]), p
    wait_until(lambda: all(second.get(p).headers["x-edge-tier"] == "memory" for p in paths), timeout=5)
    third = edges(cache_dir=first.cache_dir, env={"EDGE_MEMORY_SIZE": "0"})
    for p in paths:  # replaced on disk by the refill
        r = third.get(p)
        assert (r.headers["x-edge-cache"], r.headers["x-edge-tier"], r.content) == ("HIT", "disk", expected[p])
    log = second.proc.log()
    print(f"\ndisk: {list(bad)} -> misses with the backend's bytes, refilled on disk")
    assert "Traceback" not in log and "tier unavailable" not in log  # the tier never went down


def test_other_format_in_redis_is_a_miss_and_replaced(sim: Sim, edges: Launcher, redis_server: RedisServer):
    url = f"redis://127.0.0.1:{redis_server.port}/14"
    store = redis.Redis.from_url(url)
    store.flushdb()
    path = f"/webgateway/render_thumbnail/{sim.info['public_images'][9]}/"
    expected = httpx.get(sim.url + path, timeout=10).content
    edge = edges("--redis", url, "--cache-dir", "", env={"EDGE_MEMORY_SIZE": "0"})
    try:
        assert edge.get(path).headers["x-edge-cache"] == "MISS"
        assert edge.get(path).headers["x-edge-tier"] == "redis"
        (key,) = store.keys("edge:e:*")
        for how, value in other_versions(store.get(key)).items():
            store.set(key, value)
            r = edge.get(path)
            assert (r.status_code, r.headers["x-edge-cache"], r.content) == (200, "MISS", expected), how
            r = edge.get(path)
            assert (r.headers["x-edge-cache"], r.headers["x-edge-tier"], r.content) == ("HIT", "redis", expected)
            assert store.get(key).startswith(MAGIC)
    finally:
        store.flushdb()
        store.close()
    assert "Traceback" not in edge.proc.log()
