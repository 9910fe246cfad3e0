"""A cold get_thumbnails batch is answered before it is split into entries (edge/thumbnails.py):
the answer's bytes are what they always were, the entries are stored after it, lookups meanwhile
wait for them, a purge meanwhile wins, and the background splits are bounded; a warm batch's
answer is kept while its members stay the same entries. In-process (tests/inprocess.py); the
split is held on a gate in front of its loading-picture check."""
from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote_to_bytes

import httpx
import pytest

import edge.thumbnails
from edge.keys import parse_query
from edge.thumbnails import _literal
from tests.inprocess import InprocEdge, SimApps
from tests.inprocess import anyio_backend, edge_app, make_edge, sim_apps  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio


def batch(ids: list[int], callback: str | None = None) -> str:
    query = "&".join(f"id={i}" for i in ids) + (f"&callback={callback}" if callback else "") + "&_=1718000000001"
    return "/webgateway/get_thumbnails/?" + query


def thumb(image_id: int) -> str:
    return f"/webgateway/render_thumbnail/{image_id}/"


def cache(r: httpx.Response) -> str:
    return r.headers["x-edge-cache"]


async def as_assembled(sim_apps: SimApps, ids: list[int]) -> bytes:
    """The bytes the edge has always answered for a cold batch: the backend's values in the
    request's order, each `json.dumps`ed, in Django's separators."""
    direct = (await sim_apps.get(batch(ids))).json()
    return ("{" + ", ".join(f'"{i}": {json.dumps(direct[str(i)])}' for i in ids) + "}").encode()


def gate_splits(edge: InprocEdge) -> asyncio.Event:
    """Hold every batch split (before its loading-picture check) until the returned event is set."""
    gate, final = asyncio.Event(), edge.app.thumbnails.final

    async def gated(req, items):
        await gate.wait()
        return await final(req, items)
    edge.app.thumbnails.final = gated
    return gate


@pytest.mark.parametrize("callback", [None, "jQuery3710123_1718000000000"])
async def test_cold_answer_is_byte_identical_and_its_entries_land(edge_app: InprocEdge, sim_apps: SimApps,
                                                                  callback: str | None):
    ids = sim_apps.public_images[:8][::-1]  # not the backend's own (set) order
    expected = await as_assembled(sim_apps, ids)
    if callback:
        expected = b"%s(%s)" % (callback.encode(), expected)
    gate, before = gate_splits(edge_app), sim_apps.renders("get_thumbnails")
    cold = await edge_app.get(batch(ids, callback))  # answered while its split is held
    assert cache(cold) == "MISS" and cold.content == expected
    lookup = asyncio.ensure_future(edge_app.get(thumb(ids[3])))  # waits for the split, then hits
    await asyncio.sleep(0.05)
    assert not lookup.done()
    gate.set()
    single = await lookup
    assert cache(single) == "HIT"
    warm = await edge_app.get(batch(ids, callback))
    assert cache(warm) == "HIT" and warm.content == expected
    assert sim_apps.renders("get_thumbnails") - before == len(ids) and sim_apps.requests("render_thumbnail") == 0


async def test_purge_during_the_split_wins(edge_app: InprocEdge, sim_apps: SimApps):
    ids = sim_apps.public_images[:4]
    gate = gate_splits(edge_app)
    assert cache(await edge_app.get(batch(ids))) == "MISS"
    await edge_app.purge(f"image:{ids[0]}")  # while the batch's entries are being split and stored
    gate.set()
    await edge_app.settle()
    assert cache(await edge_app.get(thumb(ids[1]))) == "HIT"
    assert cache(await edge_app.get(thumb(ids[0]))) == "MISS"
    assert sim_apps.requests("render_thumbnail") == 1  # the purged one alone went upstream again


async def test_a_join_fetched_before_a_purge_is_fetched_again(edge_app: InprocEdge, sim_apps: SimApps):
    """A request joining another's batch fetch gets its entries — unless a purge came meanwhile."""
    ids = sim_apps.public_images[4:7]
    sim_apps.state.faults.latency_ms = 200  # the first fetch is in flight while the second request joins it
    first = asyncio.ensure_future(edge_app.get(batch(ids)))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(edge_app.get(batch(ids[:2])))
    await asyncio.sleep(0.05)
    await edge_app.purge(f"image:{ids[1]}")
    sim_apps.state.faults.latency_ms = 0
    a, b = await first, await second
    assert sim_apps.renders("get_thumbnails") == len(ids) + 1  # the purged member, fetched again for `second`
    assert a.json() == (await sim_apps.get(batch(ids))).json()
    assert b.json() == (await sim_apps.get(batch(ids[:2]))).json()


async def test_background_splits_are_bounded(edge_app: InprocEdge, sim_apps: SimApps,
                                             monkeypatch: pytest.MonkeyPatch):
    """Past the limit a batch is split before its answer: never dropped, never unbounded."""
    monkeypatch.setattr(edge.thumbnails, "_SPLITS", 1)
    gate = gate_splits(edge_app)
    first = await edge_app.get(batch(sim_apps.public_images[:2]))  # its split waits in the background
    second = asyncio.ensure_future(edge_app.get(batch(sim_apps.public_images[2:4])))
    await asyncio.sleep(0.05)
    assert first.status_code == 200 and not second.done()
    gate.set()
    assert (await second).status_code == 200
    await edge_app.settle()
    for image_id in sim_apps.public_images[:4]:
        assert cache(await edge_app.get(thumb(image_id))) == "HIT"


async def test_a_kept_hit_answer_gives_way_to_a_purge(edge_app: InprocEdge, sim_apps: SimApps):
    ids = sim_apps.public_images[:5]
    callback = "jQuery3710123_1718000000000"
    expected = b"%s(%s)" % (callback.encode(), await as_assembled(sim_apps, ids))
    await edge_app.get(batch(ids))
    await edge_app.settle()
    hits = [await edge_app.get(batch(ids, callback)) for _ in range(2)]  # the second is the kept answer
    assert [cache(r) for r in hits] == ["HIT", "HIT"] and hits[0].content == hits[1].content == expected
    assert hits[0].headers["etag"] == hits[1].headers["etag"]
    renders = sim_apps.renders("get_thumbnails")
    await edge_app.purge(f"image:{ids[2]}")
    again = await edge_app.get(batch(ids, callback))
    assert cache(again) == "MISS" and again.content == expected
    assert sim_apps.renders("get_thumbnails") == renders + 1  # the purged member alone
    await edge_app.settle()
    assert (await edge_app.get(batch(ids, callback))).content == expected


@pytest.mark.parametrize("raw", [b"id=1&id=2&callback=jQuery_1&_=17", b"a=&=b&&k=v=w&x", b"z=%C3%A9&a+b=c", b"e=\xc3\xa9"])
def test_query_fast_path_parses_as_unquoting_does(raw: bytes):
    slow = [(unquote_to_bytes(n.replace(b"+", b" ")).decode(), unquote_to_bytes(v.replace(b"+", b" ")).decode())
            for n, _, v in (p.partition(b"=") for p in raw.split(b"&") if p)]
    assert parse_query(raw) == slow


@pytest.mark.parametrize("value", ["data:image/jpeg;base64,/9j/4AAQ+==", 'a"b\\c', "tab\there", "del\x7f",
                                   "nul\x00", "é", "\u2028", None, 3, 1.5, True, ["x"], {"k": None}])
def test_literal_is_json_dumps(value):
    assert _literal(value) == json.dumps(value)
