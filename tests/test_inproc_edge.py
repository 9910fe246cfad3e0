"""The edge's caching behaviour in-process: the edge app over the sim's ASGI apps, time moved by a fake
clock (tests/inprocess.py). The same rules as test_edge_cache.py, without processes or sleeps."""
from __future__ import annotations

import base64

import httpx
import pytest

from edge.protocol import WARM_HEADER, WARM_REFRESH_HEADER, WarmAnswer
from edge.tiers import DiskTier
from tests.inprocess import WARM_TOKEN, InprocEdge, MakeEdge, SimApps
from tests.inprocess import anyio_backend, client, edge_app, make_edge, sim_apps  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio

WARM = {WARM_HEADER: WARM_TOKEN}


def thumb(image_id: int) -> str:
    return f"/webgateway/render_thumbnail/{image_id}/"


def batch(ids: list[int]) -> str:
    return "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids)


def cache(r: httpx.Response) -> str:
    return r.headers["x-edge-cache"]


async def statuses(edge: InprocEdge, path: str, n: int, **kwargs) -> list[str]:
    return [cache(await edge.get(path, **kwargs)) for _ in range(n)]


async def test_miss_then_hit_with_the_backends_bytes(edge_app: InprocEdge, sim_apps: SimApps):
    path = thumb(sim_apps.public_images[0])
    direct = await sim_apps.get(path)
    first, second = await edge_app.get(path), await edge_app.get(path)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == direct.content
    assert (cache(first), cache(second)) == ("MISS", "HIT")
    assert second.headers["x-edge-tier"] == "memory"
    assert second.headers["cache-control"] == "public, max-age=86400"
    assert "set-cookie" not in first.headers
    assert sim_apps.renders("render_thumbnail") == 2  # the direct request and the one fill


async def test_etag_304(client: httpx.AsyncClient, sim_apps: SimApps):
    path = thumb(sim_apps.public_images[1])
    etag = (await client.get(path)).headers["etag"]
    again = await client.get(path, headers={"if-none-match": f'"other", W/{etag}'})
    assert again.status_code == 304 and again.content == b"" and "content-length" not in again.headers
    assert (await client.get(path, headers={"if-none-match": '"other"'})).status_code == 200


@pytest.mark.parametrize("cached", [False, True], ids=["miss", "hit"])
async def test_head_sends_headers_only(edge_app: InprocEdge, sim_apps: SimApps, cached: bool):
    path = thumb(sim_apps.public_images[1])
    full = await edge_app.get(path) if cached else await sim_apps.get(path)
    start, *bodies = await edge_app.messages("HEAD", path)
    headers = dict(start["headers"])
    assert start["status"] == 200 and headers[b"x-edge-cache"] == (b"HIT" if cached else b"MISS")
    assert headers[b"content-length"] == str(len(full.content)).encode()
    assert [m["body"] for m in bodies] == [b""]


async def test_json_is_gzipped_for_clients_that_accept_it(edge_app: InprocEdge, sim_apps: SimApps):
    path = f"/webgateway/imgData/{sim_apps.public_images[0]}/"
    direct = (await sim_apps.get(path)).json()
    zipped = await edge_app.get(path, headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.json() == direct
    assert zipped.headers["vary"] == "Accept-Encoding"
    plain = await edge_app.get(path, headers={"accept-encoding": "identity"})
    assert cache(plain) == "HIT" and "content-encoding" not in plain.headers and plain.json() == direct


async def test_ttl_then_stale_while_revalidate_then_miss(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(ttl_thumbnail=10, stale_while_revalidate=60)
    path = thumb(sim_apps.public_images[2])
    assert cache(await edge.get(path)) == "MISS"
    edge.clock.advance(9)
    hit = await edge.get(path)
    assert cache(hit) == "HIT" and hit.headers["cache-control"] == "public, max-age=1"
    edge.clock.advance(2)  # 1 s past freshness: answered stale, refreshed once in the background
    assert await statuses(edge, path, 2) == ["STALE", "STALE"]
    await edge.settle()
    assert sim_apps.renders("render_thumbnail") == 2
    fresh = await edge.get(path)
    assert cache(fresh) == "HIT" and fresh.headers["cache-control"] == "public, max-age=10"
    edge.clock.advance(10 + 61)  # past stale_while_revalidate: a plain miss
    assert cache(await edge.get(path)) == "MISS"
    assert sim_apps.renders("render_thumbnail") == 3


FAILURES = [("down", 503), ("unreachable", 502)]  # the backend's own 503, or no connection at all


def fail(sim_apps: SimApps, failure: str) -> None:
    if failure == "down":
        sim_apps.state.faults.down = True
    else:
        sim_apps.unreachable()


async def expired_edge(make_edge: MakeEdge) -> InprocEdge:
    """An edge whose thumbnails are fresh for 10 s, then may only cover failures (for 600 s)."""
    return await make_edge(ttl_thumbnail=10, stale_while_revalidate=0, stale_if_error=600, retries=0,
                           breaker_failures=100)


@pytest.mark.parametrize("failure, status", FAILURES)
async def test_stale_if_error(make_edge: MakeEdge, sim_apps: SimApps, failure: str, status: int):
    """A failing backend is covered by a stale copy while stale_if_error allows; a URL never cached
    gets the failure."""
    edge = await expired_edge(make_edge)
    cached, cold = thumb(sim_apps.public_images[3]), thumb(sim_apps.public_images[4])
    first = await edge.get(cached)
    edge.clock.advance(11)
    fail(sim_apps, failure)
    stale = await edge.get(cached)
    assert stale.status_code == 200 and cache(stale) == "STALE" and stale.content == first.content
    assert (await edge.get(cold)).status_code == status
    edge.clock.advance(600)
    assert (await edge.get(cached)).status_code == status


async def test_batch_after_singles_is_a_hit(edge_app: InprocEdge, sim_apps: SimApps):
    ids = sim_apps.public_images[:3]
    singles = {i: (await edge_app.get(thumb(i))).content for i in ids}
    r = await edge_app.get(batch(ids))
    assert r.status_code == 200 and cache(r) == "HIT"
    assert sim_apps.requests("get_thumbnails") == 0
    assert {int(i): base64.b64decode(uri.partition(",")[2]) for i, uri in r.json().items()} == singles


async def test_batch_refetches_only_a_purged_member(edge_app: InprocEdge, sim_apps: SimApps):
    ids = sim_apps.public_images[:3]
    assert cache(await edge_app.get(batch(ids))) == "MISS"
    assert sim_apps.renders("get_thumbnails") == 3
    await edge_app.purge(f"image:{ids[1]}")
    refetched = await edge_app.get(batch(ids))
    assert cache(refetched) == "MISS" and set(refetched.json()) == {str(i) for i in ids}
    assert sim_apps.renders("get_thumbnails") == 4  # the purged member alone
    assert cache(await edge_app.get(thumb(ids[1]))) == "HIT"  # stored again as its single thumbnail


async def test_batch_members_stale_while_revalidate(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge(ttl_thumbnail=10, stale_while_revalidate=60)
    ids = sim_apps.public_images[:2]
    await edge.get(batch(ids))
    edge.clock.advance(11)
    assert cache(await edge.get(batch(ids))) == "STALE"
    await edge.settle()
    assert sim_apps.renders("get_thumbnails") == 4  # both members refreshed in one background batch
    assert cache(await edge.get(batch(ids))) == "HIT"


@pytest.mark.parametrize("failure", [
    "down",
    "unreachable",
])
async def test_batch_stale_if_error(make_edge: MakeEdge, sim_apps: SimApps, failure: str):
    edge = await expired_edge(make_edge)
    ids = sim_apps.public_images[:2]
    first = await edge.get(batch(ids))
    edge.clock.advance(11)
    fail(sim_apps, failure)
    stale = await edge.get(batch(ids))
    assert (stale.status_code, cache(stale)) == (200, "STALE") and stale.json() == first.json()


async def test_warm_mode_answers_the_cache_status(edge_app: InprocEdge, sim_apps: SimApps):
    path = thumb(sim_apps.public_images[5])
    first = WarmAnswer.decode((await edge_app.get(path, headers=WARM)).content)
    assert (first.cache, first.status, first.stored, first.tier) == ("MISS", 200, True, "")
    second = WarmAnswer.decode((await edge_app.get(path, headers=WARM)).content)
    assert (second.cache, second.tier, second.bytes) == ("HIT", "memory", first.bytes)
    assert second.stored_at == edge_app.clock()
    edge_app.clock.advance(1)
    again = {**WARM, WARM_REFRESH_HEADER: str(edge_app.clock())}  # stored before: fetched again
    assert WarmAnswer.decode((await edge_app.get(path, headers=again)).content).cache == "MISS"
    ids = sim_apps.public_images[5:7]
    answer = WarmAnswer.decode((await edge_app.get(batch(ids), headers=WARM)).content)
    assert (answer.cache, answer.ids, answer.missing) == ("MISS", 2, 1)
    wrong = await edge_app.get(path, headers={WARM_HEADER: "not-the-token"})
    assert wrong.headers["content-type"] == "image/jpeg"
    with pytest.raises(ValueError):
        WarmAnswer.decode(wrong.content)


@pytest.mark.parametrize("method, path, endpoint, reason", [
    ("POST", "/api/v0/login/", "api:login", "method"),
    ("GET", "/api/v0/token/", "api:token", "uncacheable"),
    ("GET", "/webgateway/render_thumbnail/{image}/?bsession=someone", "render_thumbnail", "credentials"),
])
async def test_bypass_goes_to_the_backend_every_time(edge_app: InprocEdge, sim_apps: SimApps, method: str,
                                                     path: str, endpoint: str, reason: str):
    url = path.format(image=sim_apps.public_images[0])
    for _ in range(2):
        r = await edge_app.client.request(method, url, data={"username": "x"} if method == "POST" else None)
        assert cache(r) == "BYPASS"
    assert sim_apps.requests(endpoint) == 2
    assert edge_app.app.metrics.registry.get_sample_value("edge_bypass_total", {"reason": reason}) == 2


async def test_the_backend_gets_the_target_as_received(edge_app: InprocEdge, sim_apps: SimApps):
    """Passed through byte for byte: `..` is the backend's to resolve (it does not: a 404), never the edge's."""
    image = sim_apps.public_images[0]
    start, *_ = await edge_app.messages("GET", f"/webgateway/render_thumbnail/0/../{image}/?_=%2F")
    assert (start["status"], dict(start["headers"])[b"x-edge-cache"]) == (404, b"BYPASS")
    assert sim_apps.requests("render_thumbnail") == 0


async def test_a_stored_404_never_answers_the_webclients_placeholder_form(edge_app: InprocEdge, sim_apps: SimApps):
    """The webgateway's 404 and the webclient's placeholder share a key: the 404 is the webgateway's only,
    hot path included (a gone image's webclient thumbnail stays OMERO.web's placeholder)."""
    missing = 1_999_999_999
    gw, wc = thumb(missing), f"/webclient/render_thumbnail/{missing}/"
    for _ in range(3):
        assert (await edge_app.get(gw)).status_code == 404
    for _ in range(3):
        placeholder = await edge_app.get(wc)
        assert placeholder.status_code == 200 and placeholder.content == (await sim_apps.get(wc)).content


async def test_misses_answered_before_their_disk_write_are_on_disk_after_shutdown(make_edge: MakeEdge,
                                                                                   sim_apps: SimApps, tmp_path):
    """One worker, no Redis: no process shares the fill, so a miss is answered before its disk write (app.fill);
    shutdown waits for those writes, so nothing a client was answered with is missing from the disk after."""
    edge = await make_edge()
    assert edge.app.flights.shared is None
    paths = [thumb(i) for i in sim_apps.public_images[:12]] + [f"/webgateway/imgData/{sim_apps.public_images[0]}/"]
    for path in paths:
        assert cache(await edge.get(path)) == "MISS"
    stored = dict(edge.app.cache.memory._items)
    assert len(stored) == len(paths)
    await edge.close()
    disk = DiskTier(str(tmp_path / "cache0"), size_limit=2**26)
    try:
        for digest, entry in stored.items():
            on_disk = disk.get(digest, entry.key)
            assert on_disk is not None and on_disk.body == entry.body, entry.key
    finally:
        disk.close()
