"""get_thumbnails batches are split into the per-image entries render_thumbnail uses."""
from __future__ import annotations

import base64

import httpx

from tests.helpers import EdgeProc, Sim


def batch_url(ids: list[int], prefix: str = "/webgateway") -> str:
    return f"{prefix}/get_thumbnails/?" + "&".join(f"id={i}" for i in ids) + "&_=1700000000000"


def plate_images(sim: Sim, n: int) -> list[int]:
    plate = sim.info["plates"][0]
    grid = httpx.get(f"{sim.url}/webgateway/plate/{plate['id']}/0/").json()["grid"]
    ids = [cell["id"] for row in grid for cell in row if cell]
    return ids[:n]


def test_batch_matches_backend_and_fills_single_entries(sim: Sim, edge: EdgeProc):
    ids = plate_images(sim, 50)
    direct = httpx.get(sim.url + batch_url(ids), timeout=15).json()
    before = sim.stats()["renders"].get("get_thumbnails", 0)
    first = edge.get(batch_url(ids))
    assert first.headers["x-edge-cache"] == "MISS"
    assert first.json() == direct and list(first.json()) == [str(i) for i in ids]
    assert sim.stats()["renders"].get("get_thumbnails", 0) - before == 50
    second = edge.get(batch_url(ids[::-1]))  # another order, another cache-buster: same entries
    assert second.headers["x-edge-cache"] == "HIT"
    assert second.json() == direct
    single = edge.get(f"/webgateway/render_thumbnail/{ids[7]}/")
    assert single.headers["x-edge-cache"] == "HIT"
    assert base64.b64encode(single.content).decode() == direct[str(ids[7])].split(",", 1)[1]
    assert sim.stats()["renders"].get("get_thumbnails", 0) - before == 50


def test_only_missing_ids_go_upstream(sim: Sim, edge: EdgeProc):
    ids = plate_images(sim, 120)[60:120]
    for iid in ids[:10]:
        edge.get(f"/webgateway/render_thumbnail/{iid}/96/")
    sim_before = sim.stats()
    r = edge.get(batch_url(ids[:40]))
    after = sim.stats()
    assert r.status_code == 200 and len(r.json()) == 40
    assert after["renders"].get("get_thumbnails", 0) - sim_before["renders"].get("get_thumbnails", 0) == 30
    assert after["requests"].get("get_thumbnails", 0) - sim_before["requests"].get("get_thumbnails", 0) == 1


def test_over_fifty_ids_never_reach_the_backend(sim: Sim, edge: EdgeProc):
    ids = plate_images(sim, 51)
    direct = httpx.get(sim.url + batch_url(ids), timeout=15)
    before = sim.stats()["total"]["requests"]
    r = edge.get(batch_url(ids))
    assert (r.status_code, r.content) == (direct.status_code, direct.content) == (500, b"Max 50 thumbnails at a time.")
    assert sim.stats()["total"]["requests"] == before


def test_nulls_and_placeholders_are_not_cached(sim: Sim, edge: EdgeProc):
    private = sim.info["private"]["lab-b"]["images"][0]
    loading = sim.info["in_progress_images"][:2]  # two images answering OMERO's one loading JPEG
    ok = plate_images(sim, 1)[0]
    ids = [ok, private, 987654321, *loading]
    direct = httpx.get(sim.url + batch_url(ids), timeout=15).json()
    for _ in range(2):
        r = edge.get(batch_url(ids))
        assert r.json() == direct
    assert direct[str(private)] is None and direct[str(987654321)] is None
    assert direct[str(loading[0])].startswith("data:image/jpeg;base64,/9j/")  # a real JPEG (clients.md §7)
    for iid in loading:
        assert edge.get(f"/webgateway/render_thumbnail/{iid}/").headers["x-edge-cache"] == "MISS"
    before = sim.stats()["renders"].get("get_thumbnails", 0)
    edge.get(batch_url([ok, *loading]))
    assert sim.stats()["renders"].get("get_thumbnails", 0) - before == 2  # only the in-progress ones again


def test_webclient_batch(sim: Sim, edge: EdgeProc):
    ids = plate_images(sim, 5)
    direct = httpx.get(sim.url + batch_url(ids, "/webclient"), timeout=15).json()
    assert edge.get(batch_url(ids, "/webclient")).json() == direct
    assert edge.get(batch_url(ids, "/webclient")).headers["x-edge-cache"] == "HIT"


def test_single_thumbnail_misses_are_coalesced_into_batches(sim: Sim, edges):
    """A per-well plate load: 120 render_thumbnail misses queueing for the upstream become a few
    get_thumbnails batches (the first misses, while the upstream has free slots, go alone)."""
    import asyncio

    edge = edges(env={"EDGE_COALESCE_WINDOW_MS": "20", "EDGE_UPSTREAM_CONCURRENCY": "2"})
    ids = plate_images(sim, 300)[180:300]
    missing_placeholder = sim.info["in_progress_images"][0]
    before = sim.stats()

    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(http2=True, base_url=edge.url, timeout=30) as client:
            return await asyncio.gather(*(client.get(f"/webgateway/render_thumbnail/{i}/?_=9") for i in
                                          [*ids, missing_placeholder, 987654329]))

    sim.faults(latency_ms=40)  # a real backend's render time: the misses queue behind the two slots
    try:
        responses = asyncio.run(load())
    finally:
        sim.faults()
    after = sim.stats()
    batches = after["requests"].get("get_thumbnails", 0) - before["requests"].get("get_thumbnails", 0)
    singles = after["requests"].get("render_thumbnail", 0) - before["requests"].get("render_thumbnail", 0)
    # at most 2 alone while slots were free, plus the placeholder and the missing image fetched alone
    assert 3 <= batches <= 12 and singles <= 8 and batches + singles <= 16  # not 122
    direct = {i: httpx.get(f"{sim.url}/webgateway/render_thumbnail/{i}/") for i in ids[:5]}
    for r, i in zip(responses, ids):
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        if i in direct:
            assert r.content == direct[i].content
    loading = httpx.get(f"{sim.url}/webgateway/render_thumbnail/{missing_placeholder}/").content
    assert responses[-2].content == loading  # the in-progress picture, as the backend sends it
    assert responses[-1].status_code == httpx.get(f"{sim.url}/webgateway/render_thumbnail/987654329/").status_code
    assert all(edge.get(f"/webgateway/render_thumbnail/{i}/").headers["x-edge-cache"] == "HIT" for i in ids[:3])
