"""Reliability: the L2 Redis tier dies, comes back, or is absent at start-up.

Real processes only: a private redis-server (killed by PID, restarted on the same port), the
simulated OMERO and edges in front of it. The edge must keep answering from L0/L1 and the
backend with no 5xx, say that L2 is down, and fill L2 again once Redis is back.
"""
from __future__ import annotations

import threading
import time
from contextlib import closing

import httpx
import pytest
import redis

from tests.helpers import EdgeProc, RedisServer, Sim, free_port, wait_until

pytestmark = pytest.mark.process



def thumb(iid: int) -> str:
    return f"/webgateway/render_thumbnail/{iid}/"


def direct_bytes(sim: Sim, ids: list[int]) -> dict[int, bytes]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        return {i: client.get(thumb(i)).content for i in ids}


def edge_keys(url: str) -> int:
    with closing(redis.Redis.from_url(url, socket_timeout=2)) as r:
        return sum(1 for _ in r.scan_iter("edge:e:*", count=1000))


def tier_up(edge: EdgeProc, tier: str) -> str:
    line = next(line for line in edge.get("/_edge/metrics").text.splitlines()
                if line.startswith(f'edge_tier_up{{tier="{tier}"}}'))
    return line.split()[-1]


def misses_until_l2_fills(edge: EdgeProc, redis_url: str, ids: list[int], expected: dict[int, bytes],
                          timeout: float = 15.0) -> int:
    """Requests for new misses (each retries the L2 write) until Redis holds an entry: how many it took."""
    sent = 0

    def one_more_miss() -> bool:
        nonlocal sent
        i = ids[sent % len(ids)]
        r = edge.get(thumb(i))
        assert r.status_code == 200 and r.content == expected[i]
        sent += 1
        return edge_keys(redis_url) > 0

    wait_until(one_more_miss, timeout, 0.1, message=f"L2 did not fill within {timeout} s of Redis being up")
    return sent


class Traffic(threading.Thread):
    """Requests `paths` round-robin through one client until stopped (bounded in count and time)."""

    def __init__(self, base: str, paths: list[str], limit: int = 5000, seconds: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.base, self.paths, self.limit, self.seconds = base, paths, limit, seconds
        self.stop = threading.Event()
        self.results: list[tuple[str, int, bytes, str, float]] = []  # path, status, body, x-edge-cache, seconds

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.base, timeout=10) as client:
            n = 0
            while not self.stop.is_set() and n < self.limit and time.monotonic() < deadline:
                path = self.paths[n % len(self.paths)]
                started = time.monotonic()
                try:
                    r = client.get(path)
                    self.results.append((path, r.status_code, r.content, r.headers.get("x-edge-cache", ""),
                                         time.monotonic() - started))
                except httpx.HTTPError as exc:
                    self.results.append((path, -1, repr(exc).encode(), "", time.monotonic() - started))
                n += 1
                time.sleep(0.002)

    def finish(self) -> list[tuple[str, int, bytes, str, float]]:
        self.stop.set()
        self.join(15)
        return self.results


def test_redis_dies_mid_traffic_then_returns(sim: Sim, edges):
    server = RedisServer()
    port = server.port
    try:
        edge = edges("--redis", server.url)
        ids = sim.plate_images(2, 40) + sim.plate_images(0, 150)
        warm, cold, later = ids[:20], ids[20:40], ids[40:]  # `later`: enough new misses to see L2 retried
        expected = direct_bytes(sim, ids)
        for i in warm:
            assert edge.get(thumb(i)).status_code == 200
        assert edge_keys(server.url) >= len(warm)

        # traffic over cached entries and new misses while Redis is killed (SIGKILL, no shutdown)
        traffic = Traffic(edge.url, [thumb(i) for pair in zip(warm, cold) for i in pair])
        traffic.start()
        time.sleep(0.5)
        server.kill()
        killed = time.monotonic()
        time.sleep(1.5)
        health = edge.get("/_edge/health").json()
        assert health["tiers"]["redis"] is False and health["status"] == "degraded"
        edge.get(thumb(cold[0]))  # a request that touches L2 just before the scrape
        assert tier_up(edge, "redis") == "0.0"
        results = traffic.finish()
        down_for = time.monotonic() - killed
        assert len(results) > 100
        errors = [(p, s) for p, s, _, _, _ in results if s != 200]
        assert errors == [], errors[:5]
        wrong = [p for p, s, body, _, _ in results if body != expected[int(p.split("/")[3])]]
        assert wrong == [], wrong[:5]
        slowest = max(r[4] for r in results)
        print(f"\nredis killed: {len(results)} requests during {down_for:.1f}s, 0 errors, slowest {slowest * 1000:.0f} ms")
        assert "redis tier unavailable" in edge.proc.log()

        # Redis returns on the same port (empty: nothing persisted); the edge reconnects and L2 fills again
        server = RedisServer(port=port)
        returned = time.monotonic()
        n = misses_until_l2_fills(edge, server.url, later, expected)
        recovery = time.monotonic() - returned
        print(f"redis back: first L2 write {recovery:.2f}s after restart ({n} requests)")
        assert recovery < 8.0  # the tier is retried 5 s after its last failure
        health = edge.get("/_edge/health").json()
        assert health["tiers"]["redis"] is True
        refilled = later[n:n + 30]
        for i in refilled:
            assert edge.get(thumb(i)).headers["x-edge-cache"] == "MISS"
        assert tier_up(edge, "redis") == "1.0"
        # a second edge with an empty disk finds the refilled entries in Redis
        other = edges("--redis", server.url)
        shared = [i for i in refilled if other.get(thumb(i)).headers["x-edge-tier"] == "redis"]
        print(f"second edge: {len(shared)}/{len(refilled)} thumbnails filled after the restart came from Redis, "
              f"{edge_keys(server.url)} edge:e:* keys")
        assert len(shared) == len(refilled)
    finally:
        server.stop()


def test_redis_absent_at_start_then_appears(sim: Sim, edges):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    started = time.monotonic()
    edge = edges("--redis", url)
    print(f"\nedge with no Redis answered /_edge/health {time.monotonic() - started:.2f}s after start")
    ids = sim.plate_images(3, 10) + sim.plate_images(0, 300)[200:]
    expected = direct_bytes(sim, ids)
    for i in ids[:10]:
        r = edge.get(thumb(i))
        assert r.status_code == 200 and r.content == expected[i]
    assert edge.get(thumb(ids[0])).headers["x-edge-cache"] == "HIT"
    assert "is not reachable at start-up" in edge.proc.log()
    assert edge.get("/_edge/health").json()["tiers"]["redis"] is False
    server = RedisServer(port=port)
    try:
        appeared = time.monotonic()
        misses_until_l2_fills(edge, server.url, ids[10:110], expected)
        print(f"redis appeared: first L2 write {time.monotonic() - appeared:.2f}s later")
        assert edge.get("/_edge/health").json()["tiers"]["redis"] is True
    finally:
        server.stop()
