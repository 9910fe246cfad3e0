"""Prefetch (edge/prefetch.py): a grid's thumbnails and iviewer's first view fetched before the client asks.

In-process (tests/inprocess.py) for the rules — the client's follow-up requests are HITs with no further
backend work, nothing extra without the setting, a saturated upstream skips, nothing cached or in flight is
fetched again, the used/wasted counts — and through real processes for the webclient's JSONP flow and a
verified user's audience.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import time

import httpx
import pytest

from edge.keys import PUBLIC, digest, key_for
from edge.prefetch import Capacity, Ledger
from edge.routes import Upstream
from edge.settings import ConfigError, Settings
from tests.helpers import EdgeProc, Launcher, Sim, script, wait_until
from tests.helpers.clients import JSONP_AJAX, Exchange, IviewerSource, Page, browser_url, plate_batches
from tests.inprocess import InprocEdge, MakeEdge, SimApps
from tests.inprocess import anyio_backend, make_edge, sim_apps  # noqa: F401 - fixtures

BATCH = 50  # the sim's and the edge's thumbnails_batch


def page() -> Page:
    return Page(random.Random(15), 1_700_000_000_000)


def metric(edge: InprocEdge, name: str, kind: str) -> float:
    return edge.app.metrics.registry.get_sample_value(f"edge_prefetch_{name}_total", {"kind": kind}) or 0.0


async def jsonp(edge: InprocEdge, pg: Page, path: str) -> tuple[httpx.Response, object]:
    """`path` as the webclient's jQuery sends it (callback and `_`), and the JSON inside its answer."""
    r = await edge.get(browser_url(pg.url(JSONP_AJAX, path)))
    ex = Exchange(str(r.url), r.status_code, r.headers.get("content-type", ""), r.content)
    return r, ex.unwrapped()[1]


async def open_grid(edge: InprocEdge, sim: SimApps, index: int = 0) -> tuple[Page, dict]:
    pg = page()
    r, grid = await jsonp(edge, pg, f"/webgateway/plate/{sim.info['plates'][index]['id']}/0/")
    assert r.status_code == 200 and r.headers["x-edge-cache"] == "MISS"
    return pg, grid


def grid_ids(grid: dict) -> list[int]:
    return [cell["id"] for row in grid["grid"] for cell in row if cell]


async def batches(edge: InprocEdge, pg: Page, grid: dict) -> list[tuple[httpx.Response, dict]]:
    """The webclient's get_thumbnails batches of the grid (ome.plateview.js), all issued at once."""
    return await asyncio.gather(*(jsonp(edge, pg, step.path) for step in plate_batches(grid, {"batch": BATCH})))


# --- plate grid → thumbnails ----------------------------------------------------------------------------
pytestmark = pytest.mark.anyio


async def test_grid_miss_prefetches_its_thumbnails_as_batches(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(prefetch=True)
    pg, grid = await open_grid(edge, sim_apps)
    await edge.settle()
    ids = grid_ids(grid)
    assert sim_apps.renders("get_thumbnails") == len(ids)  # one thumbnail each, fetched as batches
    assert sim_apps.requests("get_thumbnails") == math.ceil(len(ids) / BATCH)
    answers = await batches(edge, pg, grid)
    assert [r.headers["x-edge-cache"] for r, _ in answers] == ["HIT"] * len(answers)
    assert sim_apps.requests("get_thumbnails") == math.ceil(len(ids) / BATCH)  # no further backend work
    direct = (await sim_apps.get("/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids[:BATCH]))).json()
    assert answers[0][1] == direct
    assert metric(edge, "issued", "thumbnail") == metric(edge, "used", "thumbnail") == len(ids)
    assert metric(edge, "wasted", "thumbnail") == metric(edge, "skipped", "thumbnail") == 0


async def test_prefetch_off_fetches_nothing_extra(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge()
    pg, grid = await open_grid(edge, sim_apps)
    image = sim_apps.info["pyramid_images"][0]
    assert (await edge.get(f"/iviewer/image_data/{image}/?_=1")).status_code == 200
    await edge.settle()
    assert edge.app.prefetch is None
    assert sim_apps.state.stats.requests.keys() == {"plate", "iviewer:image_data"}  # nothing else reached it
    assert [r.headers["x-edge-cache"] for r, _ in await batches(edge, pg, grid)][0] == "MISS"


async def test_a_key_cached_or_in_flight_is_not_fetched_again(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(prefetch=True)
    ids = grid_ids((await sim_apps.get(f"/webgateway/plate/{sim_apps.info['plates'][0]['id']}/0/")).json())
    first = "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids[:BATCH])
    assert (await edge.get(first)).headers["x-edge-cache"] == "MISS"  # cached before the grid
    pg, grid = await open_grid(edge, sim_apps)
    answers = await batches(edge, pg, grid)  # at once: they join the prefetch's batches in flight
    await edge.settle()
    assert sim_apps.renders("get_thumbnails") == len(ids)  # every thumbnail rendered once, in all
    assert metric(edge, "issued", "thumbnail") <= len(ids) - BATCH
    assert all(None not in doc.values() for _, doc in answers)
    assert answers[0][0].headers["x-edge-cache"] == "HIT"


async def test_purged_and_expired_prefetches_are_wasted(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(prefetch=True)
    pg, grid = await open_grid(edge, sim_apps)
    await edge.settle()
    ids = grid_ids(grid)
    await edge.purge(f"image:{ids[0]}")
    assert (await edge.get(f"/webgateway/render_thumbnail/{ids[0]}/")).headers["x-edge-cache"] == "MISS"
    assert (await edge.get(f"/webgateway/render_thumbnail/{ids[1]}/")).headers["x-edge-cache"] == "HIT"
    assert (metric(edge, "used", "thumbnail"), metric(edge, "wasted", "thumbnail")) == (1, 1)
    edge.clock.advance(edge.app.settings.ttl_thumbnail + 1)  # the rest expire unasked: swept at the next prefetch
    await open_grid(edge, sim_apps, 1)
    await edge.settle()
    assert metric(edge, "wasted", "thumbnail") == len(ids) - 1


# --- imgData → iviewer's first view -------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["/iviewer/image_data/{}/?_=1", "/webgateway/imgData/{}/?callback=jQuery1_2&_=3"])
@pytest.mark.parametrize("shape", ["pyramid", "plane"])
async def test_image_data_prefetches_iviewers_first_view(make_edge: MakeEdge, sim_apps: SimApps, route: str,
                                                         shape: str):
    edge = await make_edge(prefetch=True)
    image = sim_apps.info["pyramid_images"][0] if shape == "pyramid" else sim_apps.public_images[0]
    assert (await edge.get(route.format(image))).status_code == 200
    await edge.settle()
    info = (await sim_apps.get(f"/iviewer/image_data/{image}/")).json()
    urls = [browser_url(u) for u in IviewerSource.of(info).tiles_at(0)]  # the viewer's own derivation
    endpoint = "ms:render_image_region" if shape == "pyramid" else "ms:render_image"
    assert sim_apps.renders(endpoint) == len(urls) >= 1
    for url in urls:  # the viewer's keys are the prefetched ones
        path, _, query = url.partition("?")
        key = key_for(path, query.encode(), audience=PUBLIC)
        assert (await edge.app.cache.get(digest(key), key))[0] is not None
        assert (await edge.get(url)).headers["x-edge-cache"] == "HIT"
    assert sim_apps.renders(endpoint) == len(urls)
    assert metric(edge, "issued", "tile") == metric(edge, "used", "tile") == len(urls)


async def test_a_saturated_upstream_skips_prefetch(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(prefetch=True, upstream_concurrency=4)
    ms = edge.app.upstreams[Upstream.MS]
    for _ in range(4):  # every slot of the microservice held: no spare capacity for tiles
        await ms.limit.acquire()
    image = sim_apps.info["pyramid_images"][0]
    try:
        info = (await edge.get(f"/iviewer/image_data/{image}/?_=1")).json()
        await asyncio.wait_for(edge.settle(), 5)  # a prefetch queued for a slot would never end
    finally:
        for _ in range(4):
            ms.limit.release()
    urls = IviewerSource.of(info).tiles_at(0)
    assert sim_apps.renders("ms:render_image_region") == 0
    assert metric(edge, "skipped", "tile") == len(urls) and metric(edge, "issued", "tile") == 0
    assert (await edge.get(browser_url(urls[0]))).headers["x-edge-cache"] == "MISS"  # skipped, not queued


def test_capacity_is_a_bounded_share_of_free_slots():
    class Pool:
        limit = asyncio.Semaphore(16)

    metrics = type("M", (), {"prefetch_in_flight": type("G", (), {"inc": lambda s: None, "dec": lambda s: None})()})()
    capacity = Capacity(0.25, 16, metrics)
    assert [capacity.take(Pool) for _ in range(5)] == [True] * 4 + [False]
    capacity.give(Pool)
    Pool.limit = asyncio.Semaphore(0)  # the upstream is saturated by users
    assert not capacity.take(Pool)
    assert Capacity(0.01, 16, metrics).limit == 1


def test_ledger_counts_each_entry_once():
    from edge.metrics import Metrics

    metrics, now = Metrics(), [1000.0]
    ledger = Ledger(metrics, lambda: now[0], size=2)
    stored = type("E", (), {"stored_ok": True, "fresh_until": 1010.0})()
    for d in ("a", "b"):
        ledger.pending(d, "tile")
        ledger.stored(d, stored)
    ledger.seen("a", True)
    ledger.seen("a", True)  # only the first lookup counts
    ledger.pending("c", "tile")  # in flight: a client asking now joins it
    ledger.seen("c", False)
    for d in ("x", "y", "z"):  # the ledger overflows: the oldest unasked mark ("b") is wasted
        ledger.pending(d, "tile")
    value = lambda name: metrics.registry.get_sample_value(f"edge_prefetch_{name}_total", {"kind": "tile"})  # noqa: E731
    assert (value("used"), value("wasted")) == (2, 2)  # b and x, over the ledger's size 2


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_prefetch_share_is_a_fraction(share: float):
    with pytest.raises(ConfigError, match="prefetch_share"):
        Settings(prefetch_share=share)


# --- real processes ----------------------------------------------------------------------------------------
def prefetched(edge: EdgeProc, kind: str) -> tuple[float, float]:
    """(issued, in flight) from the edge's metrics."""
    text = httpx.get(edge.url + "/_edge/metrics", timeout=5).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("edge_")}
    return values.get(f'edge_prefetch_issued_total{{kind="{kind}"}}', 0.0), values.get("edge_prefetch_in_flight", 0.0)


def settled(edge: EdgeProc, kind: str, issued: int) -> None:
    wait_until(lambda: prefetched(edge, kind) == (issued, 0.0), timeout=20)
    time.sleep(0.2)  # the batches' disk writes finish in the background


def client_jsonp(client: httpx.Client, pg: Page, path: str) -> tuple[httpx.Response, object]:
    r = client.get(browser_url(pg.url(JSONP_AJAX, path)))
    return r, Exchange(path, r.status_code, r.headers.get("content-type", ""), r.content).unwrapped()[1]


def webclient_plate(client: httpx.Client, edge: EdgeProc, plate_id: int) -> tuple[list[int], list[httpx.Response]]:
    """The webclient's plate view through `edge`: the JSONP grid, prefetch settled, then its JSONP batches."""
    pg = page()
    grid_answer, grid = client_jsonp(client, pg, f"/webgateway/plate/{plate_id}/0/")
    assert grid_answer.status_code == 200 and grid_answer.headers["x-edge-cache"] == "MISS"
    ids = grid_ids(grid)
    settled(edge, "thumbnail", len(ids))
    return ids, [client_jsonp(client, pg, step.path)[0] for step in plate_batches(grid, {"batch": BATCH})]


@pytest.mark.process
def test_real_edge_serves_the_webclients_batches_from_prefetch(sim: Sim, edges: Launcher):
    edge = edges(env={"EDGE_PREFETCH": "on"})
    before = sim.stats()
    with httpx.Client(base_url=edge.url, timeout=20, headers={"host": "omero.test"}) as client:
        ids, answers = webclient_plate(client, edge, sim.info["plates"][0]["id"])
    after = sim.stats()
    assert [r.headers["x-edge-cache"] for r in answers] == ["HIT"] * math.ceil(len(ids) / BATCH)
    delta = lambda kind, name: after[kind].get(name, 0) - before[kind].get(name, 0)  # noqa: E731
    assert delta("renders", "get_thumbnails") == len(ids)  # the prefetch's, nothing after
    assert delta("requests", "get_thumbnails") == math.ceil(len(ids) / BATCH)


@pytest.mark.process
def test_verified_users_prefetch_stays_in_their_audience(sim: Sim, edges: Launcher, redis_server):
    edge = edges("--access", "verified", "--session-redis", redis_server.url, env={"EDGE_PREFETCH": "on"})
    cookie_name = sim.info["session_cookie"]
    login = sim.login("bob")
    cookies = {cookie_name: login.cookies[cookie_name]}
    login.close()
    plate_id = sim.info["private"]["lab-b"]["plates"][0]
    with httpx.Client(base_url=edge.url, timeout=20, cookies=cookies) as bob:
        ids, answers = webclient_plate(bob, edge, plate_id)
        assert {r.headers["x-edge-cache"] for r in answers} == {"HIT"}  # bob's own keys, his credentials
        direct = sim.client(cookies=cookies).get("/webgateway/get_thumbnails/?" +
                                                 "&".join(f"id={i}" for i in ids[:BATCH])).json()
    first = Exchange("", 200, answers[0].headers["content-type"], answers[0].content).unwrapped()[1]
    assert first == direct and None not in first.values()
    public = httpx.get(edge.url + "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids[:BATCH]),
                       timeout=20)
    assert public.headers["x-edge-cache"] == "MISS"  # the public audience was never filled
    assert set(public.json().values()) == {None}  # what the backend says to the public: not found


@pytest.mark.process
def test_bench_compares_edge_with_and_without_prefetch(tmp_path):
    """`bench plate-384 --prefetch`: edge-prefetch next to edge-cold, its counts per cell, the same backend work."""
    out = tmp_path / "plate.json"
    done = subprocess.run([script("bench"), "plate-384", "--prefetch", "--targets", "edge-cold", "--modes", "webclient",
                           "--transports", "h2", "--rtt", "0", "--repeat", "2", "--speed", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    by = {r["target"]: r for r in json.loads(out.read_text())["results"]}
    assert list(by) == ["edge-cold", "edge-prefetch"]
    counts = by["edge-prefetch"]["target_counts"]
    assert 0 < counts["issued"] == counts["used"] and counts["wasted"] == 0
    assert by["edge-prefetch"]["backend_renders"] == by["edge-cold"]["backend_renders"]
    assert "speedup_vs_edge_cold" in by["edge-prefetch"] and "target_counts" not in by["edge-cold"]
