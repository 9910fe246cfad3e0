"""Soft purge (issue 15.3): an entry older than a soft purge is answered stale while one refresh runs,
for at most soft_purge_seconds, then is a miss; a hard purge is a miss at once. Through the purge
endpoint of an in-process edge over the simulator's apps, and the registry on its own."""
from __future__ import annotations

import httpx
import pytest

from edge.decision import Action, decide
from edge.entry import Entry
from edge.purge import PurgeRegistry
from tests.inprocess import InprocEdge, MakeEdge, SimApps
from tests.inprocess import anyio_backend, make_edge, sim_apps  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio
TOKEN = "purge-secret"


def entry(tags: tuple[str, ...], epoch: int) -> Entry:
    return Entry.build("k", 200, "image/jpeg", b"\xff\xd8\xff\xd9", ttl=100, stale=0, epoch=epoch, tags=tags,
                       public=True, now=1000.0)


async def test_a_soft_purge_marks_older_entries_only():
    now = [5000.0]
    registry = PurgeRegistry(None, clock=lambda: now[0])
    before = entry(("image:1",), registry.epoch())
    other = entry(("image:2",), registry.epoch())
    await registry.purge(["image:1"], soft=True)
    after = entry(("image:1",), registry.epoch())
    assert registry.valid(before.tags, before.epoch)  # nothing gone
    assert registry.soft_since(before) == 5000.0
    assert registry.soft_since(other) is None and registry.soft_since(after) is None
    now[0] = 6000.0
    await registry.purge(["*"], soft=True)
    assert registry.soft_since(other) == 6000.0 and registry.soft_since(before) == 6000.0


@pytest.mark.parametrize("now, warm, action", [
    (1010.0, False, Action.REVALIDATE),  # fresh by its TTL, stale by the soft purge
    (1299.0, False, Action.REVALIDATE),
    (1300.0, False, Action.MISS),  # the soft window is over
    (1010.0, True, Action.MISS),  # the warmer refreshes what a soft purge marked
])
def test_decide_on_a_soft_purged_entry(now: float, warm: bool, action: Action):
    found = entry(("image:1",), 0)
    assert decide(found, now, warm=warm, softened=1000.0, soft_window=300.0) is action


async def purge(edge: InprocEdge, body: dict) -> httpx.Response:
    return await edge.client.post("/_edge/purge", json=body, headers={"authorization": f"Bearer {TOKEN}"})


async def test_soft_purge_through_the_endpoint_then_hard(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(purge_token=TOKEN, soft_purge_seconds=60)
    image, other = sim_apps.public_images[5], sim_apps.public_images[6]
    path, other_path = f"/webgateway/render_thumbnail/{image}/", f"/webgateway/render_thumbnail/{other}/"
    first = await edge.get(path)
    await edge.get(other_path)
    renders = sim_apps.renders("render_thumbnail")
    answer = await purge(edge, {"image": [image], "soft": True})
    assert answer.status_code == 200 and answer.json()["soft"] is True
    stale = await edge.get(path)
    assert stale.headers["x-edge-cache"] == "STALE" and stale.content == first.content
    assert (await edge.get(other_path)).headers["x-edge-cache"] == "HIT"
    await edge.settle()
    assert sim_apps.renders("render_thumbnail") == renders + 1  # one refresh, in the background
    assert (await edge.get(path)).headers["x-edge-cache"] == "HIT"
    metrics = (await edge.client.get("/_edge/metrics")).text
    assert "edge_soft_refreshes_total 1.0" in metrics
    assert 'edge_purges_total{mode="soft",source="operator"} 1.0' in metrics

    # soft again, with the backend failing: stale within the window; after it a miss, which a failing
    # backend turns into the stale copy only as stale_if_error allows
    await purge(edge, {"image": [image], "soft": True})
    sim_apps.state.faults.down = True
    assert (await edge.get(path)).headers["x-edge-cache"] == "STALE"
    await edge.settle()
    edge.clock.advance(61)
    failing = sim_apps.requests("render_thumbnail")
    assert (await edge.get(path)).headers["x-edge-cache"] == "STALE"
    assert sim_apps.requests("render_thumbnail") == failing + 1  # tried the backend first: a miss
    sim_apps.state.faults.down = False
    assert (await edge.get(path)).headers["x-edge-cache"] == "MISS"

    await purge(edge, {"image": [image]})  # hard: a miss at once
    assert (await edge.get(path)).headers["x-edge-cache"] == "MISS"
    assert (await purge(edge, {"image": [image], "soft": "yes"})).status_code == 400
