"""The edge's caching rules end to end: real edge process, real simulated OMERO, real HTTP."""
from __future__ import annotations

import gzip

import httpx

from tests.helpers import EdgeProc, Sim, wait_until


def thumbs(sim: Sim, n: int = 3) -> list[int]:
    return sim.info["public_images"][:n]


def test_miss_then_hit_same_bytes_as_backend(sim: Sim, edge: EdgeProc):
    iid = thumbs(sim)[0]
    direct = httpx.get(f"{sim.url}/webgateway/render_thumbnail/{iid}/")
    first = edge.get(f"/webgateway/render_thumbnail/{iid}/")
    second = edge.get(f"/webgateway/render_thumbnail/{iid}/")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == direct.content
    assert first.headers["x-edge-cache"] == "MISS" and second.headers["x-edge-cache"] == "HIT"
    assert second.headers["x-edge-tier"] == "memory"
    assert second.headers["content-type"] == "image/jpeg"
    assert second.headers["cache-control"].startswith("public, max-age=")
    assert "set-cookie" not in first.headers and "set-cookie" not in second.headers
    assert "cookie" not in second.headers.get("vary", "").lower()


def test_equivalent_urls_share_one_render(sim: Sim, edge: EdgeProc):
    iid = thumbs(sim)[1]
    before = sim.renders()
    urls = [f"/webgateway/render_thumbnail/{iid}/", f"/webgateway/render_thumbnail/{iid}/96/?_=1",
            f"/webgateway/render_thumbnail/{iid}/96/?_=2", f"/webgateway/render_birds_eye_view/{iid}/96/"]
    statuses = [edge.get(u).headers["x-edge-cache"] for u in urls]
    assert statuses == ["MISS", "HIT", "HIT", "HIT"]
    assert sim.renders() - before == 1
    # a different size is a different entry
    assert edge.get(f"/webgateway/render_thumbnail/{iid}/64/").headers["x-edge-cache"] == "MISS"


def test_etag_304_and_head(sim: Sim, edge: EdgeProc):
    iid = thumbs(sim)[2]
    r = edge.get(f"/webgateway/render_thumbnail/{iid}/")
    etag = r.headers["etag"]
    assert etag.startswith('"')
    again = edge.get(f"/webgateway/render_thumbnail/{iid}/", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    other = edge.get(f"/webgateway/render_thumbnail/{iid}/", headers={"if-none-match": '"nope"'})
    assert other.status_code == 200
    head = httpx.head(f"{edge.url}/webgateway/render_thumbnail/{iid}/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(r.content))


def test_placeholders_are_passed_on_not_stored(sim: Sim, edge: EdgeProc):
    missing = "/webclient/render_thumbnail/987654321/"
    for _ in range(2):
        r = edge.get(missing)
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")  # OMERO's PNG labelled image/jpeg
        assert r.headers["x-edge-cache"] == "MISS"
        assert r.headers["cache-control"] == "no-cache"
    # OMERO's loading thumbnail is a real JPEG, the same bytes for every image whose pyramid is being
    # generated: learnt from the second image answering it (confirmed by imgData), its copies purged.
    loading = sim.info["in_progress_images"][:2]
    for iid in loading:
        assert edge.get(f"/webgateway/render_thumbnail/{iid}/").headers["x-edge-cache"] == "MISS"
    for iid in loading:
        r = edge.get(f"/webgateway/render_thumbnail/{iid}/")
        assert r.headers["x-edge-cache"] == "MISS" and r.headers["cache-control"] == "no-cache", iid
        assert r.content.startswith(b"\xff\xd8")
    metadata = sim.info["in_progress_images"][2]  # iviewer / the classic viewer ask imgData first
    assert "ConcurrencyException" in edge.get(f"/webgateway/imgData/{metadata}/").json()
    for _ in range(2):
        assert edge.get(f"/webclient/render_thumbnail/{metadata}/").headers["x-edge-cache"] == "MISS"


def test_negative_entries_are_brief_and_5xx_never_cached(sim: Sim, edges):
    edge = edges(env={"EDGE_TTL_NEGATIVE": "30"})
    r1 = edge.get("/api/v0/m/images/987654322/")
    r2 = edge.get("/api/v0/m/images/987654322/")
    assert r1.status_code == r2.status_code == 404
    assert (r1.headers["x-edge-cache"], r2.headers["x-edge-cache"]) == ("MISS", "HIT")
    iid = thumbs(sim, 6)[5]
    sim.faults(error_rate=1.0)
    try:
        bad = edge.get(f"/webgateway/render_thumbnail/{iid}/")
        assert bad.status_code == 500
    finally:
        sim.faults()
    good = edge.get(f"/webgateway/render_thumbnail/{iid}/")
    assert good.status_code == 200 and good.headers["x-edge-cache"] == "MISS"


def test_json_gzip_and_api_host(sim: Sim, edge: EdgeProc):
    plate = sim.info["plates"][0]["id"]
    r = httpx.get(f"{edge.url}/webgateway/plate/{plate}/", headers={"accept-encoding": "gzip"}, timeout=15)
    assert r.headers.get("content-encoding") == "gzip" and "grid" in r.json()
    raw = httpx.get(f"{edge.url}/webgateway/plate/{plate}/0/", headers={"accept-encoding": "gzip"})
    assert raw.headers["x-edge-cache"] == "HIT"  # plate/<pid>/ = plate/<pid>/0/
    # API links are absolute and follow the Host: two hosts, two entries, each with its own links
    a = httpx.get(f"{edge.url}/api/v0/m/screens/", headers={"host": "a.example"}).json()
    b = httpx.get(f"{edge.url}/api/v0/m/screens/", headers={"host": "b.example"}).json()
    assert "a.example" in a["data"][0]["url:screen"] and "b.example" in b["data"][0]["url:screen"]
    assert gzip.compress(b"x")  # the module is used for the assertion above to mean something


def test_passthrough_login_and_post(sim: Sim, edge: EdgeProc):
    with edge.client() as client:
        token = client.get("/api/v0/token/").json()["data"]
        r = client.post("/api/v0/login/", data={"username": "alice", "password": "alice-pw", "server": 1},
                        headers={"X-CSRFToken": token})
        assert r.status_code == 200 and r.headers["x-edge-cache"] == "BYPASS"
        assert sim.info["session_cookie"] in client.cookies
        # an authenticated request is not served from the public cache (public-only access)
        private = sim.info["private"]["lab-a"]["images"][0]
        mine = client.get(f"/webgateway/render_thumbnail/{private}/")
        assert mine.status_code == 200 and mine.headers["x-edge-cache"] == "BYPASS"
    anonymous = edge.get(f"/webgateway/render_thumbnail/{private}/")
    assert anonymous.status_code in (403, 404)
    assert anonymous.content != mine.content


def test_credentials_in_query_bypass(sim: Sim, edge: EdgeProc):
    iid = thumbs(sim)[0]
    r = edge.get(f"/webgateway/render_thumbnail/{iid}/?bsession=not-a-session")
    assert r.headers["x-edge-cache"] == "BYPASS"


def test_backend_down_gives_clear_502_and_stale_if_error(sim: Sim, edges):
    edge = edges(env={"EDGE_TTL_THUMBNAIL": "1", "EDGE_STALE_WHILE_REVALIDATE": "0",
                      "EDGE_STALE_IF_ERROR": "600", "EDGE_BREAKER_FAILURES": "100"})
    iid = thumbs(sim, 8)[7]
    assert edge.get(f"/webgateway/render_thumbnail/{iid}/").status_code == 200
    import time
    time.sleep(1.2)
    sim.faults(down=True)
    try:
        stale = edge.get(f"/webgateway/render_thumbnail/{iid}/")
        assert stale.status_code == 200 and stale.headers["x-edge-cache"] == "STALE"
        fresh_miss = edge.get(f"/webgateway/render_thumbnail/{thumbs(sim, 9)[8]}/")
        assert fresh_miss.status_code == 503  # the backend's own answer, passed on, not stored
    finally:
        sim.faults()
    dead = edges(backend="http://127.0.0.1:9")  # nothing listens on the discard port
    r = dead.get(f"/webgateway/render_thumbnail/{iid}/")
    assert r.status_code == 502 and b"omero-web" in r.content


def test_disk_tier_survives_restart(sim: Sim, edges):
    first = edges()
    iid = thumbs(sim, 4)[3]
    assert first.get(f"/webgateway/render_thumbnail/{iid}/").headers["x-edge-cache"] == "MISS"
    first.proc.stop()
    second = edges(cache_dir=first.cache_dir)
    r = second.get(f"/webgateway/render_thumbnail/{iid}/")
    assert (r.headers["x-edge-cache"], r.headers["x-edge-tier"]) == ("HIT", "disk")


def test_stale_while_revalidate_refreshes_in_background(sim: Sim, edges):
    import time

    edge = edges(env={"EDGE_TTL_THUMBNAIL": "1", "EDGE_STALE_WHILE_REVALIDATE": "60"})
    iid = thumbs(sim, 10)[9]
    path = f"/webgateway/render_thumbnail/{iid}/"
    assert edge.get(path).headers["x-edge-cache"] == "MISS"
    time.sleep(1.2)
    before = sim.stats()["renders"].get("render_thumbnail", 0)
    stale = edge.get(path)
    assert stale.status_code == 200 and stale.headers["x-edge-cache"] == "STALE"
    wait_until(lambda: edge.get(path).headers["x-edge-cache"] == "HIT", 5, message="no background refresh stored")
    assert sim.stats()["renders"].get("render_thumbnail", 0) - before == 1


def test_several_backends_balanced_past_a_dead_one(sim: Sim, edges):
    edge = edges("--backend", "http://127.0.0.1:9", env={"EDGE_BREAKER_FAILURES": "100"})
    ids = sim.info["public_images"][:6]
    responses = [edge.get(f"/webgateway/render_thumbnail/{i}/32/") for i in ids]
    assert all(r.status_code == 200 for r in responses)


def test_upstream_timeout_is_504(sim: Sim, edges):
    edge = edges(env={"EDGE_READ_TIMEOUT": "0.3", "EDGE_BREAKER_FAILURES": "100"})
    sim.faults(latency_ms=1500)
    try:
        r = edge.get(f"/webgateway/render_thumbnail/{thumbs(sim)[0]}/48/")
    finally:
        sim.faults()
    assert r.status_code == 504 and b"timed out" in r.content
