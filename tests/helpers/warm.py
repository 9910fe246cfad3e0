"""Shared pieces of the warm tests: edges for the warmer, the `warm` CLI as a subprocess, and a run's journal."""
from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import closing

import httpx
import redis as redis_client

from tests.helpers.launch import EdgeProc, Launcher, Sim
from tests.helpers.procs import RedisServer, script

TOKEN = "warm-test-token"


def public(sim: Sim, kind: str) -> list[dict]:
    """Objects of the simulator's catalog (`/_sim/info`) the public user sees."""
    return [o for o in sim.info[kind] if o.get("public")]


def start_edge(sim: Sim, redis: RedisServer, db: int) -> EdgeProc:
    """An edge with a fresh disk tier and its own Redis database (so tests do not share entries), with no
    image-region microservice: the warmer warms the public audience, which the microservice refuses."""
    url = f"redis://127.0.0.1:{redis.port}/{db}"
    with closing(redis_client.Redis.from_url(url)) as client:
        client.flushdb()  # other test files on this worker's Redis may have used the database
    return Launcher(sim).edge("--redis", url, ms=False, env={"EDGE_WARM_TOKEN": TOKEN})


def warm(*args: str, timeout: float = 90, env: dict | None = None) -> subprocess.CompletedProcess:
    """The public interface: the `warm` console script as a subprocess."""
    return subprocess.run([script("warm"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "EDGE_WARM_TOKEN": TOKEN, **(env or {})})


def run_id(path: str) -> str:
    """The newest run of a journal."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]


def journal_rows(path: str, run: str | None = None) -> dict[str, tuple]:
    """url → (state, kind, object, status, at) of a run (the newest when `run` is None)."""
    run = run or run_id(path)
    with closing(sqlite3.connect(path)) as db:
        return {url: tuple(rest) for url, *rest in db.execute(
            "SELECT url, state, kind, object, status, at FROM items WHERE run=?", (run,))}


def public_image_ids(sim: Sim) -> list[int]:
    """Every image the public user sees, read from the backend directly (grids, dataset and orphan listings)."""
    ids: list[int] = []
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        for plate in public(sim, "plates"):
            for f in range(plate["fields"]):
                grid = c.get(f"/webgateway/plate/{plate['id']}/{f}/").json()["grid"]
                ids += [cell["id"] for row in grid for cell in row if cell]
        for ds in public(sim, "datasets"):
            ids += [i["@id"] for i in c.get(f"/api/v0/m/datasets/{ds['id']}/images/?limit=500").json()["data"]]
        ids += [i["@id"] for i in c.get("/api/v0/m/images/?orphaned=true&limit=500").json()["data"]]
    return ids


def batch_hits(edge: EdgeProc, ids: list[int]) -> list[str]:
    """X-Edge-Cache of plain (client) get_thumbnails batches of 50 covering `ids`."""
    out = []
    for i in range(0, len(ids), 50):
        query = "&".join(f"id={x}" for x in ids[i:i + 50])
        out.append(edge.get(f"/webgateway/get_thumbnails/?{query}&_=1700000000000").headers["x-edge-cache"])
    return out
