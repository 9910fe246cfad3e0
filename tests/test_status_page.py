"""The status page `/_edge/` and the demo page `/_edge/demo`, in headless Chromium against a real
`edge serve`, `bench sim` and redis-server: what a person sees, and that it follows the node live."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.browser import chromium
from edge.activity import WarmActivity
from edge.statuspage import quantile
from tests.helpers import Launcher, RedisServer, Sim, wait_until
from tests.helpers.browser import Page
from tests.helpers.launch import PURGE_TOKEN, WARM_TOKEN

needs_chromium = pytest.mark.skipif(chromium() is None, reason="Chromium not installed (make system-deps)")
PLATE = "idr0001-plate384-001"
ROWS = """JSON.stringify([...document.querySelectorAll('#SECTION tr[data-row]')].map(tr =>
  Object.fromEntries([...tr.cells].map(td => [td.dataset.field, td.textContent]))))"""


def rows(page: Page, section: str) -> dict[str, dict[str, str]]:
    """The rows of one of the page's tables, by their first cell: {field: text}."""
    found = json.loads(page.js(ROWS.replace("SECTION", section)))
    return {row[next(iter(row))]: row for row in found}


@pytest.fixture
def launcher(sim: Sim) -> Iterator[Launcher]:
    started = Launcher(sim)
    yield started
    started.stop_all()


def test_quantile_interpolates_as_prometheus() -> None:
    buckets = [(0.01, 0.0), (0.1, 10.0), (1.0, 20.0), (float("inf"), 20.0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.1)
    assert quantile(buckets, 0.75) == pytest.approx(0.55)
    assert quantile(buckets, 0.25) == pytest.approx(0.055)
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert quantile([(0.1, 0.0), (float("inf"), 4.0)], 0.99) == 0.1  # past the last bound: that bound


def test_warm_activity_counts_the_last_minute() -> None:
    now = [1000.0]
    seen = WarmActivity(lambda: now[0])
    assert seen.snapshot()["active"] is False and seen.snapshot()["last_seen_s"] is None
    for _ in range(30):
        seen.add()
        now[0] += 1
    snap = seen.snapshot()
    assert snap["requests"] == 30 and snap["last_minute"] == 30 and snap["active"] is True
    now[0] += 100
    snap = seen.snapshot()
    assert snap["requests"] == 30 and snap["last_minute"] == 0 and snap["active"] is False


@needs_chromium
def test_status_page_follows_the_node(launcher: Launcher, sim: Sim, tmp_path: Path) -> None:
    """/_edge/ with memory, disk and Redis tiers: the tables are there at once, then — without reloading
    the page — show the hits of requests made meanwhile, a purge, warm-mode requests, and Redis going down."""
    redis = RedisServer()
    try:
        edge = launcher.edge("--redis", redis.url)
        page = Page(launcher, tmp_path / "profile")
        page.open(edge.url + "/_edge/")
        page.wait("!!document.querySelector('#tiers tr[data-row=redis]')")
        tiers = rows(page, "tiers")
        assert {name: row["state"] for name, row in tiers.items()} == {"memory": "up", "disk": "up", "redis": "up"}
        assert tiers["memory"]["hits"] == "0" and page.text("#overall") == "ok"
        assert rows(page, "upstreams")["omero-web"]["breaker"] == "closed"
        page.js("window.notReloaded = true")

        images = sim.plate_images(0, 20)
        with edge.client() as client:
            for _ in range(2):  # misses, then memory hits
                for image in images:
                    assert client.get(f"/webgateway/render_thumbnail/{image}/").status_code == 200
            warm = client.get(f"/webgateway/render_thumbnail/{images[0]}/", headers={"x-edge-warm": WARM_TOKEN})
            assert warm.json()["cache"] == "HIT"
            purged = client.post("/_edge/purge", json={"image": [images[1]]},
                                 headers={"authorization": f"Bearer {PURGE_TOKEN}"})
            assert purged.status_code == 200
        page.wait("+document.querySelector('#tiers tr[data-row=memory] [data-field=hits]').textContent >= 20")
        tiers = rows(page, "tiers")
        assert int(tiers["memory"]["entries"]) >= 20 and tiers["memory"]["hit_ratio"].endswith("%")
        assert int(tiers["redis"]["entries"]) >= 20, tiers["redis"]  # keys in the L2 database
        upstream = rows(page, "upstreams")["omero-web"]
        assert int(upstream["requests"]) >= 1 and upstream["p50_ms"] != "–"
        page.wait(f"document.querySelector('#purges').textContent.includes('image:{images[1]}')")
        assert "in progress: 1 warm-mode requests" in page.text("#warm")
        assert page.js("window.notReloaded") is True  # refreshed in place, not reloaded
        page.screenshot(tmp_path / "status-page.png")

        redis.stop()
        page.wait("document.querySelector('#tiers tr[data-row=redis] [data-field=state]').textContent == 'down'")
        assert page.text("#overall") == "degraded"
        page.screenshot(tmp_path / "status-page-redis-down.png")
        status = httpx.get(edge.url + "/_edge/status.json", timeout=5).json()
        assert status["status"] == "degraded" and status["tiers"][2]["state"] == "down"
        assert "token" not in json.dumps(status).lower() and PURGE_TOKEN not in edge.get("/_edge/").text
        page.close()
    finally:
        redis.stop()


@needs_chromium
def test_demo_page_shows_each_answer_and_the_backend_work(launcher: Launcher, sim: Sim, tmp_path: Path) -> None:
    """/_edge/demo: a cold load of a 384-well plate lists the grid and every get_thumbnails batch as MISS
    with the requests it cost upstream; the second load is all memory HITs at no backend cost; the
    backend button loads the same plate from the sim with JSONP and shows its time next to the edge's."""
    edge = launcher.edge()
    plate = next(p for p in sim.info["plates"] if p["name"] == PLATE)
    grid = httpx.get(f"{sim.url}/webgateway/plate/{plate['id']}/0/", timeout=10).json()["grid"]
    wells = sum(1 for row in grid for cell in row if cell)
    batches = -(-wells // sim.info["thumbnails_batch"])
    refused = edge.get("/_edge/demo?backend=http://127.0.0.2:1")  # it would load that origin's scripts
    assert refused.status_code == 400 and "one of this edge's backends" in refused.text
    page = Page(launcher, tmp_path / "profile")
    page.open(f"{edge.url}/_edge/demo?backend={sim.url}")
    page.wait("document.body.dataset.ready")
    page.js(f"jQuery('#plate').val('{plate['id']}').length")

    def load() -> tuple[list[str], int]:
        page.js("jQuery('#count').remove(); jQuery('#load').click(); 1")
        count = int(page.wait("(document.querySelector('#count') || {}).textContent"))
        answers = page.js("[...document.querySelectorAll('#requests td.answer')].map(td => td.textContent)")
        assert count == len(answers) == 1 + batches
        assert page.text("#requests tr.request td:nth-child(2)") == "plate grid"  # listed as they arrive
        return answers, int(page.text("#upstream"))

    answers, upstream = load()
    assert set(answers) == {"MISS"} and 1 + batches <= upstream <= 1 + wells, (answers, upstream)
    print(f"demo, cold: {page.text('#summary')} · {page.text('#work')}")
    page.screenshot(tmp_path / "demo-page-cold.png")
    before = sim.stats()["total"]["requests"]
    answers, upstream = load()
    assert set(answers) == {"HIT memory"} and upstream == 0
    assert "0 misses" in page.text("#work") and sim.stats()["total"]["requests"] == before
    assert page.js("document.querySelectorAll('#grid img[src^=\"data:image/jpeg\"]').length") == wells
    print(f"demo, warm: {page.text('#summary')} · {page.text('#work')}")
    page.screenshot(tmp_path / "demo-page.png")

    page.js("jQuery('#direct').click(); 1")
    page.wait("!!document.querySelector('#direct-ms')")
    assert "through the edge" in page.text("#direct-result") and int(page.text("#direct-ms").split()[0]) > 0
    wait_until(lambda: sim.stats()["total"]["requests"] >= before + 1 + batches, 10)  # the backend did the work
    print(f"demo, direct: {page.text('#direct-result')}")
    page.screenshot(tmp_path / "demo-page-direct.png")
    page.close()
