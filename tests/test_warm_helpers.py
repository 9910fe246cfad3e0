"""Shared pieces of the warm tests (no tests here): edges in front of the session's simulated OMERO
(conftest's `sim`), the `warm` CLI as a subprocess, and reading a run's journal. Everything is a real
process on loopback, stopped by PID."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass

import httpx

from tests.conftest import Sim
from tests.procs import Proc, RedisServer, free_port, script

TOKEN = "warm-test-token"


def public(sim: Sim, kind: str) -> list[dict]:
    """Objects of the simulator's catalog (`/_sim/info`) the public user sees."""
    return [o for o in sim.info[kind] if o.get("public")]


@dataclass
class Edge:
    proc: Proc
    url: str
    port: int

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)


def start_edge(sim: Sim, redis: RedisServer, db: int) -> Edge:
    """An edge with a fresh disk tier and its own Redis database (so tests do not share entries), with no
    image-region microservice: the warmer warms the public audience, which the microservice refuses."""
    port = free_port()
    argv = [script("edge"), "serve", "--bind", f"127.0.0.1:{port}", "--backend", sim.url,
            "--cache-dir", tempfile.mkdtemp(prefix="warm-edge-"), "--redis", f"redis://127.0.0.1:{redis.port}/{db}"]
    proc = Proc(argv, env={"EDGE_WARM_TOKEN": TOKEN}, name="edge")
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/_edge/health")
    return Edge(proc, url, port)


def warm(*args: str, timeout: float = 90, env: dict | None = None) -> subprocess.CompletedProcess:
    """The public interface: the `warm` console script as a subprocess."""
    return subprocess.run([script("warm"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "EDGE_WARM_TOKEN": TOKEN, **(env or {})})


def journal_rows(path: str, run: str | None = None) -> dict[str, tuple]:
    """url → (state, kind, object, status, at) of a run (the newest when `run` is None)."""
    db = sqlite3.connect(path)
    try:
        run = run or db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
        return {url: rest for url, *rest in db.execute(
            "SELECT url, state, kind, object, status, at FROM items WHERE run=?", (run,))}
    finally:
        db.close()


def run_id(path: str) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
    finally:
        db.close()


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


def batch_hits(edge: Edge, ids: list[int]) -> list[str]:
    """X-Edge-Cache of plain (client) get_thumbnails batches of 50 covering `ids`."""
    out = []
    for i in range(0, len(ids), 50):
        query = "&".join(f"id={x}" for x in ids[i:i + 50])
        out.append(edge.get(f"/webgateway/get_thumbnails/?{query}&_=1700000000000").headers["x-edge-cache"])
    return out
