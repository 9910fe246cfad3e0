"""Purges that cannot silently fail: Redis losing its state (restart without persistence, FLUSHDB) and two
deployments on one Redis server. Each case answered 200 and kept serving HITs before the fix."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.helpers import EdgeProc, Launcher, RedisServer, Sim, wait_until

pytestmark = pytest.mark.process


def purge(edge: EdgeProc, spec: dict) -> None:
    r = httpx.post(edge.url + "/_edge/purge", json=spec, headers={"authorization": "Bearer purge-secret"}, timeout=10)
    assert r.status_code == 200, r.text


def cached(edge: EdgeProc, path: str) -> None:
    edge.get(path)
    assert edge.get(path).headers["x-edge-cache"] == "HIT", path


def raise_counter(edge: EdgeProc, iid: int, n: int = 30) -> None:
    """Purges that take the shared sequence well above 1, as a site's history would."""
    for _ in range(n):
        purge(edge, {"image": [iid]})


@pytest.fixture
def server() -> Iterator[list[RedisServer]]:
    """A Redis of the test's own (it is restarted and flushed), in a list so a test can replace it."""
    servers = [RedisServer()]
    yield servers
    servers[-1].stop()


def test_purge_after_a_redis_restart_without_persistence(sim: Sim, edges: Launcher, server):
    edge = edges("--redis", server[0].url)
    iids = sim.plate_images(1, 2, 40)
    raise_counter(edge, iids[1])
    path = f"/webgateway/render_thumbnail/{iids[0]}/"
    cached(edge, path)
    server[0].stop()
    server.append(RedisServer(port=server[0].port))  # empty: the counter starts again from nothing
    wait_until(lambda: edge.get("/_edge/health").json()["tiers"].get("redis"), timeout=15)
    cached(edge, path)
    purge(edge, {"image": [iids[0]]})
    assert edge.get(path).headers["x-edge-cache"] == "MISS"


def test_a_flushed_redis_counts_as_everything_purged(sim: Sim, edges: Launcher, server):
    edge = edges("--redis", server[0].url)
    iids = sim.plate_images(1, 3, 50)
    raise_counter(edge, iids[2])
    paths = [f"/webgateway/render_thumbnail/{i}/" for i in iids[:2]]
    for path in paths:
        cached(edge, path)
    redis.Redis.from_url(server[0].url).flushdb()
    # Within the state check's interval the node treats everything cached before the loss as purged.
    wait_until(lambda: edge.get(paths[1]).headers["x-edge-cache"] == "MISS", timeout=5)
    cached(edge, paths[0])  # refilled after the loss: cached again
    purge(edge, {"image": [iids[0]]})  # and a purge after the loss still takes
    assert edge.get(paths[0]).headers["x-edge-cache"] == "MISS"


def test_two_deployments_on_one_redis_server_keep_their_purges_apart(sim: Sim, edges: Launcher, server):
    url = server[0].url
    busy = edges("--redis", url.replace("/0", "/1"))
    quiet = edges("--redis", url.replace("/0", "/2"))
    iids = sim.plate_images(1, 3, 60)
    raise_counter(busy, iids[2], 40)
    path = f"/webgateway/render_thumbnail/{iids[0]}/"
    cached(quiet, path)
    cached(busy, path)
    purge(quiet, {"all": True})
    assert quiet.get(path).headers["x-edge-cache"] == "MISS"
    assert busy.get(path).headers["x-edge-cache"] == "HIT"  # another deployment's purge is not ours
    keys = {k.decode() for k in redis.Redis.from_url(url.replace("/0", "/2")).keys("edge:2:purge*")}
    assert {"edge:2:purge:seq", "edge:2:purge:gen"} <= keys
