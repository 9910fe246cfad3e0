"""Single-flight, Redis shared by two edge processes, purge across tiers and nodes, health and metrics."""
from __future__ import annotations

import asyncio
import json
import subprocess

import httpx
import pytest

from tests.helpers import Sim, script

pytestmark = pytest.mark.process


async def _burst(urls: list[str], http2: bool) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(http2=http2, timeout=30, limits=limits) as client:
        return await asyncio.gather(*(client.get(u) for u in urls))


def burst(urls: list[str], http2: bool = False) -> list[httpx.Response]:
    return asyncio.run(_burst(urls, http2))


def test_single_flight_100_concurrent_misses(sim: Sim, edges):
    edge = edges()
    iid = sim.info["public_images"][3]
    url = f"{edge.url}/webgateway/render_image/{iid}/0/0/?c=1|0:255$FF0000&m=c&_=1"
    before = sim.stats()["renders"].get("ms:render_image", 0)
    sim.faults(latency_ms=300)
    try:
        responses = burst([url] * 100, http2=True)
    finally:
        sim.faults()
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses}) == 1
    assert sim.stats()["renders"].get("ms:render_image", 0) - before == 1
    caches = [r.headers["x-edge-cache"] for r in responses]
    assert caches.count("MISS") == 100  # every one of them waited for the single fill
    metrics = edge.get("/_edge/metrics").text
    assert "edge_coalesced_total 99.0" in metrics


def test_single_flight_across_workers(sim: Sim, edges):
    edge = edges("--workers", "2")
    iid = sim.info["public_images"][4]
    url = f"{edge.url}/webgateway/render_image/{iid}/0/0/?c=1|0:200$00FF00&m=c"
    before = sim.stats()["renders"].get("ms:render_image", 0)
    sim.faults(latency_ms=300)
    try:
        responses = burst([url] * 60)  # 60 HTTP/1.1 connections, spread over both workers
    finally:
        sim.faults()
    assert all(r.status_code == 200 for r in responses)
    assert sim.stats()["renders"].get("ms:render_image", 0) - before == 1


def test_two_nodes_share_redis_fills_locks_and_purges(sim: Sim, edges, redis_server):
    a = edges("--redis", redis_server.url)
    b = edges("--redis", redis_server.url)
    iid = sim.info["public_images"][5]
    path = f"/webgateway/render_thumbnail/{iid}/"
    assert a.get(path).headers["x-edge-cache"] == "MISS"
    hit = b.get(path)
    assert (hit.headers["x-edge-cache"], hit.headers["x-edge-tier"]) == ("HIT", "redis")
    assert b.get(path).headers["x-edge-tier"] == "memory"  # copied up
    # purge on node A reaches node B's own tiers
    r = httpx.post(a.url + "/_edge/purge", json={"image": [iid]}, headers={"authorization": "Bearer purge-secret"})
    assert r.status_code == 200 and r.json()["purged"] == [f"image:{iid}"]
    import time
    time.sleep(0.2)  # pub/sub to the other node
    assert a.get(path).headers["x-edge-cache"] == "MISS"
    assert b.get(path).headers["x-edge-cache"] == "HIT"  # refilled by A, shared through Redis
    # single-flight across nodes
    other = sim.info["public_images"][6]
    url_path = f"/webgateway/render_image/{other}/0/0/?c=1|0:100$0000FF&m=c"
    before = sim.stats()["renders"].get("ms:render_image", 0)
    sim.faults(latency_ms=300)
    try:
        responses = burst([a.url + url_path] * 30 + [b.url + url_path] * 30)
    finally:
        sim.faults()
    assert all(r.status_code == 200 for r in responses)
    assert sim.stats()["renders"].get("ms:render_image", 0) - before == 1


def test_purge_plate_reaches_grid_and_api_pages_and_cli(sim: Sim, edges):
    edge = edges()
    plate = sim.info["plates"][1]
    grid_path = f"/webgateway/plate/{plate['id']}/0/"
    grid = edge.get(grid_path).json()
    image_in_grid = next(c["id"] for row in grid["grid"] for c in row if c)
    assert edge.get(grid_path).headers["x-edge-cache"] == "HIT"
    # purging an image inside the grid invalidates the grid too (tags from the JSON)
    out = subprocess.run([script("edge"), "purge", "--image", str(image_in_grid), "--cache-dir", edge.cache_dir],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["purged"] == [f"image:{image_in_grid}"]
    assert edge.get(grid_path).headers["x-edge-cache"] == "MISS"
    assert edge.get(grid_path).headers["x-edge-cache"] == "HIT"
    out = subprocess.run([script("edge"), "purge", "--plate", str(plate["id"]), "--edge", edge.url,
                          "--token", "purge-secret"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert edge.get(grid_path).headers["x-edge-cache"] == "MISS"


def test_purge_endpoint_guards(sim: Sim, edges):
    edge = edges()
    url = edge.url + "/_edge/purge"
    assert httpx.post(url, json={"image": [1]}).status_code == 401
    assert httpx.post(url, json={"image": [1]}, headers={"authorization": "Bearer wrong"}).status_code == 401
    auth = {"authorization": "Bearer purge-secret"}
    assert httpx.post(url, json={"image": ["x"]}, headers=auth).status_code == 400
    assert httpx.post(url, content=b"not json", headers=auth).status_code == 400
    assert httpx.post(url, json={"galaxy": 1}, headers=auth).status_code == 400
    disabled = edges(env={"EDGE_PURGE_TOKEN": ""})
    assert httpx.post(disabled.url + "/_edge/purge", json={"all": True}).status_code == 404
    out = subprocess.run([script("edge"), "purge", "--cache-dir", edge.cache_dir], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "name what to purge" in out.stderr


def test_health_and_metrics(sim: Sim, edges, redis_server):
    edge = edges("--redis", redis_server.url)
    iid = sim.info["public_images"][0]
    edge.get(f"/webgateway/render_thumbnail/{iid}/")
    edge.get(f"/webgateway/render_thumbnail/{iid}/")
    health = edge.get("/_edge/health").json()
    assert health["status"] == "ok" and health["tiers"] == {"memory": True, "disk": True, "redis": True}
    text = edge.get("/_edge/metrics").text
    for name in ("edge_hits_total{tier=\"memory\"} 1.0", "edge_misses_total 1.0", "edge_upstream_requests_total",
                 "edge_upstream_seconds_bucket", "edge_bytes_served_total", "edge_tier_entries{tier=\"disk\"}"):
        assert name in text, name
