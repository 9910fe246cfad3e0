"""What one cache entry costs in Redis (docs/deploy.md, "Sizing Redis"): an edge with an L2 tier is filled
against the simulator with one kind of entry per Redis database, then every key's `MEMORY USAGE` is read.
Prints the table the docs quote; asserts the bounds the docs' arithmetic relies on."""
from __future__ import annotations

import statistics

import httpx
import pytest
import redis as redis_client

from bench.scenarios.tiles import tile_paths
from edge.tiers import RedisTier
from tests.helpers import Launcher, RedisServer, Sim

pytestmark = pytest.mark.process
PLATE_IMAGES = 50


def kinds(sim: Sim) -> dict[str, list[str]]:
    """The URLs of each kind: default thumbnails and imgData of a plate's images, a pyramid's 512 px tiles."""
    images = sim.plate_images(0, PLATE_IMAGES)
    pyramid = httpx.get(f"{sim.url}/iviewer/image_data/{sim.info['pyramid_images'][0]}/", timeout=10).json()
    tiles = [path for frame in tile_paths(pyramid) for path in frame][:40]
    return {"thumbnail (96 px JPEG)": [f"/webgateway/render_thumbnail/{i}/" for i in images],
            "tile (512 px JPEG)": tiles,
            "imgData JSON": [f"/webgateway/imgData/{i}/" for i in images]}


def usage(url: str) -> tuple[list[int], list[int]]:
    """Every edge entry's MEMORY USAGE and value length in one Redis database."""
    client = redis_client.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=RedisTier.prefix + "*", count=1000))
        return [client.memory_usage(k, samples=0) for k in keys], [client.strlen(k) for k in keys]
    finally:
        client.close()


def test_bytes_per_entry_in_redis(sim: Sim) -> None:
    redis, launcher = RedisServer(), Launcher(sim)
    try:
        rows = []
        for db, (kind, paths) in enumerate(kinds(sim).items(), start=1):
            url = f"redis://127.0.0.1:{redis.port}/{db}"
            edge = launcher.edge("--redis", url)
            with edge.client() as client:
                bodies = [len(client.get(path).content) for path in paths]
            memory, values = usage(url)
            assert len(memory) == len(paths), (kind, len(memory))
            rows.append((kind, len(paths), statistics.mean(bodies), statistics.mean(values), statistics.mean(memory)))
            edge.proc.stop()
        print("\n| entry | n | body bytes | Redis value bytes | MEMORY USAGE bytes |\n|---|---|---|---|---|")
        for kind, n, body, value, memory in rows:
            print(f"| {kind} | {n} | {body:,.0f} | {value:,.0f} | {memory:,.0f} |")
        by_kind = {kind: (body, value, memory) for kind, _, body, value, memory in rows}
        for body, value, memory in by_kind.values():
            assert body < value < body + 2048 and value <= memory < value * 1.3 + 256  # headers, times, tags: small
        assert by_kind["thumbnail (96 px JPEG)"][2] < 16_000 and by_kind["tile (512 px JPEG)"][2] < 512 * 1024
    finally:
        launcher.stop_all()
        redis.stop()
