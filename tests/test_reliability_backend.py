"""Reliability: the backend is down, erroring, slow or gone.

Cached entries are served (stale-if-error), uncached requests get a quick 5xx with a clear body,
the circuit breaker opens (requests stop reaching the backend) and closes after `breaker_reset`,
nothing wrong is stored, and misses fill normally once the backend is back. Faults are injected
into the shared simulated OMERO and always cleared in `finally`.
"""
from __future__ import annotations

import time

import httpx

from tests.helpers import Sim, free_port, wait_until


def plate_images(sim: Sim, plate_index: int, n: int, field: int = 0) -> list[int]:
    plate = sim.info["plates"][plate_index]["id"]
    grid = httpx.get(f"{sim.url}/webgateway/plate/{plate}/{field}/", timeout=10).json()["grid"]
    return [cell["id"] for row in grid for cell in row if cell][:n]


def thumb(iid: int) -> str:
    return f"/webgateway/render_thumbnail/{iid}/"


def sim_requests(sim: Sim) -> int:
    return sim.stats()["total"]["requests"]


def timed(client, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = client.get(path)
    return r, time.monotonic() - started


def test_backend_down_stale_if_error_breaker_opens_and_closes(sim: Sim, edges):
    edge = edges(env={"EDGE_TTL_THUMBNAIL": "1", "EDGE_STALE_WHILE_REVALIDATE": "0", "EDGE_STALE_IF_ERROR": "600",
                      "EDGE_BREAKER_FAILURES": "3", "EDGE_BREAKER_RESET": "3"})
    client = edge.client()
    ids = plate_images(sim, 1, 16, field=1)
    cached, uncached = ids[:6], ids[6:]
    expected = {i: httpx.get(sim.url + thumb(i), timeout=10).content for i in ids}
    for i in cached:
        assert edge.get(thumb(i)).status_code == 200
    time.sleep(1.1)  # every cached entry is now past its freshness, inside stale-if-error
    sim.faults(down=True)
    try:
        stale, _ = timed(client, thumb(cached[0]))
        assert stale.status_code == 200 and stale.headers["x-edge-cache"] == "STALE"
        assert stale.content == expected[cached[0]]
        # the backend's own 503s count as failures until the breaker opens (3 in a row)
        answers = [timed(client, thumb(uncached[n])) for n in range(3)]
        opened = time.monotonic()
        statuses = [r.status_code for r, _ in answers]
        assert statuses[0] == 503 and all(s in (502, 503) for s in statuses), statuses
        assert all(r.headers["cache-control"] == "no-cache" if "cache-control" in r.headers else True
                   for r, _ in answers)
        health = edge.get("/_edge/health").json()
        assert health["upstreams"]["omero-web"] == "open" and health["status"] == "degraded"
        # open: nothing reaches the backend, misses fail fast with a clear body, cached entries still serve
        before, by_endpoint = sim_requests(sim), sim.stats()["requests"]
        fast = [timed(client, thumb(uncached[n % len(uncached)])) for n in range(20)]
        stale_open = [timed(client, thumb(i)) for i in cached]
        after = sim_requests(sim)
        assert after == before, (f"{after - before} requests reached the backend with the breaker open",
                                 {k: v - by_endpoint.get(k, 0) for k, v in sim.stats()["requests"].items()
                                  if v != by_endpoint.get(k, 0)}, time.monotonic() - opened)
        assert all(r.status_code == 502 and b"omero-web" in r.content and b"circuit open" in r.content
                   for r, _ in fast), {r.status_code: r.content for r, _ in fast}
        slowest_open = max(t for _, t in fast)
        assert slowest_open < 0.5
        assert all(r.status_code == 200 and r.headers["x-edge-cache"] == "STALE" and r.content == expected[i]
                   for (r, _), i in zip(stale_open, cached))
        # half-open after breaker_reset: one trial goes through, fails, and the breaker opens again
        time.sleep(max(0.0, opened + 3.1 - time.monotonic()))
        before = sim_requests(sim)
        trial = [client.get(thumb(uncached[0])).status_code for _ in range(5)]
        assert sim_requests(sim) - before == 1, trial
        assert trial[0] == 503 and trial[1:] == [502] * 4
    finally:
        sim.faults()
    back = time.monotonic()

    # the breaker closes at its next trial (within breaker_reset), then misses fill normally
    def filled() -> bool:
        status = client.get(thumb(uncached[1])).status_code
        assert status in (200, 502), status
        return status == 200

    wait_until(filled, 10, message="the breaker stayed open 10 s after the backend returned")
    recovered = time.monotonic() - back
    assert recovered < 3.5, recovered
    print(f"\nbreaker: opened after 3 failures, {len(fast)} open-breaker 502s in at most {slowest_open * 1000:.1f} ms, "
          f"0 backend requests while open; closed {recovered:.2f}s after the backend returned (reset 3 s)")
    assert edge.get("/_edge/health").json()["upstreams"]["omero-web"] == "closed"
    client.close()
    for i in uncached:  # nothing from the outage was stored: each id is filled now, with the backend's bytes
        first, second = edge.get(thumb(i)), edge.get(thumb(i))
        assert first.status_code == second.status_code == 200
        assert first.content == second.content == expected[i]
        assert second.headers["x-edge-cache"] == "HIT"
    for i in cached:  # the stale entries refresh
        r = edge.get(thumb(i))
        assert r.status_code == 200 and r.headers["x-edge-cache"] == "MISS" and r.content == expected[i]


def test_backend_erroring_stores_nothing_wrong(sim: Sim, edges):
    edge = edges(env={"EDGE_BREAKER_FAILURES": "1000"})
    ids = plate_images(sim, 1, 40, field=0)
    plate = sim.info["plates"][1]["id"]
    paths = [thumb(i) for i in ids] + [f"/webgateway/imgData/{i}/" for i in ids[:10]] + \
            [f"/webgateway/plate/{plate}/0/", f"/api/v0/m/plates/{plate}/"]
    expected = {p: httpx.get(sim.url + p, timeout=10, headers={"host": "edge.test"}).content for p in paths}
    statuses: dict[int, int] = {}
    sim.faults(error_rate=0.5)
    try:
        with httpx.Client(base_url=edge.url, timeout=10, headers={"host": "edge.test"}) as client:
            for n in range(3 * len(paths)):
                path = paths[n % len(paths)]
                r = client.get(path)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code in (200, 500), (path, r.status_code, r.content[:200])
                if r.status_code == 200:
                    assert r.content == expected[path], path
                else:
                    assert r.headers["cache-control"] == "no-cache"
    finally:
        sim.faults()
    print(f"\nerror_rate 0.5: {statuses}")
    assert statuses.get(500, 0) > 10 and statuses.get(200, 0) > 10
    with httpx.Client(base_url=edge.url, timeout=10, headers={"host": "edge.test"}) as client:
        for path in paths:
            r = client.get(path)
            assert r.status_code == 200 and r.content == expected[path], path


def test_backend_slow_gives_504_and_dead_backend_gives_502(sim: Sim, edges):
    edge = edges(env={"EDGE_READ_TIMEOUT": "0.3", "EDGE_BREAKER_FAILURES": "1000"})
    iid = plate_images(sim, 1, 1, field=1)[-1]
    sim.faults(latency_ms=1500)
    try:
        with edge.client() as client:
            r, took = timed(client, f"/webgateway/render_thumbnail/{iid}/64/")
    finally:
        sim.faults()
    assert r.status_code == 504 and b"omero-web timed out" in r.content, r.content
    assert took < 1.2, took
    again = edge.get(f"/webgateway/render_thumbnail/{iid}/64/")
    assert again.status_code == 200 and again.headers["x-edge-cache"] == "MISS"

    dead = edges(backend=f"http://127.0.0.1:{free_port()}", env={"EDGE_BREAKER_FAILURES": "3"})
    with dead.client() as client:
        answers = [timed(client, thumb(iid)) for _ in range(8)]
    assert all(r.status_code == 502 for r, _ in answers)
    assert b"unreachable" in answers[0][0].content and b"circuit open" in answers[-1][0].content
    first = [t for _, t in answers[:3]]
    open_ = [t for _, t in answers[3:]]
    print(f"\ndead backend: 502 in {max(first) * 1000:.0f} ms with retries, then {max(open_) * 1000:.1f} ms "
          f"with the breaker open")
    assert max(first) < 2.0 and max(open_) < 0.2
    # a passed-through request to a dead backend is a clear 502 too
    login = dead.get("/webclient/login/")
    assert login.status_code == 502 and b"omero-web" in login.content
