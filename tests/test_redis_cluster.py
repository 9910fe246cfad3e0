"""Redis Cluster as L2 (issue 16.1): a real 3-master cluster on loopback (no replicas), two `edge serve`
processes on it with no L0 and no L1 (so every hit is the cluster's), the session's simulator behind them.

Shown end to end: an entry filled by one edge hits on the other with the backend's bytes, over keys on
every master; a purge on one edge is seen by both (latency printed); `warm --direct --redis-cluster`
fills the cluster for the edges; a master SIGKILLed mid-traffic costs misses for its keys only: no 5xx,
no wrong body, the other masters' keys keep hitting, and purges still reach both edges; a purge made
while the purge state's master hangs is shared once it answers. Figures are printed (`-s`).
"""
from __future__ import annotations

import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redis.cluster import RedisCluster as SyncCluster

from edge.identity import Requester
from edge.keys import PUBLIC, digest
from edge.protocol import WARM_HEADER
from edge.purge import default_prefix
from edge.redisclient import same_slot
from edge.request import request_for
from edge.settings import Settings
from edge.tiers import RedisTier
from tests.helpers import EdgeProc, Launcher, RedisCluster, Sim, script, wait_until
from tests.helpers.launch import PURGE_TOKEN, WARM_TOKEN
from tests.helpers.warm import warm

pytestmark = pytest.mark.process

N_KEYS = 90  # thumbnails of plate 1001 (384 wells): spread over all 16384 slots, so over every master
LOAD_REQUESTS, LOAD_SECONDS, LOAD_THREADS = 2000, 40.0, 8


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    c = RedisCluster(3)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def pair(sim: Sim, cluster: RedisCluster) -> Iterator[tuple[EdgeProc, EdgeProc]]:
    """Edges A and B on the cluster, memory and disk tiers off."""
    launcher = Launcher(sim)
    edges = tuple(launcher.edge("--redis", cluster.url, "--redis-cluster", cache_dir="",
                                env={"EDGE_MEMORY_SIZE": "0"}) for _ in range(2))
    yield edges
    launcher.stop_all()


def thumb(iid: int) -> str:
    return f"/webgateway/render_thumbnail/{iid}/"


def cache(r: httpx.Response) -> tuple[str, str]:
    return r.headers.get("x-edge-cache", ""), r.headers.get("x-edge-tier", "")


def purge(edge: EdgeProc, spec: dict) -> tuple[int, float]:
    """POST /_edge/purge: the purge's number and the monotonic time its answer arrived."""
    r = httpx.post(edge.url + "/_edge/purge", json=spec, headers={"authorization": f"Bearer {PURGE_TOKEN}"},
                   timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["seq"], time.monotonic()


def has_purge(edge: httpx.Client, seq: int) -> bool:
    """Whether the edge has applied purge number `seq` (its purge list, as `warm follow` reads it)."""
    r = edge.get(f"/_edge/purges?after={seq - 1}&limit=1", headers={WARM_HEADER: WARM_TOKEN})
    return any(row["seq"] >= seq for row in r.json()["purges"])


def entry_key(path: str) -> str:
    """The Redis key the edges keep `path`'s public entry under."""
    req = request_for(Settings(), path, Requester(PUBLIC), "127.0.0.1")
    return RedisTier.prefix + digest(req.key)


def master_of(cluster: RedisCluster, keys: list[str]) -> list[int]:
    """The index (in cluster.ports) of the master serving each key."""
    with SyncCluster.from_url(cluster.url) as client:
        return [cluster.ports.index(client.get_node_from_key(k).port) for k in keys]


@pytest.fixture(scope="module")
def catalog(sim: Sim, cluster: RedisCluster) -> dict:
    """N_KEYS thumbnail paths, the backend's bytes for each (read from the sim directly), each key's master."""
    ids = sim.plate_images(0, N_KEYS)
    paths = [thumb(i) for i in ids]
    with sim.client() as c:
        body = {p: c.get(p).content for p in paths}
    return {"ids": ids, "paths": paths, "body": body,
            "master": dict(zip(paths, master_of(cluster, [entry_key(p) for p in paths])))}


def test_a_fill_on_one_edge_hits_on_the_other_on_every_master(pair, catalog, cluster):
    a, b = pair
    assert set(catalog["master"].values()) == {0, 1, 2}  # the keys cover all three masters
    for path in catalog["paths"]:
        r = a.get(path)
        assert r.status_code == 200 and cache(r)[0] == "MISS" and r.content == catalog["body"][path]
    hits = 0
    for path in catalog["paths"]:
        r = b.get(path)
        assert r.content == catalog["body"][path]
        hits += cache(r) == ("HIT", "redis")
    per_master = Counter(catalog["master"].values())
    with SyncCluster.from_url(cluster.url) as client:
        sizes = [client.memory_usage(entry_key(p)) for p in catalog["paths"]]
        bodies = [len(catalog["body"][p]) for p in catalog["paths"]]
    print(f"\ncluster hits across edges: {hits}/{len(catalog['paths'])} on B after A's fills "
          f"(keys per master {dict(sorted(per_master.items()))}); Redis memory per thumbnail entry: "
          f"mean {statistics.mean(sizes):.0f} B for mean body {statistics.mean(bodies):.0f} B")
    assert hits == len(catalog["paths"])
    status = a.get("/_edge/status.json").json()
    redis_row = next(row for row in status["tiers"] if row["tier"] == "redis")
    assert redis_row["state"] == "up" and redis_row["entries"] >= len(catalog["paths"])  # summed over the masters


def purge_latency(a: EdgeProc, b: EdgeProc, catalog: dict, pick: list[int]) -> float:
    """Purge two images cached on both edges from A: the seconds from A's answer until B has applied it
    (polled on B's purge list), after which B misses the one and A the other (one each: a refill by
    either is a valid entry for the other)."""
    (mine, theirs) = [(catalog["ids"][i], catalog["paths"][i]) for i in pick]
    for _, path in (mine, theirs):
        a.get(path)
        assert cache(b.get(path))[0] == "HIT"
    with b.client() as poll:  # one kept-alive connection: a poll costs ~1 ms, not a new client's ~40
        has_purge(poll, 1)
        seq, answered = purge(a, {"image": [mine[0], theirs[0]]})
        wait_until(lambda: has_purge(poll, seq), timeout=10, interval=0.001, message=f"B never saw purge {seq}")
        latency = time.monotonic() - answered
    assert cache(b.get(theirs[1]))[0] == "MISS"
    assert cache(a.get(mine[1]))[0] == "MISS"
    return latency


def test_a_purge_on_one_edge_is_seen_by_both(pair, catalog):
    a, b = pair
    latencies = [purge_latency(a, b, catalog, [i, i + 1]) for i in range(0, 20, 2)]
    print(f"\ncluster purge latency A → B over {len(latencies)} purges: median "
          f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 2.0


def test_fill_locks_on_the_cluster_make_one_backend_render_for_both_edges(sim: Sim, pair):
    """60 concurrent misses of one render, half on each edge, while the backend is slow: the fill lock (SET NX
    in the key's slot) lets one edge fetch, the others wait for its entry."""
    a, b = pair
    path = f"/webgateway/render_image/{sim.info['public_images'][7]}/0/0/?c=1|0:90$00FFFF&m=c"
    before = sim.stats()["renders"].get("ms:render_image", 0)
    sim.faults(latency_ms=300)
    try:
        with ThreadPoolExecutor(60) as pool:
            responses = list(pool.map(lambda i: (a, b)[i % 2].get(path), range(60)))
    finally:
        sim.faults()
    assert {r.status_code for r in responses} == {200} and len({r.content for r in responses}) == 1
    assert sim.stats()["renders"].get("ms:render_image", 0) - before == 1


def test_warm_direct_fills_the_cluster_for_the_edges(sim: Sim, pair, cluster, tmp_path):
    a, b = pair
    journal = str(tmp_path / "j.sqlite")
    result = warm("plate", "1003", "--direct", "--redis", cluster.url, "--redis-cluster", "--backend", sim.url,
                  "--edge", a.url, "--journal", journal, "--progress", "none")
    assert result.returncode == 0, result.stderr
    grid = b.get("/webgateway/plate/1003/0/")
    assert cache(grid) == ("HIT", "redis")
    ids = [cell["id"] for row in grid.json()["grid"] for cell in row if cell][:50]
    batch = a.get("/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids))
    assert cache(batch)[0] == "HIT", batch.headers


def test_a_cluster_url_naming_a_database_is_a_usage_error(sim: Sim, tmp_path):
    """A cluster has database 0 only: both CLIs say so in one line, exit status 2."""
    url = "redis://127.0.0.1:1/3"
    warmed = warm("plate", "1003", "--direct", "--redis", url, "--redis-cluster", "--backend", sim.url,
                  "--journal", str(tmp_path / "j.sqlite"), "--progress", "none")
    served = subprocess.run([script("edge"), "serve", "--redis", url, "--redis-cluster", "--backend", sim.url],
                            capture_output=True, text=True, timeout=30)
    for result in (warmed, served):
        assert result.returncode == 2 and "database 0" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def purge_master(cluster: RedisCluster) -> int:
    """The master holding the purge state (its keys share a slot)."""
    return master_of(cluster, [same_slot(default_prefix(cluster.url), True) + "purge:seq"])[0]


def load(edges: tuple[EdgeProc, ...], catalog: dict, kill: threading.Event, at: int) -> list[tuple]:
    """LOAD_REQUESTS GETs over the catalog against both edges (bounded in count and time); `kill` is set when
    request `at` starts. Each result: (index, path, status, body matches, cache, tier, after the kill)."""
    deadline = time.monotonic() + LOAD_SECONDS
    paths = catalog["paths"]
    local = threading.local()

    def one(i: int) -> tuple:
        if time.monotonic() > deadline:
            return (i, "", 0, False, "deadline", "", True)
        if i == at:
            kill.set()
        if not hasattr(local, "clients"):
            local.clients = [e.client() for e in edges]
        after = kill.is_set()
        path = paths[i % len(paths)]
        try:
            r = local.clients[i % 2].get(path)
        except httpx.HTTPError as exc:
            return (i, path, 0, False, type(exc).__name__, "", after)
        return (i, path, r.status_code, r.content == catalog["body"][path], *cache(r), after)

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        return list(pool.map(one, range(LOAD_REQUESTS)))


def test_a_master_killed_mid_traffic_costs_only_misses_for_its_keys(pair, catalog, cluster):
    a, b = pair
    victim = next(i for i in (2, 1) if i != purge_master(cluster))  # the purge state's master: the next test
    for path in catalog["paths"]:  # every key cached again (the purge test emptied some)
        a.get(path)
    kill = threading.Event()
    killer = threading.Thread(target=lambda: (kill.wait(LOAD_SECONDS), cluster.kill(victim)))
    killer.start()
    started = time.monotonic()
    results = load(pair, catalog, kill, LOAD_REQUESTS // 4)
    killer.join()
    elapsed = time.monotonic() - started
    errors = [r for r in results if r[2] != 200]
    wrong = [r for r in results if r[2] == 200 and not r[3]]
    on_dead = [r for r in results if r[6] and catalog["master"][r[1]] == victim]
    on_live = [r for r in results if r[6] and catalog["master"][r[1]] != victim]
    # Requests already in flight when the kill starts may still have been answered by the victim.
    dead_hits = sum(r[4] == "HIT" for r in on_dead[LOAD_THREADS * 2:])
    live_hits = sum(r[4] == "HIT" for r in on_live)
    print(f"\ncluster master kill: {len(results)} requests in {elapsed:.1f} s over both edges, master {victim} "
          f"SIGKILLed at request {LOAD_REQUESTS // 4}: {len(errors)} errors/non-200, {len(wrong)} wrong bodies; "
          f"after the kill its keys {dead_hits} hits / {len(on_dead)} requests, other masters' keys "
          f"{live_hits} hits / {len(on_live)} requests")
    assert not errors, errors[:5]
    assert not wrong, wrong[:5]
    assert len(results) == LOAD_REQUESTS and on_dead and on_live
    assert dead_hits == 0
    assert live_hits >= 0.9 * len(on_live)

    # The purge state lives on a surviving master: a purge on A still reaches B, whichever node B's
    # listener was subscribed to.
    live = [i for i, p in enumerate(catalog["paths"]) if catalog["master"][p] != victim]
    latency = purge_latency(a, b, catalog, live[:2])
    print(f"cluster purge latency A → B with a master dead: {latency * 1000:.1f} ms")
    health = b.get("/_edge/health").json()
    assert health["status"] == "degraded" and health["tiers"]["redis"] is False


def test_a_purge_while_the_purge_master_hangs_reaches_the_other_edge_once_it_answers(pair, catalog, cluster):
    """Runs after the kill (one master is dead): the purge state's master hangs (SIGSTOP). A purge on A is
    answered 200 within SHARE_TIMEOUT and exact on A at once; B cannot know of it while the purge state is
    unreachable; A shares it when that master answers again (SIGCONT), within a watch interval, and B misses."""
    a, b = pair
    index = purge_master(cluster)
    dead = {m for m in range(3) if not cluster.nodes[m].alive()}
    serving = [i for i, p in enumerate(catalog["paths"]) if catalog["master"][p] not in dead | {index}]
    (mine, theirs) = [(catalog["ids"][i], catalog["paths"][i]) for i in serving[-2:]]
    for _, path in (mine, theirs):
        a.get(path)
        assert cache(b.get(path))[0] == "HIT"
    cluster.nodes[index].pause()
    try:
        started = time.monotonic()
        local_seq, answered = purge(a, {"image": [mine[0], theirs[0]]})
        assert cache(a.get(mine[1]))[0] == "MISS"
        time.sleep(0.5)
        with b.client() as poll:
            assert not has_purge(poll, local_seq)  # not shared while the purge state is unreachable
    finally:
        cluster.nodes[index].pause(False)
    resumed = time.monotonic()
    with b.client() as poll:
        wait_until(lambda: has_purge(poll, local_seq), timeout=20, interval=0.01, message="never shared")
    print(f"\ncluster purge made while the purge master hung: answered 200 in {answered - started:.1f} s, "
          f"seen by B {time.monotonic() - resumed:.2f} s after the master answered again")
    assert cache(b.get(theirs[1]))[0] == "MISS"
