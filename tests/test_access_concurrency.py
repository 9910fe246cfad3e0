"""Access under concurrency: a request that joins someone else's fill never gets their answer unchecked.

Random interleavings of overlapping requests by several users (bob owns private data in lab-b;
alice is in lab-a; the public user; anonymous) for shared keys (plate grid, well children,
histogram, a fully specified tile), with backend latency so requests overlap in flight, through
one worker, two workers and two edges sharing Redis. Every answer must equal the backend's own
answer for that requester.
"""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest

from edge.routes import Upstream, match
from tests.helpers import Launcher, Sim, start_sim

REQUESTERS = ("bob", "alice", "public", None)
LATENCY_MS = 120
TRIALS = 6


@pytest.fixture(scope="module")
def slow_sim(redis_server):
    """A simulator of our own: its latency fault must not slow the other tests' shared one."""
    sim = start_sim(redis_url=redis_server.url)
    yield sim
    sim.proc.stop()


@pytest.fixture(scope="module")
def cookies(slow_sim: Sim) -> dict[str | None, str | None]:
    anonymous = httpx.get(f"{slow_sim.url}/webgateway/render_thumbnail/{slow_sim.info['public_images'][0]}/")
    out: dict[str | None, str | None] = {None: None, "public": anonymous.cookies[slow_sim.info["session_cookie"]]}
    for user in ("alice", "bob"):
        with closing(slow_sim.login(user)) as client:
            out[user] = client.cookies[slow_sim.info["session_cookie"]]
    return out


def _shared_urls(sim: Sim, client: httpx.Client, bob: str) -> list[str]:
    """Keys one entry serves every audience: bob's private plate grid, its well, histogram, a full tile."""
    lab_b = sim.info["private"]["lab-b"]
    plate = lab_b["plates"][0]
    grid = client.get(f"{sim.url}/webgateway/plate/{plate}/", cookies={sim.info["session_cookie"]: bob}).json()
    cell = next(c for row in grid["grid"] for c in row if c)
    iid = lab_b["images"][0]
    return [f"/webgateway/plate/{plate}/", f"/webgateway/well/{cell['wellId']}/children/",
            f"/webgateway/histogram_json/{iid}/channel/0/",
            f"/webgateway/render_image_region/{iid}/0/0/?region=0,0,32,32&c=1|0:255$FF0000&m=c"]


def _get(base: str, sim: Sim, cookie: str | None, path: str) -> tuple[int, bytes]:
    cookies = {sim.info["session_cookie"]: cookie} if cookie else None
    r = httpx.get(base + path, cookies=cookies, timeout=30)
    return r.status_code, r.content


def _direct(sim: Sim, cookie: str | None, cookies: dict, path: str) -> tuple[int, bytes]:
    # Alone, an anonymous browser reaches the microservice with the public session OMERO.web gave it.
    if match(path.partition("?")[0])[0].upstream is Upstream.MS:
        return _get(sim.ms_url, sim, cookie or cookies["public"], path)
    return _get(sim.url, sim, cookie, path)


@pytest.mark.parametrize("shape", ["one-worker", "two-workers", "two-nodes"])
def test_overlapping_requests_answer_like_the_backend(slow_sim: Sim, cookies, redis_server, shape):
    factory = Launcher(slow_sim)
    common = ("--access", "verified", "--session-redis", redis_server.url)
    try:
        if shape == "two-nodes":
            db = f"redis://127.0.0.1:{redis_server.port}/7"
            edges = [factory(*common, "--redis", db), factory(*common, "--redis", db)]
        else:
            edges = [factory(*common, *(("--workers", "2") if shape == "two-workers" else ()))]
        with httpx.Client(timeout=30) as client:
            urls = _shared_urls(slow_sim, client, cookies["bob"])
        statuses = {_direct(slow_sim, cookies[who], cookies, urls[0])[0] for who in REQUESTERS}
        assert len(statuses) > 1, "the grid must be private to bob"
        rng = random.Random(f"{shape}-13")
        slow_sim.faults(latency_ms=LATENCY_MS)
        compared = 0
        try:
            for trial in range(TRIALS):
                url = urls[trial % len(urls)] + ("&" if "?" in urls[trial % len(urls)] else "?") + f"trial={trial}{shape}"
                order = rng.sample(REQUESTERS, len(REQUESTERS))
                delays = sorted(rng.uniform(0, LATENCY_MS * 1.5) / 1000 for _ in order)
                with ThreadPoolExecutor(len(order)) as pool:
                    start = time.monotonic()
                    futures = []
                    for who, delay in zip(order, delays):
                        time.sleep(max(0.0, start + delay - time.monotonic()))
                        edge = edges[len(futures) % len(edges)]
                        futures.append((who, pool.submit(_get, edge.url, slow_sim, cookies[who], url)))
                    for who, future in futures:
                        want = _direct(slow_sim, cookies[who], cookies, url)
                        got = future.result()
                        assert got[0] == want[0], (shape, trial, who, url)
                        assert got == want, (shape, trial, who, url)
                        compared += 1
        finally:
            slow_sim.faults()
        assert compared == TRIALS * len(REQUESTERS)
    finally:
        factory.stop_all()
