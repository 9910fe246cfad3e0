"""Reliability: purging an image while it is being requested never leaves an old copy served.

The bytes really change first, then the image is purged through `POST /_edge/purge` while several
clients keep requesting its thumbnail and a get_thumbnails batch holding it. Any request *started*
after the purge returned must get the new bytes. The backend is slowed down a little so fills are in
flight across the save and the purge. One and two workers.

The simulated OMERO gives a user without saved settings the image's defaults, never the owner's
saved ones, so a curator's saveImgRDef does not change what the public sees. The test therefore
runs in `verified` mode as alice, on her own image: her saveImgRDef changes her thumbnail, which the
edge caches in her audience, and the purge must reach it the same way it reaches public entries.
"""
from __future__ import annotations

import base64
import threading
import time
from contextlib import closing

import httpx
import pytest

from tests.helpers import Sim

COLOURS = ["FF0000", "00FF00", "0000FF", "FFFF00", "00FFFF"]


class Loader(threading.Thread):
    def __init__(self, base: str, paths: list[str], seconds: float, cookies: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.base, self.paths, self.seconds, self.cookies = base, paths, seconds, cookies
        self.stop = threading.Event()
        self.records: list[tuple[float, str, int, bytes]] = []  # started, path, status, body
        self.hits = 0

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.base, timeout=10, cookies=self.cookies) as client:
            n = 0
            while not self.stop.is_set() and time.monotonic() < deadline and n < 20000:
                path = self.paths[n % len(self.paths)]
                started = time.monotonic()
                r = client.get(path)
                self.records.append((started, path, r.status_code, r.content))
                self.hits += r.headers.get("x-edge-cache") == "HIT"
                n += 1


def thumbnail_bytes(path: str, body: bytes, iid: int) -> bytes:
    if "get_thumbnails" in path:
        return base64.b64decode(httpx.Response(200, content=body).json()[str(iid)].split(",", 1)[1])
    return body


@pytest.mark.parametrize("workers", ["1", "2"])
def test_purge_under_load_never_serves_an_old_copy(sim: Sim, edges, redis_server, workers):
    edge = edges("--workers", workers, "--access", "verified", "--session-redis", redis_server.url)
    iid, other = sim.info["private"]["lab-a"]["images"][2 + int(workers)], sim.info["private"]["lab-a"]["images"][1]
    paths = [f"/webgateway/render_thumbnail/{iid}/", f"/webgateway/get_thumbnails/?id={iid}&id={other}",
             f"/webgateway/render_thumbnail/{iid}/96/?_=1"]
    saves: list[float] = []  # when each save started
    purges: list[float] = []  # when each purge returned
    with closing(sim.login("alice")) as alice:
        cookies = {sim.info["session_cookie"]: alice.cookies[sim.info["session_cookie"]]}
        versions: list[bytes] = [alice.get(paths[0]).content]
        # batch-only connections too: a worker that answers nothing else must still see the other's purges
        loaders = [Loader(edge.url, group, 30.0, cookies) for group in
                   ([paths[1]], [paths[1]], [paths[0], paths[2]], paths, paths[::-1])]
        sim.faults(latency_ms=40)  # fills take a while: some are in flight across the save and the purge
        try:
            for loader in loaders:
                loader.start()
            time.sleep(0.5)
            for n, colour in enumerate(COLOURS[:4]):
                saves.append(time.monotonic())
                window = 900 + 300 * n + 100 * int(workers)
                r = alice.post(f"/webgateway/saveImgRDef/{iid}/?c=1|0:{window}${colour},2|0:{window}$FF00FF&m=c",
                               headers={"X-CSRFToken": alice.cookies["csrftoken"]})
                assert r.status_code == 200 and r.json() is True, r.text
                new = alice.get(paths[0]).content
                assert new not in versions
                versions.append(new)
                r = httpx.post(edge.url + "/_edge/purge", json={"image": [iid]},
                               headers={"authorization": "Bearer purge-secret"}, timeout=10)
                assert r.status_code == 200
                purges.append(time.monotonic())
                time.sleep(0.7)
        finally:
            sim.faults()
            for loader in loaders:
                loader.stop.set()
            for loader in loaders:
                loader.join(15)
    records = [rec for loader in loaders for rec in loader.records]
    assert all(status == 200 for _, _, status, _ in records)
    checked = stale = 0
    for started, path, _, body in records:
        got = versions.index(thumbnail_bytes(path, body, iid))
        done = [k for k, t in enumerate(purges) if t < started]
        if not done:
            continue
        k = done[-1] + 1  # versions[k] is current after purge k returned
        allowed = {k} | ({k + 1} if k < len(saves) and started > saves[k] else set())
        checked += 1
        stale += got not in allowed
        assert got in allowed, (path, started - purges[k - 1], got, allowed)
    hits = sum(loader.hits for loader in loaders)
    print(f"\npurge under load ({workers} worker(s)): {len(records)} requests ({hits} hits), {len(purges)} purges, "
          f"{checked} started after a purge, {stale} old copies served")
    assert checked > 50 and hits > len(records) // 2
