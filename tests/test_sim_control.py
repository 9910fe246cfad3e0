"""The sim's `_sim` routes (stats, faults, info), its capacity model, and the `idr` scale."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import plate, sim_fixtures, start_sim

pytestmark = pytest.mark.process

GW = "/webgateway"


sim, anon = sim_fixtures()


def test_stats_count_requests_and_renders(sim):
    img = sim.info["public_images"][0]
    with sim.client() as c:
        sim.reset()
        assert sim.stats() == {"requests": {}, "renders": {}, "total": {"requests": 0, "renders": 0}}
        c.get(f"{GW}/render_thumbnail/{img}/")
        c.get(f"{GW}/get_thumbnails/", params=[("id", img), ("id", img + 2), ("id", 999)])
        c.get(f"{GW}/render_thumbnail/999/")
        c.get(f"{GW}/plate/{plate(sim.info, 'plate384')['id']}/")
        c.get("/api/v0/m/screens/")
        c.get("/_sim/info")
    stats = sim.stats()
    assert stats["requests"] == {"render_thumbnail": 2, "get_thumbnails": 1, "plate": 1, "api:list:screens": 1}
    assert stats["renders"] == {"render_thumbnail": 1, "get_thumbnails": 2, "plate": 1, "api:list:screens": 1}
    assert stats["total"] == {"requests": 5, "renders": 5}


def test_faults(sim):
    img = sim.info["public_images"][0]
    url = f"{sim.url}{GW}/render_thumbnail/{img}/"
    post = lambda spec: httpx.post(f"{sim.url}/_sim/faults", json=spec)  # noqa: E731
    try:
        assert post({"down": True}).json()["down"] is True
        assert httpx.get(url).status_code == 503
        assert httpx.get(f"{sim.url}/api/v0/m/screens/").status_code == 503
        assert httpx.get(f"{sim.ms_url}{GW}/imgData/{img}").status_code == 503
        assert httpx.get(f"{sim.url}/_sim/stats").status_code == 200
        post({"error_rate": 1.0})
        assert httpx.get(url).status_code == 500
        post({"latency_ms": 150})
        start = time.monotonic()
        assert httpx.get(url).status_code == 200
        assert time.monotonic() - start >= 0.15
        post({"error_rate": 1.0, "endpoints": ["render_thumbnail"]})  # one endpoint fails, the others answer
        assert httpx.get(url).status_code == 500
        assert httpx.get(f"{sim.url}/api/v0/m/screens/").status_code == 200
        assert post({"error_rate": 2}).status_code == 400
        assert post({"bogus": 1}).status_code == 400
        assert post({"endpoints": "render_thumbnail"}).status_code == 400
    finally:
        assert post({}).json() == {"error_rate": 0.0, "latency_ms": 0.0, "down": False, "endpoints": []}
    assert httpx.get(url).status_code == 200


def test_info_shape(sim):
    info = sim.info
    for key in ("scale", "session_cookie", "users", "groups", "screens", "plates", "projects", "datasets",
                "pyramid_images", "in_progress_images", "public_images", "private", "orphans", "rdefs", "counts"):
        assert key in info
    assert {u["username"] for u in info["users"]} >= {"public", "alice", "bob", "carol"}
    p384 = plate(info, "plate384")
    assert (p384["rows"], p384["columns"], p384["fields"], len(p384["acquisitions"])) == (16, 24, 4, 2)
    assert set(info["private"]) == {"lab-a", "lab-b"}
    assert all(info["private"][g][k] for g in ("lab-a", "lab-b") for k in ("images", "plates", "datasets"))
    assert info["pyramid_images"] and info["in_progress_images"] and info["orphans"]["datasets"]


def test_plate_page_uses_relative_urls(sim):
    page = httpx.get(f"{sim.url}/plates/")
    assert page.status_code == 200 and "get_thumbnails/?" in page.text and "BATCH = 50" in page.text
    assert "http://" not in page.text and httpx.get(f"{sim.url}/").text == page.text


def test_idr_scale_starts_fast_and_serves_a_plate():
    started = time.monotonic()
    s = start_sim("--scale", "idr", "--workers", "1", "--speed", "1")
    try:
        assert time.monotonic() - started < 5
        last = s.info["plates"][-1]
        assert len(s.info["plates"]) >= 300 and s.info["counts"]["images"] >= 100_000
        grid = httpx.get(f"{s.url}{GW}/plate/{last['id']}/", timeout=10).json()
        assert len(grid["grid"]) == 16
        total = httpx.get(f"{s.url}/api/v0/m/images/?limit=1&offset=150000", timeout=10).json()
        assert total["meta"]["totalCount"] >= 100_000 and len(total["data"]) == 1
        rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS")))
        assert rss_kb < 500 * 1024
        # one worker, speed 1: four default-size thumbnails (15 ms each) queue behind each other
        img = last["first_image"]
        threads = [threading.Thread(target=httpx.get, args=(f"{s.url}{GW}/render_thumbnail/{img + k}/",))
                   for k in range(4)]
        t0 = time.monotonic()
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert time.monotonic() - t0 >= 4 * 0.015
    finally:
        s.stop()


def test_h2c_prior_knowledge(sim):
    with httpx.Client(http1=False, http2=True, base_url=sim.url) as h2:
        r = h2.get("/_sim/stats")
        assert r.status_code == 200 and r.http_version == "HTTP/2"
